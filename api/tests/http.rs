//! HTTP end to end: the real server on `127.0.0.1:0` over a fresh database, each endpoint and each
//! bad input of CONTRACT.md and issue 5.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, error, ok, procs::AiServer};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use mutr_api::auth::jwt::MemberClaims;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

const SECRET: &str = "http-test-secret-0123456789-abcdef";

fn now() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap()
}

fn member_token(sub: &str, provider: Option<&str>, exp: u64, secret: &str) -> String {
    let claims = MemberClaims {
        sub: sub.into(),
        auth: "ROLE_USER".into(),
        exp,
        iat: now(),
        provider: provider.map(Into::into),
        email: Some("ada@example.com".into()),
        nickname: Some("에이다".into()),
    };
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[sqlx::test]
async fn guest_gets_token_and_korean_nickname_and_only_a_hash_is_stored(pool: PgPool) {
    let s = TestServer::start(pool).await;
    let (token, nickname) = s.guest().await;
    assert!(uuid::Uuid::parse_str(&token).is_ok(), "{token}");
    let parts: Vec<&str> = nickname.split('_').collect();
    assert_eq!(parts.len(), 3, "{nickname}");
    assert!(
        parts[0].chars().all(|c| ('가'..='힣').contains(&c)),
        "{nickname}"
    );
    assert!(
        parts[1].chars().all(|c| ('가'..='힣').contains(&c)),
        "{nickname}"
    );
    assert!(
        parts[2].len() == 4 && parts[2].chars().all(|c| c.is_ascii_digit()),
        "{nickname}"
    );

    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT guest_token_hash FROM users WHERE nickname = $1")
            .bind(&nickname)
            .fetch_one(&s.pool)
            .await
            .unwrap();
    assert_eq!(stored, Sha256::digest(token.as_bytes()).to_vec());
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM users WHERE position($1::bytea IN guest_token_hash) > 0",
    )
    .bind(token.as_bytes())
    .fetch_one(&s.pool)
    .await
    .unwrap();
    assert_eq!(leaked, 0);

    let me = ok(s
        .http
        .get(s.url("/api/v1/users/me"))
        .header("X-Guest-Token", &token)
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(
        me,
        json!({"nickname": nickname, "email": null, "role": "ROLE_GUEST", "provider": null, "isMember": false})
    );
    s.stop().await;
}

#[sqlx::test]
async fn users_me_rejects_missing_and_unknown_credentials(pool: PgPool) {
    let s = TestServer::start_with(pool, &["--jwt-secret", SECRET]).await;
    let me = s.url("/api/v1/users/me");
    error(
        s.http.get(&me).send().await.unwrap(),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    error(
        s.http
            .get(&me)
            .header("X-Guest-Token", uuid::Uuid::new_v4().to_string())
            .send()
            .await
            .unwrap(),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    for bad in [
        member_token(
            "1",
            Some("google"),
            now() + 600,
            "not-the-secret-not-the-secret",
        ),
        member_token("1", Some("google"), now() - 3600, SECRET),
        "garbage".to_owned(),
    ] {
        error(
            s.http.get(&me).bearer_auth(bad).send().await.unwrap(),
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    s.stop().await;
}

#[sqlx::test]
async fn member_is_created_on_first_sight_and_bearer_wins(pool: PgPool) {
    let s = TestServer::start_with(pool, &["--jwt-secret", SECRET]).await;
    let (guest, _) = s.guest().await;
    let token = member_token("1077", Some("google"), now() + 600, SECRET);
    let me = s.url("/api/v1/users/me");
    let first = ok(s
        .http
        .get(&me)
        .bearer_auth(&token)
        .header("X-Guest-Token", &guest)
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(
        first,
        json!({"nickname": "에이다", "email": "ada@example.com", "role": "ROLE_USER", "provider": "google", "isMember": true})
    );
    ok(s.http.get(&me).bearer_auth(&token).send().await.unwrap()).await;
    // A token of the old server (no provider claim) finds the member by subject alone.
    let legacy = member_token("1077", None, now() + 600, SECRET);
    assert_eq!(
        ok(s.http.get(&me).bearer_auth(&legacy).send().await.unwrap()).await,
        first
    );
    let members: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE role = 'ROLE_USER'")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(members, 1);

    // Members write too.
    let node = ok(s
        .http
        .post(s.url("/api/v1/nodes"))
        .bearer_auth(&token)
        .json(&json!({"content": "member's root"}))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(node["authorNickname"], "에이다");
    s.stop().await;
}

#[sqlx::test]
async fn member_tokens_refused_without_a_key(pool: PgPool) {
    let s = TestServer::start(pool).await;
    let token = member_token("1", Some("google"), now() + 600, SECRET);
    error(
        s.http
            .get(s.url("/api/v1/users/me"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    s.stop().await;
}

#[sqlx::test]
async fn rs256_member_tokens_verify_with_the_public_key(pool: PgPool) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let public = std::fs::read_to_string(format!("{dir}/jwt-test-rs256.pub.pem")).unwrap();
    let private = std::fs::read(format!("{dir}/jwt-test-rs256.key.pem")).unwrap();
    // `=` because a PEM value starts with dashes.
    let key_flag = format!("--jwt-public-key={public}");
    let s = TestServer::start_with(pool, &[&key_flag, "--jwt-secret", SECRET]).await;
    let claims = MemberClaims {
        sub: "k-9".into(),
        auth: "ROLE_USER".into(),
        exp: now() + 600,
        iat: now(),
        provider: Some("kakao".into()),
        email: None,
        nickname: None,
    };
    let token = encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(&private).unwrap(),
    )
    .unwrap();
    let me = ok(s
        .http
        .get(s.url("/api/v1/users/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(me["provider"], "kakao");
    assert_eq!(me["role"], "ROLE_USER");
    assert!(
        me["nickname"].as_str().unwrap().split('_').count() == 3,
        "generated nickname: {me}"
    );
    // With a public key configured, an HS256 token is not accepted.
    let hs = member_token("k-9", Some("kakao"), now() + 600, SECRET);
    error(
        s.http
            .get(s.url("/api/v1/users/me"))
            .bearer_auth(hs)
            .send()
            .await
            .unwrap(),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    s.stop().await;
}

#[sqlx::test]
async fn create_root_and_child_then_broadcast_and_hand_off_after_commit(pool: PgPool) {
    let s = TestServer::start(pool).await;
    let (token, nickname) = s.guest().await;

    let root = ok(s
        .post_node(
            &token,
            json!({"content": "첫 기록", "x": 10.123, "y": -5.0, "z": null}),
        )
        .await)
    .await;
    let root_id = root["id"].as_i64().unwrap();
    assert_eq!(root["rootId"], root_id);
    assert_eq!(root["parentId"], Value::Null);
    assert_eq!(root["analysisStatus"], "PENDING");
    assert_eq!(root["mutationFilter"], "ORIGIN");
    assert_eq!(root["mutationScore"], 0.0);
    assert_eq!(root["topic"], Value::Null);
    assert_eq!(root["emotion"], "neutral");
    assert_eq!(root["authorNickname"], nickname.as_str());
    assert_eq!(
        (root["x"].as_f64(), root["y"].as_f64(), root["z"].as_f64()),
        (Some(10.12), Some(-5.0), Some(0.0))
    );
    let crated = root["cratedAt"].as_str().unwrap();
    assert!(
        chrono::NaiveDateTime::parse_from_str(crated, "%Y-%m-%dT%H:%M:%S%.3f").is_ok(),
        "{crated}"
    );

    let child = ok(s
        .post_node(
            &token,
            json!({"parentId": root_id, "content": "답글", "dirX": 0.0, "dirY": 0.0, "dirZ": 1.0}),
        )
        .await)
    .await;
    assert_eq!(child["parentId"], root_id);
    assert_eq!(child["rootId"], root_id);
    assert_eq!(child["mutationFilter"], Value::Null);
    let (dx, dy, dz) = (
        child["x"].as_f64().unwrap() - 10.12,
        child["y"].as_f64().unwrap() + 5.0,
        child["z"].as_f64().unwrap(),
    );
    let distance = (dx * dx + dy * dy + dz * dz).sqrt();
    assert!(
        (distance - 15.0).abs() < 0.02,
        "child is {distance} from its parent"
    );
    assert!(
        dz > 15.0 * 85f64.to_radians().cos() - 0.02,
        "child is within 85 degrees of the gaze: dz {dz}"
    );

    s.stop().await;
}

#[sqlx::test]
async fn create_rejects_bad_input(pool: PgPool) {
    let s = TestServer::start(pool).await;
    let (token, _) = s.guest().await;
    let nodes = s.url("/api/v1/nodes");

    for body in [
        json!({"content": ""}),
        json!({"content": " \n\t "}),
        json!({"content": "가".repeat(5001)}),
        json!({"content": 5}),
        json!({"nothing": "here"}),
        json!({"content": "x", "parentId": "one"}),
        json!({"content": "x", "x": "far"}),
        // Found by schemathesis: PostgreSQL refused U+0000 and the client got a 500.
        json!({"content": "a\u{0}b"}),
    ] {
        error(s.post_node(&token, body).await, StatusCode::BAD_REQUEST).await;
    }
    // Exactly 5000 characters (15,000 bytes of Hangul) is accepted.
    ok(s.post_node(&token, json!({"content": "가".repeat(5000)}))
        .await)
    .await;

    // Not finite: JSON cannot carry NaN, and 1e999 overflows.
    let overflow = s
        .http
        .post(&nodes)
        .header("X-Guest-Token", &token)
        .header("content-type", "application/json")
        .body(r#"{"content": "x", "x": 1e999}"#)
        .send()
        .await
        .unwrap();
    error(overflow, StatusCode::BAD_REQUEST).await;
    let malformed = s
        .http
        .post(&nodes)
        .header("X-Guest-Token", &token)
        .header("content-type", "application/json")
        .body(r#"{"content": "#)
        .send()
        .await
        .unwrap();
    error(malformed, StatusCode::BAD_REQUEST).await;

    let missing_parent = s
        .post_node(&token, json!({"content": "orphan", "parentId": 999_999}))
        .await;
    assert!(
        error(missing_parent, StatusCode::NOT_FOUND)
            .await
            .contains("999999")
    );

    let wrong_type = s
        .http
        .post(&nodes)
        .header("X-Guest-Token", &token)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    error(wrong_type, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    let huge = json!({"content": "x".repeat(70 * 1024)});
    error(
        s.post_node(&token, huge).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;

    let anonymous = s
        .http
        .post(&nodes)
        .json(&json!({"content": "who"}))
        .send()
        .await
        .unwrap();
    error(anonymous, StatusCode::UNAUTHORIZED).await;

    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM nodes")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(count, 1, "only the valid node was stored");
    s.stop().await;
}

/// Found by schemathesis: a root at `f64::MIN` overflowed while being rounded, was stored as
/// infinity and went out as `"x": null` (off the node's schema and the contract's numbers); in
/// PostgreSQL's rounding it was a 500. Roots are placed within 10^12 of the origin, exactly.
#[sqlx::test]
async fn roots_beyond_the_coordinate_limit_are_refused_and_the_limit_is_exact(pool: PgPool) {
    let s = TestServer::start(pool).await;
    let (token, _) = s.guest().await;
    for far in [
        json!({"content": "far", "x": f64::MIN}),
        json!({"content": "far", "y": f64::MAX}),
        json!({"content": "far", "z": 4.6e16}),
        json!({"content": "far", "x": 1.000_000_000_001e12}),
    ] {
        let message = error(s.post_node(&token, far).await, StatusCode::BAD_REQUEST).await;
        assert!(message.contains("must be between"), "{message}");
    }
    let edge = json!({"content": "edge", "x": -1e12, "y": 1e12, "z": 999_999_999_999.99});
    let root = ok(s.post_node(&token, edge).await).await;
    assert_eq!(root["x"].as_f64(), Some(-1e12), "{root}");
    assert_eq!(root["y"].as_f64(), Some(1e12), "{root}");
    assert_eq!(root["z"].as_f64(), Some(999_999_999_999.99), "{root}");
    let child = ok(s
        .post_node(&token, json!({"content": "near", "parentId": root["id"]}))
        .await)
    .await;
    for axis in ["x", "y", "z"] {
        assert!(child[axis].is_f64(), "{axis} of {child}");
    }
    // Reads far out are fine: nothing is rounded there.
    let url = format!("/api/v1/nodes/viz?x={}&y={}&z=0", f64::MIN, f64::MAX);
    let found = ok(s.http.get(s.url(&url)).send().await.unwrap()).await;
    assert_eq!(found, json!([]));
    s.stop().await;
}

#[sqlx::test]
async fn writes_are_rate_limited_per_user(pool: PgPool) {
    let s =
        TestServer::start_with(pool, &["--write-rate-per-sec", "1", "--write-burst", "3"]).await;
    let (alice, _) = s.guest().await;
    let (bob, _) = s.guest().await;
    for i in 0..3 {
        ok(s.post_node(&alice, json!({"content": format!("a{i}")}))
            .await)
        .await;
    }
    let limited = s.post_node(&alice, json!({"content": "a3"})).await;
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    error(limited, StatusCode::TOO_MANY_REQUESTS).await;
    ok(s.post_node(&bob, json!({"content": "b0"})).await).await;
    s.stop().await;
}

#[sqlx::test]
async fn viz_returns_the_cube_capped(pool: PgPool) {
    let s =
        TestServer::start_with(pool, &["--write-rate-per-sec", "0", "--viz-max-nodes", "3"]).await;
    let (token, _) = s.guest().await;
    let mut inside = Vec::new();
    for (x, y, z) in [
        (0.0, 0.0, 0.0),
        (199.0, -199.0, 200.0),
        (201.0, 0.0, 0.0),
        (0.0, 0.0, -250.0),
    ] {
        let node = ok(s
            .post_node(
                &token,
                json!({"content": format!("{x},{y},{z}"), "x": x, "y": y, "z": z}),
            )
            .await)
        .await;
        if x <= 200.0 && z >= -200.0 {
            inside.push(node["id"].as_i64().unwrap());
        }
    }
    let viz = |q: &str| s.http.get(s.url(&format!("/api/v1/nodes/viz?{q}"))).send();
    let found = ok(viz("x=0&y=0&z=0").await.unwrap()).await;
    let mut ids: Vec<i64> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, inside, "default range 200 is a cube");
    assert_eq!(found[0]["content"], "199,-199,200");

    let near = ok(viz("x=201&y=0&z=0&range=1").await.unwrap()).await;
    assert_eq!(near.as_array().unwrap().len(), 1);

    // The cap: 4 nodes in a big cube, 3 returned, newest first.
    let capped = ok(viz("x=0&y=0&z=0&range=1000").await.unwrap()).await;
    let capped: Vec<i64> = capped
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_i64().unwrap())
        .collect();
    assert_eq!(capped.len(), 3);
    assert!(capped.windows(2).all(|w| w[0] > w[1]), "{capped:?}");

    for bad in [
        "y=0&z=0",
        "x=a&y=0&z=0",
        "x=NaN&y=0&z=0",
        "x=0&y=inf&z=0",
        "x=0&y=0&z=0&range=-1",
        "x=0&y=0&z=0&range=1e9",
    ] {
        error(viz(bad).await.unwrap(), StatusCode::BAD_REQUEST).await;
    }
    s.stop().await;
}

#[sqlx::test]
async fn the_page_and_its_scripts_are_served(pool: PgPool) {
    let s = TestServer::start(pool).await;
    let page = s.http.get(s.url("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    for script in ["/assets/stomp.js", "/assets/galaxy.js"] {
        assert!(html.contains(script), "{script} not referenced");
        let js = s.http.get(s.url(script)).send().await.unwrap();
        assert_eq!(js.status(), StatusCode::OK);
        assert!(
            js.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/javascript")
        );
        assert!(js.text().await.unwrap().len() > 1000, "{script} is empty");
    }
    s.stop().await;
}

#[sqlx::test]
async fn unknown_routes_and_methods_get_the_envelope(pool: PgPool) {
    let s = TestServer::start(pool).await;
    error(
        s.http.get(s.url("/api/v1/nope")).send().await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    error(
        s.http.delete(s.url("/api/v1/nodes")).send().await.unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
    s.stop().await;
}

#[sqlx::test]
async fn the_openapi_document_is_served_as_generated(pool: PgPool) {
    let s = TestServer::start(pool).await;
    let response = s.http.get(s.url("/api/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let served = response.text().await.unwrap();
    assert_eq!(served, mutr_api::http::openapi::document());
    let doc: Value = serde_json::from_str(&served).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    s.stop().await;
}

async fn boom() -> &'static str {
    panic!("secret internals: password=hunter2")
}

#[tokio::test]
async fn panics_become_a_500_envelope_without_internals() {
    use axum::routing::get;
    let router = mutr_api::http::with_layers(
        axum::Router::new().route("/boom", get(boom)),
        &mutr_api::http::Limits::default(),
        &[],
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let response = reqwest::get(format!("http://{addr}/boom")).await.unwrap();
    let message = error(response, StatusCode::INTERNAL_SERVER_ERROR).await;
    assert_eq!(message, "internal error");
    server.abort();
}

/// Alive at once; not ready until the AI server of its colour answers SERVING; metrics served.
#[sqlx::test]
async fn health_readiness_metrics(pool: PgPool) {
    let s = TestServer::start(pool).await;
    assert_eq!(
        ok(s.http.get(s.url("/healthz")).send().await.unwrap()).await["status"],
        "ok"
    );
    let message = error(
        s.http.get(s.url("/readyz")).send().await.unwrap(),
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert!(
        message.starts_with("starting: waiting for the AI server"),
        "{message}"
    );
    s.guest().await;
    let metrics = s.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mutr_http_requests_total{")
                && l.contains("route=\"/api/v1/auth/guest\"")
                && l.contains("status=\"200\"")),
        "{metrics}"
    );
    assert!(
        metrics.contains("mutr_http_request_duration_seconds_bucket"),
        "{metrics}"
    );
    s.stop().await;
}

/// Redis is an accelerator: while it is unreachable the pod stays ready (failing readiness on
/// every replica at once would take the whole service down), says so in `/readyz`, and still
/// creates and serves nodes, which are analysed from PostgreSQL alone.
#[sqlx::test]
async fn an_unreachable_redis_shows_in_readiness_without_failing_it(pool: PgPool) {
    let ai = AiServer::start(&[]).await;
    let redis = format!("redis://127.0.0.1:{}", common::closed_port());
    let s = TestServer::start_with_ai(pool, &ai.url(), &["--redis-url", &redis]).await;
    let ready = ok(s.http.get(s.url("/readyz")).send().await.unwrap()).await;
    assert_eq!(ready["redis"], "unreachable", "{ready}");
    assert_eq!(ready["database"], "ok", "{ready}");
    assert_eq!(ready["ai"], "serving", "{ready}");
    let (token, _) = s.guest().await;
    let root = ok(s.post_node(&token, json!({"content": "레디스 없이"})).await).await;
    let child = ok(s
        .post_node(&token, json!({"content": "답글", "parentId": root["id"]}))
        .await)
    .await;
    common::invariants::wait_all_ended(&s.pool, Duration::from_secs(30)).await;
    let ended = common::invariants::check(&s.pool).await;
    assert_eq!(ended.completed, 2, "{ended:?}");
    let viz = ok(s
        .http
        .get(s.url("/api/v1/nodes/viz?x=0&y=0&z=0"))
        .send()
        .await
        .unwrap())
    .await;
    let ids: Vec<&Value> = viz.as_array().unwrap().iter().map(|n| &n["id"]).collect();
    assert!(
        ids.contains(&&root["id"]) && ids.contains(&&child["id"]),
        "{viz}"
    );
    s.stop().await;
}

#[sqlx::test]
async fn shutdown_fails_readiness_first_then_exits(pool: PgPool) {
    let s = TestServer::start_with(pool, &["--shutdown-grace", "3s"]).await;
    let started = Instant::now();
    s.shutdown.cancel();
    // Within the grace period the server still answers, but readiness fails.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let r = s.http.get(s.url("/readyz")).send().await.unwrap();
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(error(r, StatusCode::SERVICE_UNAVAILABLE).await, "draining");
            break;
        }
        assert!(Instant::now() < deadline, "readiness did not fail");
    }
    ok(s.http.get(s.url("/healthz")).send().await.unwrap()).await;
    s.stop().await;
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "exited before the grace period ended"
    );
}

#[sqlx::test]
async fn cors_allows_only_configured_origins(pool: PgPool) {
    let s = TestServer::start_with(
        pool,
        &["--cors-origins", "http://localhost:3000,http://app.example"],
    )
    .await;
    let preflight = |origin: &'static str| {
        s.http
            .request(reqwest::Method::OPTIONS, s.url("/api/v1/nodes"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "content-type,x-guest-token",
            )
            .send()
    };
    let allowed = preflight("http://app.example").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://app.example"
    );
    let headers = allowed.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(headers.contains("x-guest-token"), "{headers}");
    let other = preflight("http://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    s.stop().await;
}

/// Every answer (the page, its scripts, API successes and errors, the live push's) tells
/// browsers not to sniff content types and to send no referrer; every answer but the page
/// carries a policy that loads nothing; the page's policy allows its own files and its own
/// host's push, nothing inline.
#[sqlx::test]
async fn security_headers_on_every_answer(pool: PgPool) {
    let s = TestServer::start(pool).await;
    let host = s.base.trim_start_matches("http://").to_owned();
    let requests = [
        (reqwest::Method::GET, "/", StatusCode::OK),
        (reqwest::Method::GET, "/assets/galaxy.js", StatusCode::OK),
        (reqwest::Method::GET, "/assets/galaxy.css", StatusCode::OK),
        (reqwest::Method::POST, "/api/v1/auth/guest", StatusCode::OK),
        (
            reqwest::Method::GET,
            "/api/v1/nodes/viz?x=0&y=0&z=0",
            StatusCode::OK,
        ),
        (
            reqwest::Method::GET,
            "/api/v1/nodes/viz",
            StatusCode::BAD_REQUEST,
        ),
        (
            reqwest::Method::POST,
            "/api/v1/nodes",
            StatusCode::UNAUTHORIZED,
        ),
        (reqwest::Method::GET, "/nope", StatusCode::NOT_FOUND),
        (reqwest::Method::GET, "/healthz", StatusCode::OK),
        (reqwest::Method::GET, "/ws-mutr/info", StatusCode::OK),
        (
            reqwest::Method::POST,
            "/ws-mutr/000/hdr/xhr",
            StatusCode::OK,
        ),
        (
            reqwest::Method::GET,
            "/ws-mutr/websocket",
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (method, path, status) in requests {
        let r = s.http.request(method, s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), status, "{path}");
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        if path == "/" {
            assert_eq!(
                csp,
                mutr_api::http::page::content_security_policy(Some(&host)),
                "{path}"
            );
            assert!(
                csp.contains(&format!("connect-src 'self' ws://{host} wss://{host}")),
                "{csp}"
            );
        } else {
            assert_eq!(csp, mutr_api::http::API_CONTENT_SECURITY_POLICY, "{path}");
        }
    }
    let css = s
        .http
        .get(s.url("/assets/galaxy.css"))
        .send()
        .await
        .unwrap();
    assert!(
        css.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    let page = s.http.get(s.url("/")).send().await.unwrap().text().await;
    assert!(page.unwrap().contains("/assets/galaxy.css"));
    s.stop().await;
}

/// The status of a push request (xhr-polling, then the raw WebSocket's handshake) sent from a
/// page of `origin`.
async fn push_statuses(s: &TestServer, origin: &str) -> (u16, u16) {
    use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};
    let xhr = s
        .http
        .post(s.url(&format!(
            "/ws-mutr/000/{}/xhr",
            uuid::Uuid::new_v4().simple()
        )))
        .header("origin", origin)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    let ws_url = s.url("/ws-mutr/websocket").replacen("http", "ws", 1);
    let mut request = ws_url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("origin", origin.parse().unwrap());
    let ws = match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("handshake from {origin}: {e}"),
    };
    (xhr, ws)
}

/// With `MUTR_CORS_ORIGINS` set and no push origins of its own, the push lets in the same
/// browser origins as the API, and the page of its own host, and refuses others with 403.
#[sqlx::test]
async fn push_refuses_origins_outside_the_cors_origins(pool: PgPool) {
    let s = TestServer::start_with(pool, &["--cors-origins", "http://app.example"]).await;
    assert_eq!(push_statuses(&s, "http://evil.example").await, (403, 403));
    assert_eq!(push_statuses(&s, "http://app.example").await, (200, 101));
    assert_eq!(push_statuses(&s, &s.base).await, (200, 101));
    s.stop().await;
}

/// Without configured origins the push takes any page's sessions: it carries only public
/// topics and takes no credentials from cookies, so a foreign page gains nothing by it.
#[sqlx::test]
async fn push_takes_any_origin_when_none_is_configured(pool: PgPool) {
    let s = TestServer::start(pool).await;
    assert_eq!(push_statuses(&s, "http://evil.example").await, (200, 101));
    s.stop().await;
}
