//! Mutation score: how far a node drifted from its parent's topic, from the cosine similarity of
//! their embeddings, calibrated as DESIGN.md says.

/// L2-normalises `v` in place. A zero vector stays zero (its cosine with anything is then 0).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        for x in v.iter_mut() {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
}

/// Cosine similarity of two vectors of the same length (0 when either is zero or they differ in
/// length, which only a broken model would produce).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    (dot / (na.sqrt() * nb.sqrt())).clamp(-1.0, 1.0)
}

/// Maps a cosine similarity `s` to a mutation score in [0, 1], rounded to 4 decimals:
/// `s >= 0.35 -> (1 - s) * 0.2 / 0.65`; `0.15 <= s < 0.35 -> 0.7 - (s - 0.15) * 0.4 / 0.2`;
/// otherwise `1 - max(0, s)`.
pub fn calibrate(s: f64) -> f64 {
    let raw = if s >= 0.35 {
        (1.0 - s) * 0.2 / 0.65
    } else if s >= 0.15 {
        0.7 - (s - 0.15) * 0.4 / 0.2
    } else {
        1.0 - s.max(0.0)
    };
    round4(raw.clamp(0.0, 1.0))
}

/// Rounds to 4 decimals.
pub fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_worked_numbers() {
        // Identical texts do not mutate.
        assert_eq!(calibrate(1.0), 0.0);
        // s = 0.35: (1 - 0.35) * 0.2 / 0.65 = 0.2 exactly, the top of the first band.
        assert_eq!(calibrate(0.35), 0.2);
        // s = 0.675: 0.325 * 0.2 / 0.65 = 0.1.
        assert_eq!(calibrate(0.675), 0.1);
        // s = 0.25: 0.7 - 0.1 * 0.4 / 0.2 = 0.5.
        assert_eq!(calibrate(0.25), 0.5);
        // s = 0.15: 0.7, the top of the middle band.
        assert_eq!(calibrate(0.15), 0.7);
        // Just below 0.35 the middle band gives 0.7 - 0.2 * 2 = 0.3 (the jump to 0.2 is by design).
        assert_eq!(calibrate(0.349_99), 0.3);
        // s = 0.1: 1 - 0.1 = 0.9.
        assert_eq!(calibrate(0.1), 0.9);
        // Negative similarity is as far as it gets.
        assert_eq!(calibrate(-0.4), 1.0);
        assert_eq!(calibrate(0.0), 1.0);
        // Rounded to 4 decimals: s = 0.5 -> 0.5 * 0.2 / 0.65 = 0.153846... -> 0.1538.
        assert_eq!(calibrate(0.5), 0.1538);
    }

    #[test]
    fn calibration_stays_in_range() {
        for i in -100..=100 {
            let s = f64::from(i) / 100.0;
            let m = calibrate(s);
            assert!((0.0..=1.0).contains(&m), "s={s} gave {m}");
        }
    }

    #[test]
    fn cosine_and_normalisation() {
        let mut a = vec![3.0f32, 4.0];
        l2_normalize(&mut a);
        assert!((a[0] - 0.6).abs() < 1e-6 && (a[1] - 0.8).abs() < 1e-6);
        assert!((cosine(&[1.0, 0.0], &[0.0, 1.0])).abs() < 1e-12);
        assert!((cosine(&[1.0, 1.0], &[2.0, 2.0]) - 1.0).abs() < 1e-12);
        assert!((cosine(&[1.0, 0.0], &[-1.0, 0.0]) + 1.0).abs() < 1e-12);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
        assert_eq!(cosine(&[1.0], &[1.0, 0.0]), 0.0);
        let mut z = vec![0.0f32; 3];
        l2_normalize(&mut z);
        assert_eq!(z, vec![0.0; 3]);
    }
}
