//! Cleanup of a generated title: the model writes one line, which may come with numbering,
//! quotes, a `제목:` prefix or a final period. What is left is the topic, or a fallback.

/// Topic used when the model produced nothing usable and there is no baseline topic.
pub const DEFAULT_TOPIC: &str = "오늘의 기록";

/// Longest topic kept, in characters; the prompt asks for about 20.
pub const MAX_TOPIC_CHARS: usize = 40;

const QUOTES: &[char] = &[
    '"', '\'', '`', '“', '”', '‘', '’', '「', '」', '『', '』', '《', '》', '〈', '〉', '*',
];
const PREFIXES: &[&str] = &["제목", "주제", "title", "topic"];

/// Cleans a generated title: keeps the first non-empty line, strips list numbering and bullets,
/// a `제목:`-style prefix, surrounding quotes and trailing periods, and caps its length.
/// Returns `None` when nothing is left.
pub fn clean_title(raw: &str) -> Option<String> {
    let line = raw.lines().map(str::trim).find(|l| !l.is_empty())?;
    let mut s = line.to_owned();
    // Each rule may uncover another (`1. "제목: 봄"`), so repeat until nothing changes.
    loop {
        let before = s.clone();
        s = strip_numbering(s.trim()).to_owned();
        s = strip_prefix_label(s.trim()).to_owned();
        s = s.trim().trim_matches(QUOTES).trim().to_owned();
        s = s
            .trim_end_matches(['.', '。', '…', '!', '?', ',', ':', ';'])
            .trim()
            .to_owned();
        if s == before {
            break;
        }
    }
    let s: String = s
        .chars()
        .take(MAX_TOPIC_CHARS)
        .collect::<String>()
        .trim()
        .to_owned();
    (!s.is_empty()).then_some(s)
}

/// The topic to return: the cleaned title, else the baseline topic, else [`DEFAULT_TOPIC`].
pub fn topic_or_fallback(raw: &str, baseline_topic: &str) -> String {
    clean_title(raw).unwrap_or_else(|| {
        let baseline = baseline_topic.trim();
        if baseline.is_empty() {
            DEFAULT_TOPIC.to_owned()
        } else {
            baseline.to_owned()
        }
    })
}

fn strip_numbering(s: &str) -> &str {
    let s = s.trim_start_matches(['#', '-', '•', '·', '>']).trim_start();
    let digits = s.chars().take_while(char::is_ascii_digit).count();
    if digits > 0 {
        let rest = &s[digits..];
        if let Some(rest) = rest.strip_prefix(['.', ')', ':', '-']) {
            return rest.trim_start();
        }
    }
    s
}

fn strip_prefix_label(s: &str) -> &str {
    for p in PREFIXES {
        if s.len() >= p.len() && s.is_char_boundary(p.len()) && s[..p.len()].eq_ignore_ascii_case(p)
        {
            let rest = s[p.len()..].trim_start();
            if let Some(rest) = rest.strip_prefix([':', '：']) {
                return rest.trim_start();
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_worked_examples() {
        assert_eq!(
            clean_title("제목: 봄날의 산책").as_deref(),
            Some("봄날의 산책")
        );
        assert_eq!(
            clean_title("1. \"봄날의 산책\".").as_deref(),
            Some("봄날의 산책")
        );
        assert_eq!(
            clean_title("  「첫눈 오는 밤」  ").as_deref(),
            Some("첫눈 오는 밤")
        );
        assert_eq!(
            clean_title("**제목：겨울 바다**").as_deref(),
            Some("겨울 바다")
        );
        assert_eq!(
            clean_title("2) '새로운 시작'").as_deref(),
            Some("새로운 시작")
        );
        assert_eq!(
            clean_title("\n\n  - 오래된 편지\n둘째 줄").as_deref(),
            Some("오래된 편지")
        );
        assert_eq!(
            clean_title("Title: A quiet morning.").as_deref(),
            Some("A quiet morning")
        );
        assert_eq!(clean_title("2024년의 봄").as_deref(), Some("2024년의 봄"));
    }

    #[test]
    fn nothing_left_is_none() {
        assert_eq!(clean_title(""), None);
        assert_eq!(clean_title("   \n  "), None);
        assert_eq!(clean_title("제목: \"\"."), None);
        assert_eq!(clean_title("1."), None);
    }

    #[test]
    fn caps_length() {
        let long = "가".repeat(100);
        assert_eq!(clean_title(&long).unwrap().chars().count(), MAX_TOPIC_CHARS);
    }

    #[test]
    fn fallbacks() {
        assert_eq!(topic_or_fallback("제목: 봄", "겨울"), "봄");
        assert_eq!(topic_or_fallback("\"\"", " 겨울 "), "겨울");
        assert_eq!(topic_or_fallback("", ""), DEFAULT_TOPIC);
    }
}
