//! Emotion labels and their scoring: the model gives each label a log-likelihood as the answer to
//! the emotion prompt; a softmax over the seven turns those into probabilities, and the most
//! likely label is the emotion with its probability as the confidence.

/// The labels, in the order the prompt lists them and scores come back.
pub const LABELS: [&str; 7] = [
    "joy",
    "embarrassed",
    "anger",
    "anxiety",
    "hurt",
    "sadness",
    "neutral",
];

/// The label used when there is nothing to score (it is also the API's "not analysed yet").
pub const NEUTRAL: &str = "neutral";

/// An emotion with the model's probability for it among the labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Emotion {
    /// One of [`LABELS`].
    pub label: &'static str,
    /// Probability of `label` among the labels, in [0, 1].
    pub confidence: f64,
}

/// Picks the emotion from per-label log-likelihoods (natural log, in [`LABELS`] order): softmax
/// over the labels, most probable first; ties go to the earlier label. Non-finite scores count as
/// impossible; when every score is, the result is neutral with confidence 0.
pub fn pick(log_likelihoods: &[f64; LABELS.len()]) -> Emotion {
    let probs = softmax(log_likelihoods);
    let mut best = None::<(usize, f64)>;
    for (i, p) in probs.iter().enumerate() {
        if best.is_none_or(|(_, bp)| *p > bp) {
            best = Some((i, *p));
        }
    }
    match best {
        Some((i, p)) if p > 0.0 => Emotion {
            label: LABELS[i],
            confidence: p.clamp(0.0, 1.0),
        },
        _ => Emotion {
            label: NEUTRAL,
            confidence: 0.0,
        },
    }
}

/// Softmax of log-likelihoods; non-finite entries get probability 0, and all of them non-finite
/// gives all zeros.
pub fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return vec![0.0; logits.len()];
    }
    let exps: Vec<f64> = logits
        .iter()
        .map(|x| if x.is_finite() { (x - max).exp() } else { 0.0 })
        .collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// Log-probability of `token` under `logits` (a log-softmax over the vocabulary), computed in f64.
pub fn log_prob(logits: &[f32], token: usize) -> f64 {
    match logits.get(token) {
        Some(l) => f64::from(*l) - log_norm(logits),
        None => f64::NEG_INFINITY,
    }
}

/// The log-softmax normaliser of `logits`, `ln(sum(exp(l)))`, in f64: a token's log-probability
/// is its logit minus this. Positive infinity (so every log-probability is impossible) when no
/// logit is finite.
pub fn log_norm(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return f64::INFINITY;
    }
    let max = f64::from(max);
    let sum: f64 = logits.iter().map(|l| (f64::from(*l) - max).exp()).sum();
    max + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_numbers() {
        // joy and neutral are equally likely and ten times anything else's... in log space:
        // ln(10) higher. exp: 10, 1, 1, 1, 1, 1, 10 -> joy = 10 / 25 = 0.4; ties go to joy.
        let ln10 = 10f64.ln();
        let e = pick(&[ln10, 0.0, 0.0, 0.0, 0.0, 0.0, ln10]);
        assert_eq!(e.label, "joy");
        assert!((e.confidence - 0.4).abs() < 1e-12, "{e:?}");

        // Uniform: 1/7 each, first label wins the tie.
        let e = pick(&[-3.0; 7]);
        assert_eq!(e.label, "joy");
        assert!((e.confidence - 1.0 / 7.0).abs() < 1e-12);

        // Sadness dominates: ln-likelihoods -1 vs -10 -> p = 1 / (1 + 6 e^-9) = 0.999259...
        let mut s = [-10.0; 7];
        s[5] = -1.0;
        let e = pick(&s);
        assert_eq!(e.label, "sadness");
        assert!((e.confidence - 1.0 / (1.0 + 6.0 * (-9.0f64).exp())).abs() < 1e-12);
    }

    #[test]
    fn non_finite_scores() {
        let mut s = [f64::NEG_INFINITY; 7];
        assert_eq!(
            pick(&s),
            Emotion {
                label: NEUTRAL,
                confidence: 0.0
            }
        );
        s[2] = -50.0;
        let e = pick(&s);
        assert_eq!(e.label, "anger");
        assert_eq!(e.confidence, 1.0);
        s[3] = f64::NAN;
        assert_eq!(pick(&s).label, "anger");
    }

    #[test]
    fn log_prob_worked_numbers() {
        // Two equal logits: ln(1/2).
        assert!((log_prob(&[1.0, 1.0], 0) - 0.5f64.ln()).abs() < 1e-9);
        // logits [ln 3, 0] -> p0 = 3/4.
        assert!((log_prob(&[3f32.ln(), 0.0], 0) - 0.75f64.ln()).abs() < 1e-6);
        assert_eq!(log_prob(&[0.0], 5), f64::NEG_INFINITY);
    }
}
