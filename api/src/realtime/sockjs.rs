//! SockJS protocol framing, as `sockjs-client` 1.x sends and expects it: the `o`, `h`, `a[...]`
//! and `c[code,"reason"]` frames, the JSON-encoded message arrays clients send, the `/info`
//! answer, and the path segments of a session URL.

use serde::Serialize;

/// Opens a session; the first frame of every transport.
pub const OPEN: &str = "o";
/// Keeps proxies and the client's own timeout from closing an idle session.
pub const HEARTBEAT: &str = "h";
/// What xhr-streaming sends first, so that browsers that buffer the start of a response flush.
pub const STREAMING_PRELUDE_LEN: usize = 2048;

/// A SockJS close frame: the code and reason the client's `onclose` receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: &'static str,
}

impl Close {
    /// The server ended the session (protocol error, DISCONNECT, timeout).
    pub const GO_AWAY: Close = Close {
        code: 3000,
        reason: "Go away!",
    };
    /// A second receiving request for a session that already has one.
    pub const ANOTHER_CONNECTION: Close = Close {
        code: 2010,
        reason: "Another connection still open",
    };
    /// The server is shutting down; clients reconnect (to another replica).
    pub const SHUTDOWN: Close = Close {
        code: 1001,
        reason: "Server shutting down",
    };
    /// The server has as many sessions as it allows.
    pub const TOO_MANY: Close = Close {
        code: 1013,
        reason: "Too many sessions",
    };

    pub fn frame(self) -> String {
        // `reason` is a constant without characters that need escaping.
        format!("c[{},\"{}\"]", self.code, self.reason)
    }
}

/// An `a[...]` frame carrying messages to the client.
pub fn message_frame<S: AsRef<str>>(messages: &[S]) -> String {
    let mut out =
        String::with_capacity(3 + messages.iter().map(|m| m.as_ref().len() + 8).sum::<usize>());
    out.push_str("a[");
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(&mut out, m.as_ref());
    }
    out.push(']');
    out
}

/// Appends `s` as a JSON string, escaping also the characters that SockJS servers escape because
/// some browsers and proxies mangle them in transit (the ranges in the SockJS protocol tests).
fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_unicode_escape(c) => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn needs_unicode_escape(c: char) -> bool {
    matches!(c as u32,
        0x0000..=0x001f | 0x007f..=0x009f | 0x200c..=0x200f | 0x2028..=0x202f
        | 0x2060..=0x206f | 0xfff0..=0xffff)
}

/// Why a client's SockJS payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("Payload expected.")]
    Empty,
    #[error("Broken JSON encoding.")]
    BrokenJson,
}

/// The messages in a client's payload: a JSON array of strings (what `sockjs-client` sends), or
/// a single JSON string (which some clients send over the WebSocket transport).
pub fn decode_messages(payload: &[u8]) -> Result<Vec<String>, PayloadError> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Err(PayloadError::Empty);
    }
    if let Ok(messages) = serde_json::from_slice::<Vec<String>>(payload) {
        return Ok(messages);
    }
    serde_json::from_slice::<String>(payload)
        .map(|m| vec![m])
        .map_err(|_| PayloadError::BrokenJson)
}

/// The answer of `GET /info`.
#[derive(Debug, Serialize)]
pub struct Info {
    pub websocket: bool,
    pub cookie_needed: bool,
    pub origins: [&'static str; 1],
    pub entropy: u32,
}

impl Info {
    pub fn new(entropy: u32) -> Self {
        Info {
            websocket: true,
            cookie_needed: false,
            origins: ["*:*"],
            entropy,
        }
    }
}

/// The server and session segments of a transport URL: not empty, no dots (the protocol forbids
/// them) and short, so that a client cannot make the session table hold long keys.
pub fn valid_id(segment: &str) -> bool {
    const MAX_LEN: usize = 64;
    !segment.is_empty() && segment.len() <= MAX_LEN && !segment.contains('.')
}

/// The body of an xhr-streaming response before its first frame.
pub fn streaming_prelude() -> String {
    let mut s = "h".repeat(STREAMING_PRELUDE_LEN);
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_frames_are_json_arrays() {
        assert_eq!(message_frame(&["a"]), r#"a["a"]"#);
        assert_eq!(
            message_frame(&["MESSAGE\nx:y\n\n{\"k\":1}\0", "\n"]),
            r#"a["MESSAGE\nx:y\n\n{\"k\":1}\u0000","\n"]"#
        );
        let parsed: Vec<String> =
            serde_json::from_str(&message_frame(&["한글 \u{2028} \u{7f} \\"])[1..]).unwrap();
        assert_eq!(parsed, vec!["한글 \u{2028} \u{7f} \\".to_owned()]);
        assert!(message_frame(&["\u{2028}"]).contains("\\u2028"));
    }

    #[test]
    fn close_frames() {
        assert_eq!(Close::GO_AWAY.frame(), r#"c[3000,"Go away!"]"#);
        assert_eq!(
            Close::ANOTHER_CONNECTION.frame(),
            r#"c[2010,"Another connection still open"]"#
        );
    }

    #[test]
    fn decodes_client_payloads() {
        assert_eq!(
            decode_messages(br#"["CONNECT\n\n\u0000","x"]"#),
            Ok(vec!["CONNECT\n\n\0".to_owned(), "x".to_owned()])
        );
        assert_eq!(decode_messages(br#""one""#), Ok(vec!["one".to_owned()]));
        assert_eq!(decode_messages(b"[]"), Ok(vec![]));
        assert_eq!(decode_messages(b""), Err(PayloadError::Empty));
        assert_eq!(decode_messages(b"[\"a\""), Err(PayloadError::BrokenJson));
        assert_eq!(decode_messages(b"[1]"), Err(PayloadError::BrokenJson));
    }

    #[test]
    fn info_has_the_fields_sockjs_client_reads() {
        let v = serde_json::to_value(Info::new(7)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"websocket": true, "cookie_needed": false, "origins": ["*:*"], "entropy": 7})
        );
    }

    #[test]
    fn session_ids() {
        assert!(valid_id("123"));
        assert!(valid_id("abcdefgh"));
        assert!(!valid_id(""));
        assert!(!valid_id("a.b"));
        assert!(!valid_id(&"x".repeat(65)));
    }

    #[test]
    fn prelude_is_2048_h_and_a_newline() {
        let p = streaming_prelude();
        assert_eq!(p.len(), 2049);
        assert!(p.ends_with("hh\n"));
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;
        use crate::fuzzing::proptest_config;

        proptest! {
            #![proptest_config(proptest_config(256))]

            /// What the server frames, `sockjs-client` (a JSON parser) reads back unchanged, and
            /// the characters that proxies mangle never travel raw.
            #[test]
            fn message_frames_round_trip_and_escape_line_separators(
                messages in proptest::collection::vec(any::<String>(), 0..4),
            ) {
                let frame = message_frame(&messages);
                prop_assert!(frame.starts_with("a["));
                let parsed: Vec<String> = serde_json::from_str(&frame[1..]).unwrap();
                prop_assert_eq!(&parsed, &messages);
                prop_assert!(!frame.chars().any(needs_unicode_escape), "{}", frame);
            }

            /// What `sockjs-client` sends (`JSON.stringify` of the message array) decodes to the
            /// messages.
            #[test]
            fn client_payloads_decode_to_their_messages(
                messages in proptest::collection::vec(any::<String>(), 0..4),
            ) {
                let payload = serde_json::to_vec(&messages).unwrap();
                prop_assert_eq!(decode_messages(&payload), Ok(messages));
            }
        }
    }
}
