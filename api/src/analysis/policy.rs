//! The pipeline's rules as plain functions: which AI failures are worth another try, how long to
//! wait before it, what becomes of a node when the tries run out, and what an AI answer must look
//! like before it is stored.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tonic::Code;

use crate::domain::mutation::{MutationFilter, ROOT_SCORE};

use super::claims::Analysis;

/// The emotions the AI server may answer (DESIGN.md, "Emotion").
pub const EMOTIONS: [&str; 7] = [
    "joy",
    "embarrassed",
    "anger",
    "anxiety",
    "hurt",
    "sadness",
    "neutral",
];

/// Longest topic stored, in characters; a longer answer is cut.
pub const MAX_TOPIC_CHARS: usize = 200;

/// What one failed AI call means for the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Worth another try: the server is down, busy or slow.
    Transient,
    /// Trying again cannot help: the server refused this node (or failed in a way that is not
    /// about load).
    Permanent,
}

/// Classifies a gRPC status code: `UNAVAILABLE`, `RESOURCE_EXHAUSTED` and `DEADLINE_EXCEEDED` are
/// transient, everything else (`INVALID_ARGUMENT` first of all) is permanent.
pub fn classify(code: Code) -> Fault {
    match code {
        Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded => Fault::Transient,
        _ => Fault::Permanent,
    }
}

/// How AI calls are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Calls per claim, the first included.
    pub max_tries: u32,
    /// Wait before the second call; doubles with each further call.
    pub base: Duration,
    /// Longest wait between two calls.
    pub max: Duration,
}

impl RetryPolicy {
    /// The waits between calls: exponential from `base`, capped at `max`, each with random jitter
    /// (so that workers that failed together do not retry together); `max_tries - 1` of them.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + use<> {
        ExponentialBuilder::default()
            .with_min_delay(self.base)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(self.max_tries.saturating_sub(1) as usize)
            .build()
    }
}

/// What to do with a claimed node whose AI calls all failed with transient faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// Store it as `FAILED` with the reason: it used its last try.
    Fail,
    /// Hand it back to `PENDING` for another claim: the server was down, busy or slow, which
    /// need not be the node's fault (an AI server restart must not fail the nodes in flight).
    GiveBack,
}

/// After the last transient failure of a claim: give the node back while it has claims left, so
/// a node gets up to `max_tries` calls in each of `max_claims` claims; fail it with the reason
/// after the last (so a node that brings the server down each time still ends).
pub fn when_exhausted(claims: i32, max_claims: u32) -> Exhausted {
    let claims = u32::try_from(claims).unwrap_or(0);
    if claims < max_claims {
        Exhausted::GiveBack
    } else {
        Exhausted::Fail
    }
}

/// Why an AI answer cannot be stored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BadAnswer {
    /// The emotion is none of the seven.
    #[error("the AI server answered an unknown emotion {0:?}")]
    Emotion(String),
    /// A number is not finite or outside [0, 1].
    #[error("the AI server answered {what} {value}, outside [0, 1]")]
    OutOfRange {
        /// Which number.
        what: &'static str,
        /// Its value.
        value: f32,
    },
    /// The topic is empty.
    #[error("the AI server answered an empty topic")]
    EmptyTopic,
}

/// Checks an AI answer and turns it into what is stored: the topic trimmed and cut to
/// [`MAX_TOPIC_CHARS`], the mutation score rounded to four decimals (a root keeps 0.0 and
/// `ORIGIN`, DESIGN.md "Mutation filter").
pub fn accept(
    is_root: bool,
    topic: &str,
    emotion: &str,
    confidence: f32,
    mutation_score: f32,
) -> Result<Analysis, BadAnswer> {
    let topic: String = topic.trim().chars().take(MAX_TOPIC_CHARS).collect();
    if topic.is_empty() {
        return Err(BadAnswer::EmptyTopic);
    }
    if !EMOTIONS.contains(&emotion) {
        return Err(BadAnswer::Emotion(emotion.chars().take(40).collect()));
    }
    for (what, value) in [
        ("confidence", confidence),
        ("mutation score", mutation_score),
    ] {
        if !(0.0..=1.0).contains(&value) {
            return Err(BadAnswer::OutOfRange { what, value });
        }
    }
    let (mutation_score, filter) = if is_root {
        (ROOT_SCORE, MutationFilter::Origin)
    } else {
        let score = (f64::from(mutation_score) * 10_000.0).round() / 10_000.0;
        (score, MutationFilter::of_child(score))
    };
    Ok(Analysis {
        topic,
        emotion: emotion.to_owned(),
        confidence,
        mutation_score,
        mutation_filter: filter.as_str(),
    })
}

/// Whether `color` is a usable colour name: 1 to 63 lowercase letters, digits and `-`, starting
/// with a letter (a Kubernetes label value, as the operator sets it).
pub fn valid_color(color: &str) -> bool {
    (1..=63).contains(&color.len())
        && color.starts_with(|c: char| c.is_ascii_lowercase())
        && color
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !color.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_load_and_outage_codes_are_transient() {
        for code in [
            Code::Unavailable,
            Code::ResourceExhausted,
            Code::DeadlineExceeded,
        ] {
            assert_eq!(classify(code), Fault::Transient, "{code:?}");
        }
        for code in [
            Code::InvalidArgument,
            Code::Internal,
            Code::Unknown,
            Code::Unimplemented,
            Code::FailedPrecondition,
            Code::NotFound,
        ] {
            assert_eq!(classify(code), Fault::Permanent, "{code:?}");
        }
    }

    #[test]
    fn delays_grow_are_capped_and_count_the_retries() {
        let policy = RetryPolicy {
            max_tries: 6,
            base: Duration::from_millis(100),
            max: Duration::from_millis(500),
        };
        let delays: Vec<Duration> = policy.delays().collect();
        assert_eq!(delays.len(), 5, "one wait between each two of six tries");
        // Jitter adds up to one base delay on top of the exponential value.
        for (i, d) in delays.iter().enumerate() {
            let exp = Duration::from_millis(100 * (1 << i)).min(Duration::from_millis(500));
            assert!(*d >= exp && *d <= exp * 2, "delay {i}: {d:?} vs {exp:?}");
        }
        let one = RetryPolicy {
            max_tries: 1,
            ..policy
        };
        assert_eq!(one.delays().count(), 0);
    }

    #[test]
    fn jitter_spreads_the_retries_of_workers_that_failed_together() {
        let policy = RetryPolicy {
            max_tries: 2,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let first: Vec<Duration> = (0..20).filter_map(|_| policy.delays().next()).collect();
        assert!(
            first.iter().any(|d| *d != first[0]),
            "twenty identical waits: {first:?}"
        );
    }

    #[test]
    fn transient_failures_hand_the_node_back_until_its_claims_run_out() {
        assert_eq!(when_exhausted(1, 5), Exhausted::GiveBack);
        assert_eq!(when_exhausted(4, 5), Exhausted::GiveBack);
        assert_eq!(when_exhausted(5, 5), Exhausted::Fail);
        assert_eq!(when_exhausted(1, 1), Exhausted::Fail);
    }

    #[test]
    fn answers_are_checked_and_normalised() {
        let child = accept(false, "  바다 이야기 \n", "joy", 0.8, 0.123_456).unwrap();
        assert_eq!(child.topic, "바다 이야기");
        assert_eq!(child.mutation_score, 0.1235);
        assert_eq!(child.mutation_filter, "CLUSTER");
        assert_eq!(
            accept(false, "t", "joy", 0.5, 0.5).unwrap().mutation_filter,
            "EVOLUTION"
        );
        assert_eq!(
            accept(false, "t", "joy", 0.5, 0.9).unwrap().mutation_filter,
            "MUTATION"
        );
        let root = accept(true, "t", "neutral", 0.5, 0.9).unwrap();
        assert_eq!((root.mutation_score, root.mutation_filter), (0.0, "ORIGIN"));
        let long = accept(false, &"가".repeat(500), "joy", 0.5, 0.5).unwrap();
        assert_eq!(long.topic.chars().count(), MAX_TOPIC_CHARS);

        assert_eq!(
            accept(false, " ", "joy", 0.5, 0.5),
            Err(BadAnswer::EmptyTopic)
        );
        assert!(matches!(
            accept(false, "t", "rage", 0.5, 0.5),
            Err(BadAnswer::Emotion(_))
        ));
        for (c, s) in [
            (f32::NAN, 0.5),
            (1.5, 0.5),
            (0.5, -0.1),
            (0.5, f32::INFINITY),
        ] {
            assert!(
                matches!(
                    accept(false, "t", "joy", c, s),
                    Err(BadAnswer::OutOfRange { .. })
                ),
                "{c} {s}"
            );
        }
    }

    #[test]
    fn colours_are_label_values() {
        for ok in ["blue", "green", "canary-2", "a"] {
            assert!(valid_color(ok), "{ok}");
        }
        for bad in [
            "",
            "Blue",
            "2blue",
            "blue-",
            "blue green",
            "b'; DROP",
            &"a".repeat(64),
        ] {
            assert!(!valid_color(bad), "{bad}");
        }
    }
}
