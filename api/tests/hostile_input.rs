//! Generated hostile input against the real server over a fresh database: any node-creation body
//! and any `/viz` query gets a node (or nodes) or a 4xx envelope, never a 5xx, and the server
//! answers what `mutr_api::fuzzing` (the body of the `cargo fuzz` targets) predicts.
//!
//! The case counts keep `make test` fast; `PROPTEST_CASES=5000` runs more.

mod common;

use common::TestServer;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

/// `default_cases` unless `PROPTEST_CASES` says otherwise; no regression files (what a run finds
/// becomes a named test).
fn config(default_cases: u32) -> Config {
    let mut config = Config {
        failure_persistence: None,
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default_cases;
    }
    config
}

/// A body of the node-creation shape: each field absent, of its type with extreme values, or of
/// another type; the parent an existing node, a missing one, or nonsense.
fn node_body(parent: i64) -> impl Strategy<Value = Value> {
    let number = prop_oneof![
        any::<f64>().prop_map(Value::from),
        (-1e4f64..1e4).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(json!(1.7e308)),
        Just(json!(-1e300)),
        Just(json!(5e-324)),
        Just(json!(0)),
    ];
    let text = prop_oneof![
        "\\PC{1,40}",
        any::<String>(),
        Just(String::new()),
        Just(" \u{3000}\n".to_owned()),
        Just("a\u{0}b".to_owned()),
        Just("\u{0}".to_owned()),
        Just("'); DROP TABLE nodes; --".to_owned()),
        Just("x".repeat(5001)),
        Just("한".repeat(5000)),
    ];
    let other = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        Just(json!([1])),
        Just(json!({"a": 1})),
        "[a-z]{0,4}".prop_map(Value::from),
    ];
    let parent_id = prop_oneof![
        Just(json!(parent)),
        Just(Value::Null),
        Just(json!(i64::MAX)),
        Just(json!(-1)),
        Just(json!(1.5)),
        Just(json!(1e20)),
        Just(json!("1")),
    ];
    let coordinate = proptest::option::weighted(0.6, prop_oneof![4 => number, 1 => other.clone()]);
    (
        proptest::option::weighted(
            0.95,
            prop_oneof![6 => text.prop_map(Value::from), 1 => other],
        ),
        proptest::option::weighted(0.5, parent_id),
        proptest::collection::vec(coordinate, 6),
    )
        .prop_map(|(content, parent_id, coordinates)| {
            let mut body = serde_json::Map::new();
            if let Some(c) = content {
                body.insert("content".into(), c);
            }
            if let Some(p) = parent_id {
                body.insert("parentId".into(), p);
            }
            for (name, v) in ["x", "y", "z", "dirX", "dirY", "dirZ"]
                .iter()
                .zip(coordinates)
            {
                if let Some(v) = v {
                    body.insert((*name).into(), v);
                }
            }
            Value::Object(body)
        })
}

/// Raw bodies JSON generators do not make: broken JSON, numbers beyond `f64`, deep nesting.
fn raw_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        Just(br#"{"content":"a","x":1e400}"#.to_vec()),
        Just(br#"{"content":"a","content":"b"}"#.to_vec()),
        Just(br#"{"content":"\ud800"}"#.to_vec()),
        Just(format!("{}1{}", "[".repeat(200), "]".repeat(200)).into_bytes()),
        Just(b"null".to_vec()),
    ]
}

/// Checks one answer to a node creation: a node at a finite position with what was asked for,
/// or the error envelope with a 4xx; and the status the fuzz target's model predicts.
async fn check_create(
    s: &TestServer,
    token: &str,
    body: Vec<u8>,
    parent: i64,
) -> Result<(), TestCaseError> {
    let response = s
        .http
        .post(s.url("/api/v1/nodes"))
        .header("X-Guest-Token", token)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    let shown = String::from_utf8_lossy(&body);
    prop_assert!(
        status == StatusCode::OK || status.is_client_error(),
        "{status} for {shown}: {answer}"
    );
    let predicted = mutr_api::fuzzing::create_node_body(&body);
    if status == StatusCode::OK {
        let node = &answer["data"];
        prop_assert_eq!(&answer["success"], &json!(true));
        for axis in ["x", "y", "z"] {
            prop_assert!(node[axis].as_f64().is_some_and(f64::is_finite), "{}", node);
        }
        prop_assert_eq!(&node["analysisStatus"], &json!("PENDING"));
        prop_assert!(node["cratedAt"].is_string(), "{}", node);
        let sent: Value = serde_json::from_slice(&body).unwrap();
        prop_assert_eq!(&node["content"], &sent["content"]);
        prop_assert!(
            predicted.is_ok(),
            "the model refused what the server took: {shown}"
        );
    } else {
        prop_assert_eq!(&answer["success"], &json!(false), "{}", shown);
        prop_assert_eq!(&answer["data"], &Value::Null, "{}", shown);
        prop_assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
        // The model knows everything but the database: only a missing parent (404) is news.
        let sent: Option<Value> = serde_json::from_slice(&body).ok();
        let missing_parent = status == StatusCode::NOT_FOUND
            && sent.is_some_and(|b| b["parentId"].as_i64() != Some(parent));
        match predicted {
            Err(e) => prop_assert_eq!(e.status().as_u16(), status.as_u16(), "{}", shown),
            Ok(_) => prop_assert!(missing_parent, "{status} for {shown}: {answer}"),
        }
    }
    Ok(())
}

/// Runs `test` on `cases` values of `strategy` (shrinking a failure to its smallest case) from a
/// blocking thread, each case on the test's runtime.
async fn run_cases<S, F, Fut>(cases: u32, strategy: S, test: F)
where
    S: Strategy + Send + 'static,
    S::Value: Send,
    F: Fn(S::Value) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), TestCaseError>>,
{
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut runner = TestRunner::new(config(cases));
        let result = runner.run(&strategy, |value| handle.block_on(test(value)));
        if let Err(e) = result {
            panic!("{e}");
        }
    })
    .await
    .unwrap();
}

/// Found by `any_node_body_gets_a_node_or_a_4xx_envelope`: PostgreSQL refuses NUL in text, so
/// such content failed in the insert and was answered 500.
#[sqlx::test]
async fn content_with_nul_is_a_400_not_a_500(pool: PgPool) {
    let s = TestServer::start(pool).await;
    let (token, _) = s.guest().await;
    let message = common::error(
        s.post_node(&token, json!({"content": "a\u{0}b"})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(message, "content must not contain NUL characters");
    s.stop().await;
}

#[sqlx::test]
async fn any_node_body_gets_a_node_or_a_4xx_envelope(pool: PgPool) {
    let s = std::sync::Arc::new(TestServer::start(pool).await);
    let (token, _) = s.guest().await;
    let root = common::ok(s.post_node(&token, json!({"content": "뿌리"})).await).await;
    let parent = root["id"].as_i64().unwrap();
    let bodies = prop_oneof![
        4 => node_body(parent).prop_map(|b| serde_json::to_vec(&b).unwrap()),
        1 => raw_body(),
    ];
    let server = s.clone();
    run_cases(192, bodies, move |body| {
        let s = server.clone();
        let token = token.clone();
        async move { check_create(&s, &token, body, parent).await }
    })
    .await;
    std::sync::Arc::into_inner(s).unwrap().stop().await;
}

/// A `/viz` query string from values clients may send: numbers of any size, spellings of
/// infinity and NaN, junk, missing and repeated parameters.
fn viz_query() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        any::<f64>().prop_map(|v| v.to_string()),
        (-1e3f64..1e3).prop_map(|v| v.to_string()),
        Just("1e308".to_owned()),
        Just("-1.7976931348623157e308".to_owned()),
        Just("NaN".to_owned()),
        Just("inf".to_owned()),
        Just("1e400".to_owned()),
        Just(String::new()),
        "[a-z0-9.%+-]{0,6}",
    ];
    let pair = (
        proptest::sample::select(&["x", "y", "z", "range", "x", "q"][..]),
        value,
    )
        .prop_map(|(k, v)| format!("{k}={v}"));
    proptest::collection::vec(pair, 0..6).prop_map(|p| p.join("&"))
}

#[sqlx::test]
async fn any_viz_query_gets_nodes_or_a_4xx_envelope(pool: PgPool) {
    let s = std::sync::Arc::new(TestServer::start(pool).await);
    let (token, _) = s.guest().await;
    common::ok(s.post_node(&token, json!({"content": "별"})).await).await;
    let server = s.clone();
    run_cases(192, viz_query(), move |query| {
        let s = server.clone();
        async move {
            let response = s
                .http
                .get(s.url(&format!("/api/v1/nodes/viz?{query}")))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            match mutr_api::fuzzing::viz_cube(&query) {
                // reqwest sent what `Uri` refuses (hyper answers those itself).
                None => {}
                Some(Ok(_)) => {
                    prop_assert_eq!(status, StatusCode::OK, "{}: {}", query, answer);
                    prop_assert!(answer["data"].is_array(), "{}", answer);
                }
                Some(Err(e)) => {
                    prop_assert_eq!(
                        status.as_u16(),
                        e.status().as_u16(),
                        "{}: {}",
                        query,
                        answer
                    );
                    prop_assert_eq!(&answer["success"], &json!(false));
                }
            }
            prop_assert!(!status.is_server_error(), "{status} for {query}: {answer}");
            Ok(())
        }
    })
    .await;
    std::sync::Arc::into_inner(s).unwrap().stop().await;
}
