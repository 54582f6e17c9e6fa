//! The key `/viz` finds nodes by: a Morton (Z-order) code of a node's position, and the few key
//! ranges that cover a cube.
//!
//! Each axis is cut into cells one unit wide, numbered from 0 to 2^21 - 1 with the origin at
//! 2^20 (so cells cover -1,048,576..1,048,576 on each axis; a coordinate beyond sits in the edge
//! cell, which keeps every search correct and only makes the far-out ones read more). The key
//! interleaves the three cell numbers bit by bit (x in bit 0, y in bit 1, z in bit 2, then the
//! next bit of each), so that the cells of any aligned octree cube form one contiguous run of
//! keys. The B-tree index `nodes_viz` holds `(key, x, y, z)`: a search reads one short run of
//! keys per range, and compares the exact coordinates inside the index before it reads a row.
//!
//! PostgreSQL computes the key with `mutr_viz_key(x, y, z)` (migration
//! `20261201000001_viz_key.sql`); [`key`] is the same function, and a test checks that the two
//! agree. Neither may ever change: the index stores the keys. A better key is a new function and
//! a new index.

/// Bits per axis: three of them fit a positive `bigint` (63 bits).
pub const BITS: u32 = 21;
/// The largest cell number.
const MAX_CELL: u32 = (1 << BITS) - 1;
/// The cell number of coordinate 0.
const ORIGIN_CELL: f64 = (1u32 << (BITS - 1)) as f64;

/// The cell of a coordinate: `least(greatest(floor(v) + 2^20, 0), 2^21 - 1)`, as PostgreSQL
/// computes it in `float8`, NaN included (PostgreSQL orders NaN above every number).
pub fn cell(v: f64) -> u32 {
    let c = v.floor() + ORIGIN_CELL;
    if c.is_nan() || c >= f64::from(MAX_CELL) {
        MAX_CELL
    } else if c <= 0.0 {
        0
    } else {
        // In range and integral: exact.
        c as u32
    }
}

/// The 21 bits of `v` spread to every third bit.
fn spread(v: u32) -> u64 {
    let mut v = u64::from(v) & u64::from(MAX_CELL);
    v = (v | (v << 32)) & 0x001f_0000_0000_ffff;
    v = (v | (v << 16)) & 0x001f_0000_ff00_00ff;
    v = (v | (v << 8)) & 0x100f_00f0_0f00_f00f;
    v = (v | (v << 4)) & 0x10c3_0c30_c30c_30c3;
    (v | (v << 2)) & 0x1249_2492_4924_9249
}

/// The key of the cell `(cx, cy, cz)`.
fn cell_key(c: [u32; 3]) -> u64 {
    spread(c[0]) | spread(c[1]) << 1 | spread(c[2]) << 2
}

/// The key of a position: what `mutr_viz_key(x, y, z)` answers.
pub fn key(x: f64, y: f64, z: f64) -> i64 {
    // At most 63 bits: never negative.
    cell_key([cell(x), cell(y), cell(z)]) as i64
}

/// An aligned octree cube: `2^level` cells on each edge, from `origin`.
#[derive(Debug, Clone, Copy)]
struct Octant {
    level: u32,
    origin: [u32; 3],
}

impl Octant {
    fn edge(self) -> u32 {
        1 << self.level
    }

    /// Its cells' keys, which are contiguous.
    fn keys(self) -> (u64, u64) {
        let first = cell_key(self.origin);
        (first, first + ((1u64 << (3 * self.level)) - 1))
    }

    fn inside(self, lo: [u32; 3], hi: [u32; 3]) -> bool {
        (0..3).all(|i| lo[i] <= self.origin[i] && self.origin[i] + (self.edge() - 1) <= hi[i])
    }

    fn overlaps(self, lo: [u32; 3], hi: [u32; 3]) -> bool {
        (0..3).all(|i| self.origin[i] <= hi[i] && self.origin[i] + (self.edge() - 1) >= lo[i])
    }

    fn children(self) -> impl Iterator<Item = Octant> {
        let half = self.edge() / 2;
        (0..8u32).map(move |d| Octant {
            level: self.level - 1,
            origin: [
                self.origin[0] + (d & 1) * half,
                self.origin[1] + (d >> 1 & 1) * half,
                self.origin[2] + (d >> 2 & 1) * half,
            ],
        })
    }
}

/// Sorted, disjoint, non-adjacent key ranges (inclusive) covering `octants`.
fn merged(octants: impl IntoIterator<Item = Octant>) -> Vec<(u64, u64)> {
    let mut keys: Vec<(u64, u64)> = octants.into_iter().map(Octant::keys).collect();
    keys.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(keys.len());
    for (first, last) in keys {
        match out.last_mut() {
            Some(prev) if prev.1 + 1 >= first => prev.1 = prev.1.max(last),
            _ => out.push((first, last)),
        }
    }
    out
}

/// Key ranges whose union holds the key of every position in the box `lo..=hi` (inclusive, per
/// axis): sorted, disjoint, inclusive, at most `budget` of them (at least 8: a box is first
/// covered by at most 8 aligned octants).
///
/// The box is first covered by the smallest aligned octants at least as wide as it (at most two
/// per axis); those inside it are taken whole, and the largest of those across its faces is
/// split into its eight children, again and again, while the merged ranges still fit the
/// budget. A range may hold keys of cells outside the box; the index compares the exact
/// coordinates, so those cost a few index entries read, not a wrong answer.
pub fn ranges(lo: [f64; 3], hi: [f64; 3], budget: usize) -> Vec<(i64, i64)> {
    let lo = lo.map(cell);
    let hi = hi.map(cell);
    if (0..3).any(|i| lo[i] > hi[i]) {
        return Vec::new();
    }
    let extent = (0..3).map(|i| hi[i] - lo[i] + 1).max().unwrap_or(1);
    // The smallest aligned octants no narrower than the box: at most two per axis cover it.
    let level = extent.next_power_of_two().trailing_zeros().min(BITS);
    let edge = 1u32 << level;
    let mut whole = Vec::new();
    let mut across = Vec::new();
    let starts = |i: usize| (lo[i] >> level << level..=hi[i]).step_by(edge as usize);
    for ox in starts(0) {
        for oy in starts(1) {
            for oz in starts(2) {
                let o = Octant {
                    level,
                    origin: [ox, oy, oz],
                };
                if o.inside(lo, hi) {
                    whole.push(o);
                } else {
                    across.push(o);
                }
            }
        }
    }
    // Split the largest octant across a face while the ranges still fit the budget.
    while let Some(i) = (0..across.len())
        .filter(|&i| across[i].level > 0)
        .max_by_key(|&i| across[i].level)
    {
        let split = across.swap_remove(i);
        let (mut inner, mut outer) = (Vec::new(), Vec::new());
        for child in split.children() {
            if child.inside(lo, hi) {
                inner.push(child);
            } else if child.overlaps(lo, hi) {
                outer.push(child);
            }
        }
        let finer = whole.iter().chain(&inner).chain(&across).chain(&outer);
        let octants = whole.len() + inner.len() + across.len() + outer.len();
        // Merging only joins ranges, so count them merged only when there are too many apart;
        // and stop at 8 octants a range, which bounds the work where faces keep merging.
        if octants > 8 * budget.max(1)
            || (octants > budget && merged(finer.copied()).len() > budget)
        {
            across.push(split);
            break;
        }
        whole.extend(inner);
        across.extend(outer);
    }
    merged(whole.into_iter().chain(across))
        .into_iter()
        // Keys have at most 63 bits: never negative.
        .map(|(a, b)| (a as i64, b as i64))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cells_clamp_at_the_edges_and_floor_inside() {
        assert_eq!(cell(0.0), 1 << 20);
        assert_eq!(cell(-0.0), 1 << 20);
        assert_eq!(cell(0.99), 1 << 20);
        assert_eq!(cell(-0.01), (1 << 20) - 1);
        assert_eq!(cell(1_048_575.5), MAX_CELL);
        assert_eq!(cell(1e12), MAX_CELL);
        assert_eq!(cell(f64::INFINITY), MAX_CELL);
        assert_eq!(cell(f64::NAN), MAX_CELL);
        assert_eq!(cell(-1_048_576.0), 0);
        assert_eq!(cell(-1e300), 0);
        assert_eq!(cell(f64::NEG_INFINITY), 0);
    }

    #[test]
    fn keys_interleave_x_then_y_then_z() {
        let o = 1u32 << 20;
        let base = cell_key([o, o, o]);
        assert_eq!(key(1.0, 0.0, 0.0) - key(0.0, 0.0, 0.0), 0b001);
        assert_eq!(key(0.0, 1.0, 0.0) - key(0.0, 0.0, 0.0), 0b010);
        assert_eq!(key(0.0, 0.0, 1.0) - key(0.0, 0.0, 0.0), 0b100);
        assert_eq!(key(2.0, 0.0, 0.0) - key(0.0, 0.0, 0.0), 0b1000);
        assert_eq!(cell_key([MAX_CELL; 3]), (1 << 63) - 1);
        assert_eq!(base, 0b111 << 60);
    }

    #[test]
    fn a_box_inside_one_octant_is_one_range() {
        // Cells 1024..=2047 on each axis form one aligned octant of level 10.
        let o = f64::from(1u32 << 20);
        let r = ranges([1024.0 - o; 3], [2047.5 - o; 3], 1);
        assert_eq!(r.len(), 1);
        let (first, last) = r[0];
        assert_eq!(last - first + 1, 1 << 30);
    }

    #[test]
    fn an_empty_box_has_no_range() {
        assert!(ranges([5.0, 0.0, 0.0], [4.0, 1.0, 1.0], 16).is_empty());
    }

    #[test]
    fn the_whole_space_is_one_range() {
        let r = ranges([-1e300; 3], [1e300; 3], 16);
        assert_eq!(r, vec![(0, i64::MAX)]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Every position inside the box has its key in one of the ranges; the ranges are
        /// sorted, disjoint, not adjacent and within the budget.
        #[test]
        fn ranges_cover_the_box(
            centre in prop::array::uniform3(-2_000_000.0..2_000_000.0f64),
            range in prop_oneof![0.0..2.0f64, 0.0..500.0f64, 0.0..3_000_000.0f64],
            budget in 1usize..64,
            at in prop::array::uniform3(0.0..=1.0f64),
        ) {
            let lo = centre.map(|c| c - range);
            let hi = centre.map(|c| c + range);
            let r = ranges(lo, hi, budget);
            prop_assert!(!r.is_empty());
            prop_assert!(r.len() <= budget.max(8), "{} ranges", r.len());
            for w in r.windows(2) {
                prop_assert!(w[0].1 + 1 < w[1].0, "{:?}", w);
            }
            for (a, b) in &r {
                prop_assert!(a <= b);
            }
            let p: [f64; 3] =
                std::array::from_fn(|i| (lo[i] + (hi[i] - lo[i]) * at[i]).clamp(lo[i], hi[i]));
            let k = key(p[0], p[1], p[2]);
            prop_assert!(r.iter().any(|&(a, b)| a <= k && k <= b), "{k} not in {r:?}");
            // The corners too.
            for corner in 0..8 {
                let c: [f64; 3] =
                    std::array::from_fn(|i| if corner >> i & 1 == 0 { lo[i] } else { hi[i] });
                let k = key(c[0], c[1], c[2]);
                prop_assert!(r.iter().any(|&(a, b)| a <= k && k <= b), "corner {c:?}");
            }
        }
    }

    /// With the budget `/viz` uses, a cube of the default range reads few cells outside it.
    #[test]
    fn the_default_cube_is_covered_tightly() {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
        let mut worst: f64 = 0.0;
        for _ in 0..200 {
            let c: [f64; 3] =
                std::array::from_fn(|_| rand::Rng::random_range(&mut rng, -5000.0..5000.0));
            let r = ranges(c.map(|v| v - 200.0), c.map(|v| v + 200.0), 16);
            let cells: f64 = r.iter().map(|(a, b)| (b - a + 1) as f64).sum();
            worst = worst.max(cells / 401f64.powi(3));
        }
        // 16 ranges cover such a cube with 4x its cells on average and 7x at worst (95th
        // percentile) on 300 random cubes; a box of 401 cells can span eight octants of 512, 17x.
        assert!(worst < 12.0, "the ranges hold {worst:.1}x the cube's cells");
    }
}
