//! STOMP 1.0–1.2 frames: an incremental decoder with a frame size limit, and the encoder.
//!
//! The decoder is fed whatever the transport delivers (one WebSocket message may hold part of a
//! frame, one frame or several) and yields whole frames. End-of-line heart-beats between frames are
//! skipped. Header values are unescaped per the negotiated version, except in `CONNECT`/`STOMP`
//! frames, which the 1.2 specification leaves unescaped for compatibility with 1.0.

use bytes::{Buf, Bytes, BytesMut};

/// A STOMP protocol version this server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V1_0,
    V1_1,
    V1_2,
}

impl Version {
    /// Every supported version, as the `version` header of an `ERROR` lists them.
    pub const SUPPORTED: &'static str = "1.0,1.1,1.2";

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    /// The highest version in a client's `accept-version` header that this server speaks. A
    /// missing header means 1.0, as the specification says.
    pub fn negotiate(accept_version: Option<&str>) -> Option<Version> {
        let Some(accepted) = accept_version else {
            return Some(Version::V1_0);
        };
        accepted
            .split(',')
            .filter_map(|v| match v.trim() {
                "1.0" => Some(Version::V1_0),
                "1.1" => Some(Version::V1_1),
                "1.2" => Some(Version::V1_2),
                _ => None,
            })
            .max()
    }
}

/// One STOMP frame. Header order is kept; when a header repeats, the first occurrence counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub command: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Frame {
    pub fn new(command: impl Into<String>) -> Self {
        Frame {
            command: command.into(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    #[must_use]
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// The value of the first header with this name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The frame as text for a text WebSocket message or a SockJS message. Header values are
    /// escaped per `version` (never in `CONNECTED`), `content-length` is added when the body is
    /// not empty and the frame has none, and the frame ends with NUL. Bodies this server sends are
    /// UTF-8; any other byte would be replaced.
    pub fn encode(&self, version: Version) -> String {
        let mut out = String::with_capacity(self.command.len() + 64 + self.body.len());
        out.push_str(&self.command);
        out.push('\n');
        let escape = version >= Version::V1_1 && !is_connect_like(&self.command);
        for (name, value) in &self.headers {
            if escape {
                escape_into(&mut out, name, version);
                out.push(':');
                escape_into(&mut out, value, version);
            } else {
                out.push_str(name);
                out.push(':');
                out.push_str(value);
            }
            out.push('\n');
        }
        if !self.body.is_empty() && self.get("content-length").is_none() {
            out.push_str("content-length:");
            out.push_str(&self.body.len().to_string());
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&String::from_utf8_lossy(&self.body));
        out.push('\0');
        out
    }
}

/// A `MESSAGE` frame as text, the same as [`Frame::encode`] gives, built without intermediate
/// copies: it is written once per subscriber and event.
pub fn encode_message(
    version: Version,
    destination: &str,
    subscription: &str,
    message_id: &str,
    content_type: &str,
    body: &str,
) -> String {
    let mut out = String::with_capacity(body.len() + destination.len() + subscription.len() + 96);
    let header = |out: &mut String, name: &str, value: &str| {
        out.push_str(name);
        out.push(':');
        if version >= Version::V1_1 {
            escape_into(out, value, version);
        } else {
            out.push_str(value);
        }
        out.push('\n');
    };
    out.push_str("MESSAGE\n");
    header(&mut out, "destination", destination);
    header(&mut out, "content-type", content_type);
    header(&mut out, "subscription", subscription);
    header(&mut out, "message-id", message_id);
    out.push_str("content-length:");
    out.push_str(&body.len().to_string());
    out.push_str("\n\n");
    out.push_str(body);
    out.push('\0');
    out
}

fn is_connect_like(command: &str) -> bool {
    matches!(command, "CONNECT" | "STOMP" | "CONNECTED")
}

fn escape_into(out: &mut String, s: &str, version: Version) {
    // Header values rarely need escaping (a destination, a subscription id, a message id): copy
    // them whole, rather than character by character, once a scan finds nothing to escape.
    if !s.bytes().any(|b| matches!(b, b'\\' | b'\n' | b':' | b'\r')) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            ':' => out.push_str("\\c"),
            '\r' if version >= Version::V1_2 => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// Why a byte stream is not a valid STOMP frame. Each is fatal for the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("header line without a colon")]
    HeaderWithoutColon,
    #[error("undefined escape sequence in a header")]
    BadEscape,
    #[error("command or header is not UTF-8")]
    NotUtf8,
    #[error("invalid content-length header")]
    BadContentLength,
    #[error("frame body is not terminated by NUL")]
    MissingNul,
}

/// Incremental STOMP decoder with a limit on the size of one frame (command, headers and body).
///
/// Bytes already scanned are not scanned again when more arrive, so a client that sends a
/// frame a byte at a time costs linear, not quadratic, work.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    max_frame: usize,
    version: Version,
    /// Where the search for the blank line after the headers resumes (the start of the first
    /// line not yet seen whole); 0 at the start of a frame.
    scan: usize,
    /// The parsed command and headers of the frame whose body is still arriving.
    head: Option<Head>,
}

#[derive(Debug)]
struct Head {
    command: String,
    headers: Vec<(String, String)>,
    /// Offset of the body in the buffer.
    body_start: usize,
    content_length: Option<usize>,
    /// Where the search for the terminating NUL resumes (frames without content-length).
    nul_scan: usize,
}

impl Decoder {
    /// A decoder that unescapes headers as STOMP 1.2 does until [`Decoder::set_version`].
    pub fn new(max_frame: usize) -> Self {
        Decoder {
            buf: BytesMut::new(),
            max_frame,
            version: Version::V1_2,
            scan: 0,
            head: None,
        }
    }

    /// The negotiated version, which decides how header values are unescaped.
    pub fn set_version(&mut self, version: Version) {
        self.version = version;
    }

    /// Appends received bytes. Call [`Decoder::next_frame`] until it returns `None` afterwards.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole frame, `None` if more bytes are needed. After an error the decoder must not
    /// be used again: the connection is to be closed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        if self.head.is_none() {
            if self.scan == 0 {
                self.skip_heartbeats();
            }
            if self.buf.is_empty() {
                return Ok(None);
            }
            let Some(headers_end) = self.find_headers_end() else {
                return self.need_more();
            };
            // A head that leaves no room for the NUL is over the limit, however it arrived: when
            // it came in pieces, `need_more` has already said so, so must a head that came whole
            // (before any effort goes into parsing it).
            if headers_end >= self.max_frame {
                return Err(DecodeError::TooLarge {
                    limit: self.max_frame,
                });
            }
            self.scan = 0;
            self.head = Some(self.parse_head(headers_end)?);
        }
        let Some(head) = self.head.as_mut() else {
            return Ok(None);
        };
        let body_end = match head.content_length {
            Some(len) => {
                let end = head
                    .body_start
                    .checked_add(len)
                    .filter(|end| end.saturating_add(1) <= self.max_frame)
                    .ok_or(DecodeError::TooLarge {
                        limit: self.max_frame,
                    })?;
                if self.buf.len() <= end {
                    return Ok(None);
                }
                if self.buf[end] != 0 {
                    return Err(DecodeError::MissingNul);
                }
                end
            }
            None => {
                let from = head.nul_scan.max(head.body_start);
                match self.buf[from..].iter().position(|&b| b == 0) {
                    Some(i) => from + i,
                    None => {
                        head.nul_scan = self.buf.len();
                        return self.need_more();
                    }
                }
            }
        };
        if body_end + 1 > self.max_frame {
            return Err(DecodeError::TooLarge {
                limit: self.max_frame,
            });
        }
        let Some(head) = self.head.take() else {
            return Ok(None);
        };
        let mut frame_bytes = self.buf.split_to(body_end + 1);
        frame_bytes.truncate(body_end);
        let body = frame_bytes.split_off(head.body_start).freeze();
        Ok(Some(Frame {
            command: head.command,
            headers: head.headers,
            body,
        }))
    }

    fn parse_head(&self, headers_end: usize) -> Result<Head, DecodeError> {
        let head =
            std::str::from_utf8(&self.buf[..headers_end]).map_err(|_| DecodeError::NotUtf8)?;
        let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let command = lines.next().unwrap_or_default().to_owned();
        let unescape = self.version >= Version::V1_1 && !is_connect_like(&command);
        let mut headers = Vec::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line
                .split_once(':')
                .ok_or(DecodeError::HeaderWithoutColon)?;
            if unescape {
                headers.push((
                    unescape_str(name, self.version)?,
                    unescape_str(value, self.version)?,
                ));
            } else {
                headers.push((name.to_owned(), value.to_owned()));
            }
        }
        let content_length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.trim().parse::<usize>())
            .transpose()
            .map_err(|_| DecodeError::BadContentLength)?;
        Ok(Head {
            command,
            headers,
            body_start: headers_end,
            content_length,
            nul_scan: headers_end,
        })
    }

    /// `Ok(None)` while the partial frame is within the limit.
    fn need_more(&self) -> Result<Option<Frame>, DecodeError> {
        if self.buf.len() > self.max_frame {
            Err(DecodeError::TooLarge {
                limit: self.max_frame,
            })
        } else {
            Ok(None)
        }
    }

    fn skip_heartbeats(&mut self) {
        loop {
            if self.buf.first() == Some(&b'\n') {
                self.buf.advance(1);
            } else if self.buf.starts_with(b"\r\n") {
                self.buf.advance(2);
            } else {
                return;
            }
        }
    }

    /// The offset just after the blank line that ends the headers; remembers how far it got.
    fn find_headers_end(&mut self) -> Option<usize> {
        let mut line_start = self.scan;
        while let Some(i) = self.buf[line_start..].iter().position(|&b| b == b'\n') {
            let line_end = line_start + i;
            let line = &self.buf[line_start..line_end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            // The first line is the command, never the blank line.
            if line.is_empty() && line_start > 0 {
                return Some(line_end + 1);
            }
            line_start = line_end + 1;
        }
        self.scan = line_start;
        None
    }
}

fn unescape_str(s: &str, version: Version) -> Result<String, DecodeError> {
    if !s.contains('\\') {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('c') => out.push(':'),
            Some('r') if version >= Version::V1_2 => out.push('\r'),
            _ => return Err(DecodeError::BadEscape),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(decoder: &mut Decoder) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(f) = decoder.next_frame().expect("valid frames") {
            frames.push(f);
        }
        frames
    }

    #[test]
    fn decodes_connect_as_stompjs_sends_it() {
        let mut d = Decoder::new(1024);
        d.push(b"CONNECT\naccept-version:1.2,1.1,1.0\nheart-beat:10000,10000\n\n\0");
        let frames = decode_all(&mut d);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].command, "CONNECT");
        assert_eq!(frames[0].get("accept-version"), Some("1.2,1.1,1.0"));
        assert_eq!(frames[0].get("heart-beat"), Some("10000,10000"));
        assert!(frames[0].body.is_empty());
    }

    #[test]
    fn connect_headers_are_not_unescaped() {
        let mut d = Decoder::new(1024);
        d.push(b"CONNECT\nAuthorization:Bearer a\\cb\n\n\0");
        assert_eq!(
            decode_all(&mut d)[0].get("Authorization"),
            Some("Bearer a\\cb")
        );
    }

    #[test]
    fn partial_frames_across_pushes_and_several_in_one_push() {
        let mut d = Decoder::new(1024);
        d.push(b"SUBSCRIBE\nid:sub-0\ndestina");
        assert_eq!(d.next_frame(), Ok(None));
        d.push(b"tion:/topic/galaxy/public\n\n");
        assert_eq!(d.next_frame(), Ok(None));
        d.push(b"\0\n\nUNSUBSCRIBE\r\nid:sub-0\r\n\r\n\0\r\n");
        let frames = decode_all(&mut d);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].get("destination"), Some("/topic/galaxy/public"));
        assert_eq!(frames[1].command, "UNSUBSCRIBE");
        assert_eq!(frames[1].get("id"), Some("sub-0"));
    }

    #[test]
    fn a_frame_sent_a_byte_at_a_time() {
        let text = b"SUBSCRIBE\r\nid:0\r\ndestination:/topic/a\r\n\r\nbody\0\nSEND\ncontent-length:2\n\nab\0";
        let mut d = Decoder::new(1024);
        let mut frames = Vec::new();
        for b in text {
            d.push(&[*b]);
            while let Some(f) = d.next_frame().unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].get("destination"), Some("/topic/a"));
        assert_eq!(&frames[0].body[..], b"body");
        assert_eq!(&frames[1].body[..], b"ab");
    }

    #[test]
    fn heartbeats_alone_yield_nothing() {
        let mut d = Decoder::new(16);
        d.push(b"\n\r\n\n");
        assert_eq!(d.next_frame(), Ok(None));
        assert!(d.buf.is_empty());
    }

    #[test]
    fn content_length_allows_nul_in_body() {
        let mut d = Decoder::new(1024);
        d.push(b"SEND\ndestination:/x\ncontent-length:3\n\na\0b\0");
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(&f.body[..], b"a\0b");
    }

    #[test]
    fn content_length_without_nul_is_an_error() {
        let mut d = Decoder::new(1024);
        d.push(b"SEND\ncontent-length:1\n\nab\0");
        assert_eq!(d.next_frame(), Err(DecodeError::MissingNul));
    }

    #[test]
    fn bad_content_length_is_an_error() {
        let mut d = Decoder::new(1024);
        d.push(b"SEND\ncontent-length:-1\n\n\0");
        assert_eq!(d.next_frame(), Err(DecodeError::BadContentLength));
    }

    #[test]
    fn unescapes_headers_per_version() {
        let mut d = Decoder::new(1024);
        d.push(b"SUBSCRIBE\nid:a\\nb\\cc\\\\d\\re\n\n\0");
        assert_eq!(decode_all(&mut d)[0].get("id"), Some("a\nb:c\\d\re"));

        let mut d = Decoder::new(1024);
        d.set_version(Version::V1_1);
        d.push(b"SUBSCRIBE\nid:a\\re\n\n\0");
        assert_eq!(d.next_frame(), Err(DecodeError::BadEscape));

        let mut d = Decoder::new(1024);
        d.set_version(Version::V1_0);
        d.push(b"SUBSCRIBE\nid:a\\re\n\n\0");
        assert_eq!(decode_all(&mut d)[0].get("id"), Some("a\\re"));
    }

    #[test]
    fn undefined_escape_is_an_error() {
        let mut d = Decoder::new(1024);
        d.push(b"SUBSCRIBE\nid:a\\t\n\n\0");
        assert_eq!(d.next_frame(), Err(DecodeError::BadEscape));
    }

    #[test]
    fn header_without_colon_is_an_error() {
        let mut d = Decoder::new(1024);
        d.push(b"SUBSCRIBE\nnonsense\n\n\0");
        assert_eq!(d.next_frame(), Err(DecodeError::HeaderWithoutColon));
    }

    #[test]
    fn first_repeated_header_wins() {
        let mut d = Decoder::new(1024);
        d.push(b"SUBSCRIBE\nid:1\nid:2\n\n\0");
        assert_eq!(decode_all(&mut d)[0].get("id"), Some("1"));
    }

    #[test]
    fn oversized_frames_are_rejected_before_they_complete() {
        let mut d = Decoder::new(32);
        d.push(b"SEND\ndestination:/x\n\n");
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&[b'a'; 32]);
        assert_eq!(d.next_frame(), Err(DecodeError::TooLarge { limit: 32 }));

        let mut d = Decoder::new(32);
        d.push(b"SEND\ncontent-length:1000\n\n");
        assert_eq!(d.next_frame(), Err(DecodeError::TooLarge { limit: 32 }));

        let mut d = Decoder::new(32);
        d.push(&[b'X'; 40]);
        assert_eq!(d.next_frame(), Err(DecodeError::TooLarge { limit: 32 }));
    }

    /// Found by `stomp_frame_on_stomp_like_streams`: a head past the limit that arrived in one
    /// piece was parsed (and reported as malformed), while the same bytes in pieces were
    /// reported too large.
    #[test]
    fn an_oversized_head_is_too_large_however_it_arrives() {
        let stream = b"SEND\nx:\xff-a-long-header-value\n\n\0";
        let limit = 24;
        for piece in [stream.len(), 7, 1] {
            let mut d = Decoder::new(limit);
            let mut result = Ok(None);
            for chunk in stream.chunks(piece) {
                d.push(chunk);
                result = d.next_frame();
                if result.is_err() {
                    break;
                }
            }
            assert_eq!(
                result,
                Err(DecodeError::TooLarge { limit }),
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn a_frame_exactly_at_the_limit_is_accepted() {
        let frame = b"SEND\n\nabcdef\0";
        let mut d = Decoder::new(frame.len());
        d.push(frame);
        assert_eq!(&d.next_frame().unwrap().unwrap().body[..], b"abcdef");
    }

    #[test]
    fn encode_escapes_and_adds_content_length() {
        let f = Frame::new("MESSAGE")
            .header("destination", "/topic/a:b")
            .body("{\"k\":\"한\"}");
        let text = f.encode(Version::V1_2);
        assert_eq!(
            text,
            "MESSAGE\ndestination:/topic/a\\cb\ncontent-length:11\n\n{\"k\":\"한\"}\0"
        );
        let mut d = Decoder::new(1024);
        d.push(text.as_bytes());
        assert_eq!(
            d.next_frame().unwrap().unwrap(),
            f.header("content-length", "11")
        );
    }

    #[test]
    fn encode_message_matches_the_generic_encoder() {
        for version in [Version::V1_0, Version::V1_1, Version::V1_2] {
            let body = r#"{"id":1,"content":"한:글"}"#;
            let generic = Frame::new("MESSAGE")
                .header("destination", "/topic/galaxy/public")
                .header("content-type", "application/json")
                .header("subscription", "sub:0")
                .header("message-id", "s-1")
                .body(body.to_owned())
                .encode(version);
            assert_eq!(
                encode_message(
                    version,
                    "/topic/galaxy/public",
                    "sub:0",
                    "s-1",
                    "application/json",
                    body
                ),
                generic
            );
        }
    }

    #[test]
    fn connected_is_never_escaped() {
        let f = Frame::new("CONNECTED").header("server", "mutr:1");
        assert_eq!(f.encode(Version::V1_2), "CONNECTED\nserver:mutr:1\n\n\0");
    }

    #[test]
    fn negotiates_the_highest_common_version() {
        assert_eq!(Version::negotiate(Some("1.2,1.1,1.0")), Some(Version::V1_2));
        assert_eq!(Version::negotiate(Some("1.1, 1.0")), Some(Version::V1_1));
        assert_eq!(Version::negotiate(None), Some(Version::V1_0));
        assert_eq!(Version::negotiate(Some("2.0")), None);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;
        use crate::fuzzing::{decode_stream, proptest_config};

        fn version() -> impl Strategy<Value = Version> {
            prop_oneof![
                Just(Version::V1_0),
                Just(Version::V1_1),
                Just(Version::V1_2)
            ]
        }

        /// A frame that `version` can carry: STOMP 1.0 cannot escape, so its header names have
        /// no colon and nothing has a line end; 1.1 cannot escape a carriage return. `CONNECT`
        /// frames are never escaped, whatever the version.
        fn frame(version: Version) -> impl Strategy<Value = Frame> {
            let command = prop_oneof![
                3 => proptest::sample::select(&["SEND", "MESSAGE", "SUBSCRIBE", "ERROR", "RECEIPT"][..]),
                1 => proptest::sample::select(&["CONNECT", "STOMP", "CONNECTED"][..]),
            ];
            (command, any::<bool>()).prop_flat_map(move |(command, empty_body)| {
                let plain = version == Version::V1_0 || is_connect_like(command);
                let (name, value) = if plain {
                    ("[^:\\r\\n\\x00]{0,12}", "[^\\r\\n\\x00]{0,16}")
                } else if version == Version::V1_1 {
                    ("[^\\r]{0,12}", "[^\\r]{0,16}")
                } else {
                    (".{0,12}|[:\\\\\\r\\n]{1,4}", "(?s).{0,16}")
                };
                let header = (name, value)
                    .prop_filter("content-length is the encoder's", |(n, _)| {
                        n != "content-length"
                    });
                let body = if empty_body {
                    Just(String::new()).boxed()
                } else {
                    any::<String>().boxed()
                };
                (proptest::collection::vec(header, 0..5), body).prop_map(move |(headers, body)| {
                    Frame {
                        command: command.to_owned(),
                        headers,
                        body: Bytes::from(body),
                    }
                })
            })
        }

        /// What the decoder gives for an encoded frame: the frame, plus the content-length the
        /// encoder adds to a non-empty body.
        fn as_decoded(mut f: Frame) -> Frame {
            if !f.body.is_empty() {
                let len = f.body.len().to_string();
                f = f.header("content-length", len);
            }
            f
        }

        proptest! {
            #![proptest_config(proptest_config(256))]

            #[test]
            fn encode_then_decode_round_trips(
                (version, frames) in version().prop_flat_map(|v| {
                    (Just(v), proptest::collection::vec(frame(v), 1..4))
                }),
            ) {
                let text: String = frames.iter().map(|f| f.encode(version)).collect();
                let expected: Vec<Frame> = frames.into_iter().map(as_decoded).collect();
                prop_assert_eq!(
                    decode_stream([text.as_bytes()], text.len(), version),
                    (expected, None)
                );
            }

            /// However the transport cuts a stream (heart-beats between frames included), the
            /// frames and the error that ends it are the same as for the stream in one piece.
            #[test]
            fn a_stream_split_anywhere_decodes_the_same(
                (version, frames) in version().prop_flat_map(|v| {
                    (Just(v), proptest::collection::vec(frame(v), 1..4))
                }),
                heartbeats in proptest::collection::vec(prop_oneof![Just(""), Just("\n"), Just("\r\n\n")], 4),
                tail in proptest::collection::vec(any::<u8>(), 0..16),
                cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
                limit in prop_oneof![Just(usize::MAX), 16usize..256],
            ) {
                let mut stream = Vec::new();
                for (f, hb) in frames.iter().zip(heartbeats.iter().cycle()) {
                    stream.extend_from_slice(hb.as_bytes());
                    stream.extend_from_slice(f.encode(version).as_bytes());
                }
                stream.extend(tail);
                let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
                cuts.push(0);
                cuts.push(stream.len());
                cuts.sort_unstable();
                let pieces = cuts.windows(2).map(|w| &stream[w[0]..w[1]]);
                prop_assert_eq!(
                    decode_stream(pieces, limit, version),
                    decode_stream([&stream[..]], limit, version)
                );
            }

            #[test]
            fn encode_message_matches_the_generic_encoder_for_any_values(
                version in version(),
                destination in "(?s).{0,16}",
                subscription in "(?s).{0,16}",
                message_id in "(?s).{0,16}",
                body in any::<String>(),
            ) {
                let generic = Frame::new("MESSAGE")
                    .header("destination", destination.clone())
                    .header("content-type", "application/json")
                    .header("subscription", subscription.clone())
                    .header("message-id", message_id.clone())
                    .header("content-length", body.len().to_string())
                    .body(body.clone())
                    .encode(version);
                prop_assert_eq!(
                    encode_message(version, &destination, &subscription, &message_id, "application/json", &body),
                    generic
                );
            }
        }
    }
}
