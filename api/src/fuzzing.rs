//! Hostile input, one entry point per parser a client reaches: the bodies of the `cargo fuzz`
//! targets in `api/fuzz/` and of the stable property tests that run them on generated input.
//!
//! Each function takes arbitrary bytes, drives the code that serves clients (not a copy of it),
//! and panics only when an invariant breaks: a parser panics, two ways of feeding the same bytes
//! disagree, an encoded value does not decode to itself, or client input gets anything but a
//! client error. Not part of the API: the names and the meaning of the control bytes may change.

use std::time::Duration;

use axum::http::Uri;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rand::SeedableRng;

use crate::domain::coordinates::Vec3;
use crate::error::ApiError;
use crate::http::nodes::{CreateNode, VizQuery};
use crate::realtime::hub::Hub;
use crate::realtime::session::{self, SessionConfig};
use crate::realtime::sockjs;
use crate::realtime::stomp::{DecodeError, Decoder, Frame, Version};

/// A fuzz target's body: arbitrary bytes in, a panic when an invariant breaks.
pub type Target = fn(&[u8]);

/// The `cargo fuzz` targets of `api/fuzz/`, by name: each target is one line that calls its
/// function here, which the property tests also run.
pub const TARGETS: &[(&str, Target)] = &[
    ("stomp_frame", stomp_frame),
    ("stomp_session", stomp_session),
    ("sockjs_payload", sockjs_payload),
    ("node_body", node_body),
    ("viz_query", viz_query),
];

/// Every frame decoded from `chunks` pushed one after another, and the error that ended the
/// stream, if any (the decoder is not used after an error, as the sessions do).
pub fn decode_stream<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
    max_frame: usize,
    version: Version,
) -> (Vec<Frame>, Option<DecodeError>) {
    let mut decoder = Decoder::new(max_frame);
    decoder.set_version(version);
    let mut frames = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

fn version_from(b: u8) -> Version {
    [Version::V1_0, Version::V1_1, Version::V1_2][usize::from(b % 3)]
}

/// The STOMP decoder on any bytes. Control bytes: the version and frame limit, then the size of
/// the pieces the stream arrives in. Checks that the stream decodes the same whole and in
/// pieces, and that each frame with a plain command and a UTF-8 body re-encodes to itself.
pub fn stomp_frame(data: &[u8]) {
    let [control, piece, stream @ ..] = data else {
        return;
    };
    let version = version_from(*control);
    // From tiny (every frame too large) to larger than any input.
    let max_frame = 16 + usize::from(*control / 3) * 64;
    let piece = usize::from(*piece).max(1);
    let whole = decode_stream([stream], max_frame, version);
    let pieces = decode_stream(stream.chunks(piece), max_frame, version);
    assert_eq!(whole, pieces, "whole and in pieces of {piece} bytes");
    for frame in &whole.0 {
        let plain =
            !frame.command.is_empty() && frame.command.bytes().all(|b| b.is_ascii_uppercase());
        // Where headers are not escaped (STOMP 1.0, CONNECT frames) or cannot escape a carriage
        // return (1.1), a value that ends with one reads as a CRLF line end once re-encoded.
        let escapes_cr = version == Version::V1_2
            && !matches!(frame.command.as_str(), "CONNECT" | "STOMP" | "CONNECTED");
        let trailing_cr = frame.headers.iter().any(|(_, v)| v.ends_with('\r'));
        if !plain || std::str::from_utf8(&frame.body).is_err() || (trailing_cr && !escapes_cr) {
            continue;
        }
        let text = frame.encode(version);
        let mut expected = frame.clone();
        if !frame.body.is_empty() && frame.get("content-length").is_none() {
            // What the encoder adds.
            expected = expected.header("content-length", frame.body.len().to_string());
        }
        let again = decode_stream([text.as_bytes()], text.len(), version);
        assert_eq!(again, (vec![expected], None), "re-encoded: {text:?}");
    }
}

/// A client's SockJS payload (an `xhr_send` body or a SockJS WebSocket message) on any bytes:
/// what decodes is re-encoded by the server's `a[...]` framing and decodes the same; the
/// messages fed to a STOMP decoder one by one (`xhr_send`) or joined (the WebSocket transport)
/// give the same frames.
pub fn sockjs_payload(data: &[u8]) {
    let Ok(messages) = sockjs::decode_messages(data) else {
        return;
    };
    let framed = sockjs::message_frame(&messages);
    let body = framed
        .strip_prefix('a')
        .expect("a message frame starts with a");
    assert_eq!(
        sockjs::decode_messages(body.as_bytes()).as_ref(),
        Ok(&messages),
        "server framing of {messages:?}: {framed}"
    );
    let one_by_one = decode_stream(messages.iter().map(|m| m.as_bytes()), 4096, Version::V1_2);
    let joined = messages.concat();
    let together = decode_stream([joined.as_bytes()], 4096, Version::V1_2);
    assert_eq!(one_by_one, together);
}

/// A whole STOMP session on any bytes, as a client would send them over a transport: control
/// bytes pick the size of the pieces; the rest is the stream. The session must end (here: when
/// the input ends, or sooner) without panicking, and everything it sent must parse as STOMP.
pub fn stomp_session(data: &[u8]) {
    let [piece, stream @ ..] = data else {
        return;
    };
    let sent = session_output(usize::from(*piece).max(1), stream);
    let mut decoder = Decoder::new(usize::MAX);
    let mut frames = 0;
    let written = sent.iter().filter(|t| *t != "\n").count();
    for text in &sent {
        decoder.push(text.as_bytes());
        while let Some(frame) = decoder
            .next_frame()
            .unwrap_or_else(|e| panic!("the server sent a bad frame ({e}): {sent:?}"))
        {
            if frame.command == "CONNECTED" {
                let version = frame.get("version").unwrap_or("1.0");
                decoder.set_version(Version::negotiate(Some(version)).expect("a known version"));
            }
            frames += 1;
        }
    }
    // The session writes one whole frame at a time, heart-beats aside.
    assert_eq!(frames, written, "partial frames in {sent:?}");
}

/// What a STOMP session writes when a client sends `stream` in pieces of `piece` bytes and then
/// closes the transport.
pub fn session_output(piece: usize, stream: &[u8]) -> Vec<String> {
    let chunks: Vec<Bytes> = stream
        .chunks(piece.max(1))
        .map(Bytes::copy_from_slice)
        .collect();
    // A real clock (a paused one needs tokio's test-util in the library): the input ends at
    // once, so the session ends then, long before any of its timers.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async move {
        let hub = Hub::new(8);
        let config = SessionConfig {
            max_frame: 1024,
            heartbeat_send: Duration::from_secs(10),
            heartbeat_receive: Duration::from_secs(10),
            heartbeat_tolerance: 3,
            connect_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(1),
            max_subscriptions: 4,
            server_name: "mutr-api/fuzz".to_owned(),
        };
        let (tx, rx) = futures::channel::mpsc::unbounded::<String>();
        let incoming = futures::stream::iter(chunks);
        session::run(
            incoming,
            tx.sink_map_err(|_| ()),
            &hub,
            &config,
            "fuzz",
            tokio_util::sync::CancellationToken::new(),
        )
        .await;
        rx.collect::<Vec<String>>().await
    })
}

/// What the node-creation handler does with a body before it reaches the database: the JSON
/// extractor's parsing, the validation and the placement. `Ok` is where the node goes (relative
/// to its parent for a child); an error is the status the client gets.
pub fn create_node_body(data: &[u8]) -> Result<Vec3, ApiError> {
    let axum::Json(body) = axum::Json::<CreateNode>::from_bytes(data)?;
    body.validate()?;
    Ok(body.offset(&mut rand::rngs::StdRng::seed_from_u64(7)))
}

/// A node-creation body on any bytes: a client error, or a node whose position is finite.
pub fn node_body(data: &[u8]) {
    match create_node_body(data) {
        Ok(at) => assert!(
            at.x.is_finite() && at.y.is_finite() && at.z.is_finite(),
            "a stored node would sit at {at:?}"
        ),
        Err(e) => assert!(e.status().is_client_error(), "{e:?} for a client's body"),
    }
}

/// The largest `range` the viz property uses, the default of `MUTR_VIZ_MAX_RANGE`.
const VIZ_MAX_RANGE: f64 = 100_000.0;

/// What the viz handler does with a query string before it reaches the database.
pub fn viz_cube(query: &str) -> Option<Result<crate::db::nodes::Cube, ApiError>> {
    // A query that is not a valid URI never reaches the handler (hyper answers 400).
    let uri = Uri::try_from(format!("/api/v1/nodes/viz?{query}")).ok()?;
    Some(
        axum::extract::Query::<VizQuery>::try_from_uri(&uri)
            .map_err(ApiError::from)
            .and_then(|q| q.cube(VIZ_MAX_RANGE)),
    )
}

/// A viz query string on any bytes: a client error, or a finite cube within the range limit.
pub fn viz_query(data: &[u8]) {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    match viz_cube(query) {
        None => {}
        Some(Ok(cube)) => assert!(
            [cube.x, cube.y, cube.z, cube.range]
                .iter()
                .all(|v| v.is_finite())
                && (0.0..=VIZ_MAX_RANGE).contains(&cube.range),
            "{cube:?}"
        ),
        Some(Err(e)) => assert!(e.status().is_client_error(), "{e:?} for {query:?}"),
    }
}

/// Property-test settings: `default_cases` unless `PROPTEST_CASES` says otherwise, and no
/// regression files (what a run finds becomes a named test instead).
#[cfg(test)]
pub(crate) fn proptest_config(default_cases: u32) -> proptest::test_runner::Config {
    let mut config = proptest::test_runner::Config {
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default_cases;
    }
    config
}

#[cfg(test)]
mod tests {
    //! The fuzz targets' bodies on stable Rust: on arbitrary bytes, and on bytes built from the
    //! pieces of valid input, which random bytes rarely hit.

    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    /// Pieces of STOMP streams: commands, the headers the session reads (with extreme values),
    /// escapes, line ends, NUL.
    const STOMP_PIECES: &[&[u8]] = &[
        b"CONNECT\n",
        b"STOMP\n",
        b"SEND\n",
        b"SUBSCRIBE\n",
        b"UNSUBSCRIBE\n",
        b"DISCONNECT\n",
        b"ACK\n",
        b"accept-version:1.2,1.1,1.0\n",
        b"accept-version:1.0\n",
        b"accept-version:1.1\n",
        b"accept-version:9\n",
        b"heart-beat:10000,10000\n",
        b"heart-beat:0,1\n",
        b"heart-beat:18446744073709551615,18446744073709551615\n",
        b"heart-beat:1,\n",
        b"id:",
        b"destination:/topic/galaxy/public\n",
        b"destination:/topic/\n",
        b"destination:/queue/x\n",
        b"receipt:",
        b"content-length:",
        b"content-length:0\n",
        b"content-length:3\n",
        b"content-length:18446744073709551615\n",
        b"\\c",
        b"\\n",
        b"\\r",
        b"\\",
        b":",
        b"\n",
        b"\r\n",
        b"\r\r\n",
        b"\r",
        b"\0",
        "한".as_bytes(),
        b"\xff",
    ];

    fn stomp_stream() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            6 => proptest::sample::select(STOMP_PIECES).prop_map(<[u8]>::to_vec),
            1 => "[0-9]{1,4}".prop_map(String::into_bytes),
            1 => proptest::collection::vec(any::<u8>(), 1..8),
        ];
        proptest::collection::vec(piece, 0..64).prop_map(|p| p.concat())
    }

    fn with_control(control: usize) -> impl Strategy<Value = Vec<u8>> {
        (
            proptest::collection::vec(any::<u8>(), control),
            stomp_stream(),
        )
            .prop_map(|(mut c, s)| {
                c.extend(s);
                c
            })
    }

    /// A JSON value of the node-creation body's shape: each field absent, of its type with
    /// extreme values, or of another type; sometimes an extra field.
    fn node_json() -> impl Strategy<Value = Value> {
        let number = prop_oneof![
            any::<f64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            Just(json!(1.7e308)),
            Just(json!(-1e307)),
            Just(json!(5e-324)),
        ];
        let text = prop_oneof![
            any::<String>(),
            "\\PC{0,20}",
            Just(" \t\n".to_owned()),
            Just("a\u{0}b".to_owned()),
            Just("x".repeat(5001)),
            Just("한".repeat(5000)),
        ];
        let value = prop_oneof![
            4 => number,
            1 => text.clone().prop_map(Value::from),
            1 => Just(Value::Null),
            1 => any::<bool>().prop_map(Value::from),
            1 => Just(json!([1, 2])),
            1 => Just(json!({})),
        ];
        let field = proptest::option::weighted(0.7, value);
        let content = proptest::option::weighted(
            0.9,
            prop_oneof![4 => text.prop_map(Value::from), 1 => Just(json!(7))],
        );
        (
            content,
            proptest::collection::vec(field, 7),
            proptest::option::of("[a-z]{1,8}"),
        )
            .prop_map(|(content, fields, extra)| {
                let mut object = serde_json::Map::new();
                if let Some(c) = content {
                    object.insert("content".into(), c);
                }
                let names = ["parentId", "x", "y", "z", "dirX", "dirY", "dirZ"];
                for (name, v) in names.iter().zip(fields) {
                    if let Some(v) = v {
                        object.insert((*name).into(), v);
                    }
                }
                if let Some(extra) = extra {
                    object.insert(extra, json!(1));
                }
                Value::Object(object)
            })
    }

    fn viz_query_string() -> impl Strategy<Value = String> {
        let value = prop_oneof![
            any::<f64>().prop_map(|v| v.to_string()),
            any::<i64>().prop_map(|v| v.to_string()),
            Just("NaN".to_owned()),
            Just("inf".to_owned()),
            Just("-infinity".to_owned()),
            Just("1e400".to_owned()),
            Just("%20".to_owned()),
            Just(String::new()),
            "[a-z0-9.%+-]{0,8}",
        ];
        let pair = (
            proptest::sample::select(&["x", "y", "z", "range", "x", "other"][..]),
            value,
        )
            .prop_map(|(k, v)| format!("{k}={v}"));
        proptest::collection::vec(pair, 0..6).prop_map(|p| p.join("&"))
    }

    proptest! {
        #![proptest_config(proptest_config(256))]

        #[test]
        fn stomp_frame_on_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            stomp_frame(&data);
        }

        #[test]
        fn stomp_frame_on_stomp_like_streams(data in with_control(2)) {
            stomp_frame(&data);
        }

        #[test]
        fn sockjs_payload_on_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            sockjs_payload(&data);
        }

        #[test]
        fn sockjs_payload_on_json_arrays_of_stomp_pieces(
            messages in proptest::collection::vec(stomp_stream(), 0..6),
        ) {
            let messages: Vec<String> = messages
                .into_iter()
                .map(|m| String::from_utf8_lossy(&m).into_owned())
                .collect();
            sockjs_payload(&serde_json::to_vec(&messages).unwrap());
        }

        #[test]
        fn stomp_session_on_stomp_like_streams(data in with_control(1)) {
            stomp_session(&data);
        }

        #[test]
        fn node_body_on_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            node_body(&data);
        }

        #[test]
        fn node_body_on_node_shaped_json(body in node_json()) {
            node_body(&serde_json::to_vec(&body).unwrap());
        }

        #[test]
        fn viz_query_on_any_text(query in any::<String>()) {
            viz_query(query.as_bytes());
        }

        #[test]
        fn viz_query_on_query_strings(query in viz_query_string()) {
            viz_query(query.as_bytes());
        }
    }

    /// `api/fuzz` is not built by `make test` (it needs nightly): this keeps its targets, its
    /// manifest and [`TARGETS`] in step, so each target calls a function the properties run.
    #[test]
    fn every_fuzz_target_is_one_call_of_a_function_tested_here() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let mut files: Vec<String> = std::fs::read_dir(dir.join("fuzz_targets"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        let mut names: Vec<String> = TARGETS.iter().map(|(n, _)| format!("{n}.rs")).collect();
        names.sort();
        assert_eq!(files, names);
        for (name, target) in TARGETS {
            let code =
                std::fs::read_to_string(dir.join(format!("fuzz_targets/{name}.rs"))).unwrap();
            let call = format!("fuzz_target!(|data: &[u8]| mutr_api::fuzzing::{name}(data));");
            assert!(
                code.contains(&call),
                "{name}.rs does not call fuzzing::{name}"
            );
            assert!(
                manifest.contains(&format!(
                    "name = \"{name}\"\npath = \"fuzz_targets/{name}.rs\""
                )),
                "{name} is not a [[bin]] of api/fuzz/Cargo.toml"
            );
            // Short, empty and control-byte-only inputs are where slicing goes wrong.
            for input in [&b""[..], b"\0", b"\xff\xff", b"[", b"x=1&y=2&z=3"] {
                target(input);
            }
        }
    }

    /// Found by `cargo fuzz run stomp_frame` within seconds (a wrong property, not a wrong
    /// decoder): `x:a\r\r\n` is the value `a\r` under every version, but only STOMP 1.2 can send
    /// it back (escaped); 1.0 and 1.1 write the CR raw, and it reads as part of the line end.
    #[test]
    fn a_trailing_carriage_return_survives_only_in_stomp_1_2() {
        for version in [Version::V1_0, Version::V1_1, Version::V1_2] {
            let (frames, error) = decode_stream([&b"SEND\nx:a\r\r\n\n\0"[..]], 64, version);
            assert_eq!((frames[0].get("x"), error), (Some("a\r"), None));
            let text = frames[0].encode(version);
            let again = decode_stream([text.as_bytes()], 64, version).0;
            let expected = if version == Version::V1_2 { "a\r" } else { "a" };
            assert_eq!(again[0].get("x"), Some(expected), "{version:?}");
        }
        let mut data = vec![0, 1];
        data.extend_from_slice(b"SEND\nx:a\r\r\n\n\0");
        stomp_frame(&data);
    }

    /// Found by `node_body_on_node_shaped_json`: a root asked for at x = 1.7e308 was accepted,
    /// and rounding it to two decimals put it at infinity (stored, then sent as `null`).
    #[test]
    fn a_root_beyond_the_coordinate_limit_is_refused() {
        let e = create_node_body(br#"{"content":"a","x":1.7e308}"#).unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(e.to_string(), "x must be between -1e12 and 1e12");
        let at = create_node_body(br#"{"content":"a","z":-1e12}"#).unwrap();
        assert_eq!(at, Vec3::new(0.0, 0.0, -1e12));
        // A gaze direction of any finite size is only a direction.
        create_node_body(br#"{"content":"a","parentId":1,"dirX":1e308,"dirY":0,"dirZ":0}"#)
            .unwrap();
    }

    /// The session target sees what the server writes: CONNECTED, then ERROR for a SEND.
    #[test]
    fn the_session_target_sees_the_servers_frames() {
        let mut data = vec![255];
        data.extend_from_slice(b"CONNECT\naccept-version:1.2\n\n\0SEND\n\n\0");
        stomp_session(&data);
        let sent = session_output(3, &data[1..]);
        let (frames, error) = decode_stream(sent.iter().map(|t| t.as_bytes()), 4096, Version::V1_2);
        assert_eq!(error, None);
        let commands: Vec<&str> = frames.iter().map(|f| f.command.as_str()).collect();
        assert_eq!(commands, ["CONNECTED", "ERROR"], "{sent:?}");
    }
}
