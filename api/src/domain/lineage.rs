//! The lineage window that the analysis sees: walk from a node towards the root, adding up content
//! lengths, and stop once 500 characters are reached.
//!
//! The database computes the walk in one recursive CTE (`db::nodes::lineage`); this module holds the
//! rule itself, which the CTE is tested against.

/// Characters of content after which the walk stops.
pub const WINDOW_CHARS: i64 = 500;

/// An ancestor as the walk sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ancestor {
    /// Its text.
    pub content: String,
    /// Its topic, once analysed.
    pub topic: Option<String>,
}

/// What the analysis of one node is given besides its own text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineageContext {
    /// The contents of the walked nodes (the node itself last), oldest first, newline-joined.
    pub full_context: String,
    /// The topic of the parent of the oldest walked node; empty when the walk reached the root.
    pub baseline_topic: String,
}

/// The window for a node with content `own` whose ancestors are `ancestors`, parent first.
pub fn window(own: &str, ancestors: &[Ancestor]) -> LineageContext {
    let mut walked = vec![own];
    let mut acc = char_len(own);
    let mut baseline_topic = String::new();
    for ancestor in ancestors {
        if acc >= WINDOW_CHARS {
            baseline_topic = ancestor.topic.clone().unwrap_or_default();
            break;
        }
        walked.push(&ancestor.content);
        acc += char_len(&ancestor.content);
    }
    walked.reverse();
    LineageContext {
        full_context: walked.join("\n"),
        baseline_topic,
    }
}

/// Assembles the context from the database's walk: the walked ancestors oldest first, then the
/// node's own text.
pub fn assemble(
    own: &str,
    window_oldest_first: &[String],
    baseline_topic: Option<String>,
) -> LineageContext {
    let mut parts: Vec<&str> = window_oldest_first.iter().map(String::as_str).collect();
    parts.push(own);
    LineageContext {
        full_context: parts.join("\n"),
        baseline_topic: baseline_topic.unwrap_or_default(),
    }
}

/// Length in characters (what PostgreSQL's `char_length` counts), not bytes.
pub fn char_len(s: &str) -> i64 {
    i64::try_from(s.chars().count()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(content: &str, topic: Option<&str>) -> Ancestor {
        Ancestor {
            content: content.to_owned(),
            topic: topic.map(str::to_owned),
        }
    }

    #[test]
    fn root_has_only_itself_and_no_baseline() {
        let ctx = window("hello", &[]);
        assert_eq!(ctx.full_context, "hello");
        assert_eq!(ctx.baseline_topic, "");
    }

    #[test]
    fn short_chain_reaches_the_root() {
        let ctx = window("c", &[a("b", Some("tb")), a("a", Some("ta"))]);
        assert_eq!(ctx.full_context, "a\nb\nc");
        assert_eq!(ctx.baseline_topic, "");
    }

    #[test]
    fn stops_once_500_characters_are_reached() {
        let long = "가".repeat(300);
        // own 300 + parent 300 = 600 >= 500: the grandparent is not walked, its topic is the baseline.
        let ctx = window(
            &long,
            &[a(&long, Some("p")), a("g", Some("grand")), a("r", None)],
        );
        assert_eq!(ctx.full_context, format!("{long}\n{long}"));
        assert_eq!(ctx.baseline_topic, "grand");
    }

    #[test]
    fn long_own_text_takes_parent_topic_as_baseline() {
        let ctx = window(&"x".repeat(500), &[a("p", Some("parent topic"))]);
        assert_eq!(ctx.full_context, "x".repeat(500));
        assert_eq!(ctx.baseline_topic, "parent topic");
    }

    #[test]
    fn unanalysed_baseline_is_empty() {
        let ctx = window(&"x".repeat(499), &[a("p", None), a("g", None)]);
        assert_eq!(ctx.full_context, format!("p\n{}", "x".repeat(499)));
        assert_eq!(ctx.baseline_topic, "");
    }

    #[test]
    fn assemble_matches_window() {
        let ctx = assemble("c", &["a".to_owned(), "b".to_owned()], Some("t".to_owned()));
        assert_eq!(ctx.full_context, "a\nb\nc");
        assert_eq!(ctx.baseline_topic, "t");
    }
}
