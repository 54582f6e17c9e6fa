//! Where a node is drawn: a root where the client asks, a child 15 units from its parent, in the
//! client's gaze direction when it sends one.

use rand::Rng;

/// Distance between a child and its parent.
pub const CHILD_DISTANCE: f64 = 15.0;
/// Largest angle between the gaze direction and the direction a child is placed in.
pub const MAX_GAZE_ANGLE_DEG: f64 = 85.0;
/// Exponent on the uniform draw of the angle: below 1, angles near the rim are more likely.
pub const RIM_BIAS_EXPONENT: f64 = 0.6;

/// Largest distance from the origin, on each axis, at which a client may place a root. Beyond
/// about 1.8e306 rounding to two decimals overflows to infinity, and well before that `f64` no
/// longer holds two decimals; nobody navigates there.
pub const MAX_COORDINATE: f64 = 1e12;

/// A point or a vector in galaxy space.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Vec3 {
    /// X.
    pub x: f64,
    /// Y.
    pub y: f64,
    /// Z.
    pub z: f64,
}

impl Vec3 {
    /// A vector from its components.
    pub const fn new(x: f64, y: f64, z: f64) -> Self {
        Self { x, y, z }
    }

    /// The origin.
    pub const ORIGIN: Self = Self::new(0.0, 0.0, 0.0);

    fn dot(self, o: Self) -> f64 {
        self.x * o.x + self.y * o.y + self.z * o.z
    }

    fn cross(self, o: Self) -> Self {
        Self::new(
            self.y * o.z - self.z * o.y,
            self.z * o.x - self.x * o.z,
            self.x * o.y - self.y * o.x,
        )
    }

    fn scale(self, k: f64) -> Self {
        Self::new(self.x * k, self.y * k, self.z * k)
    }

    fn add(self, o: Self) -> Self {
        Self::new(self.x + o.x, self.y + o.y, self.z + o.z)
    }

    /// Euclidean length.
    pub fn length(self) -> f64 {
        self.dot(self).sqrt()
    }

    /// The unit vector in this direction, or `None` for a zero or non-finite vector.
    pub fn normalized(self) -> Option<Self> {
        let len = self.length();
        (len.is_finite() && len > 1e-9).then(|| self.scale(1.0 / len))
    }

    /// Each component rounded to two decimals, as nodes are stored.
    pub fn rounded(self) -> Self {
        let r = |v: f64| (v * 100.0).round() / 100.0;
        Self::new(r(self.x), r(self.y), r(self.z))
    }
}

/// Where a new root goes: the requested point, missing components at 0.
pub fn place_root(x: Option<f64>, y: Option<f64>, z: Option<f64>) -> Vec3 {
    Vec3::new(x.unwrap_or(0.0), y.unwrap_or(0.0), z.unwrap_or(0.0)).rounded()
}

/// Where a new child of `parent` goes: 15 units away, within 85 degrees of `gaze` (biased towards
/// the rim) when a usable gaze direction is given, else uniformly on the sphere.
pub fn place_child(parent: Vec3, gaze: Option<Vec3>, rng: &mut impl Rng) -> Vec3 {
    parent.add(child_offset(gaze, rng)).rounded()
}

/// The step from a parent to a new child, before rounding: 15 units, within 85 degrees of `gaze`
/// (biased towards the rim) when a usable gaze direction is given, else uniformly on the sphere.
/// The database adds it to the parent's position and rounds (see `db::nodes::create`).
pub fn child_offset(gaze: Option<Vec3>, rng: &mut impl Rng) -> Vec3 {
    let direction = match gaze.and_then(Vec3::normalized) {
        Some(axis) => direction_near(axis, rng),
        None => uniform_direction(rng),
    };
    direction.scale(CHILD_DISTANCE)
}

/// A unit vector at angle `85° * u^0.6` from `axis`, turned uniformly around it.
fn direction_near(axis: Vec3, rng: &mut impl Rng) -> Vec3 {
    let u: f64 = rng.random_range(0.0..1.0);
    let theta = MAX_GAZE_ANGLE_DEG.to_radians() * u.powf(RIM_BIAS_EXPONENT);
    let phi = rng.random_range(0.0..std::f64::consts::TAU);
    // Any vector not parallel to the axis gives a basis of the plane perpendicular to it.
    let helper = if axis.x.abs() < 0.9 {
        Vec3::new(1.0, 0.0, 0.0)
    } else {
        Vec3::new(0.0, 1.0, 0.0)
    };
    let e1 = axis
        .cross(helper)
        .normalized()
        .unwrap_or(Vec3::new(0.0, 0.0, 1.0));
    let e2 = axis.cross(e1);
    axis.scale(theta.cos())
        .add(e1.scale(theta.sin() * phi.cos()))
        .add(e2.scale(theta.sin() * phi.sin()))
}

/// A unit vector uniformly distributed on the sphere.
fn uniform_direction(rng: &mut impl Rng) -> Vec3 {
    let z: f64 = rng.random_range(-1.0..=1.0);
    let phi = rng.random_range(0.0..std::f64::consts::TAU);
    let r = (1.0 - z * z).max(0.0).sqrt();
    Vec3::new(r * phi.cos(), r * phi.sin(), z)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{SeedableRng, rngs::StdRng};

    fn angle_deg(a: Vec3, b: Vec3) -> f64 {
        (a.dot(b) / (a.length() * b.length()))
            .clamp(-1.0, 1.0)
            .acos()
            .to_degrees()
    }

    #[test]
    fn root_defaults_to_origin_and_rounds() {
        assert_eq!(place_root(None, None, None), Vec3::ORIGIN);
        assert_eq!(
            place_root(Some(1.234), None, Some(-7.899)),
            Vec3::new(1.23, 0.0, -7.9)
        );
    }

    #[test]
    fn child_is_fifteen_units_away_and_rounded() {
        let mut rng = StdRng::seed_from_u64(7);
        let parent = Vec3::new(10.0, -20.0, 30.0);
        for _ in 0..1000 {
            let child = place_child(parent, None, &mut rng);
            let d = Vec3::new(child.x - parent.x, child.y - parent.y, child.z - parent.z).length();
            // Rounding moves each component by at most 0.005.
            assert!((d - CHILD_DISTANCE).abs() < 0.01, "distance {d}");
            assert_eq!(child, child.rounded());
        }
    }

    #[test]
    fn gaze_keeps_children_within_85_degrees_biased_to_the_rim() {
        let mut rng = StdRng::seed_from_u64(11);
        let gaze = Vec3::new(0.3, -1.0, 2.0);
        let mut beyond_half = 0;
        let n = 4000;
        for _ in 0..n {
            let child = place_child(Vec3::ORIGIN, Some(gaze), &mut rng);
            let angle = angle_deg(child, gaze);
            assert!(angle <= MAX_GAZE_ANGLE_DEG + 0.1, "angle {angle}");
            if angle > MAX_GAZE_ANGLE_DEG / 2.0 {
                beyond_half += 1;
            }
        }
        // P(85 u^0.6 > 42.5) = 1 - 0.5^(1/0.6) ≈ 0.685: most children sit in the outer half.
        let share = f64::from(beyond_half) / f64::from(n);
        assert!(
            (0.64..0.73).contains(&share),
            "share beyond half angle {share}"
        );
    }

    #[test]
    fn zero_or_broken_gaze_falls_back_to_the_sphere() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut below = 0;
        for _ in 0..2000 {
            let child = place_child(Vec3::ORIGIN, Some(Vec3::ORIGIN), &mut rng);
            if child.z < 0.0 {
                below += 1;
            }
        }
        // Uniform on the sphere: about half below the equator, which a gaze cone would not give.
        assert!((800..1200).contains(&below), "{below} of 2000 below");
    }
}
