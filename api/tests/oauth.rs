//! Member sign-in end to end: the real API server on `127.0.0.1:0` with a fresh database, a
//! stand-in provider speaking the authorization-code protocol with PKCE, and a real HTTP client
//! that keeps cookies and follows redirects like a browser.

mod common;
mod oauth_provider;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mutr_api::auth::signing::{SigningKey, TokenSigner};
use oauth_provider::{Behaviour, Flavour, Person, StandIn};
use reqwest::StatusCode;
use reqwest::cookie::{CookieStore, Jar};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const JWT_SECRET: &str = "test-secret-for-member-tokens-0123456789";
const JWT_LIFETIME_SECS: u64 = 3600;

fn ada() -> Person {
    Person {
        id: "110169484474386276334".into(),
        email: "ada@example.com".into(),
        name: "Ada Lovelace".into(),
    }
}

fn minsu() -> Person {
    Person {
        id: "3141592653".into(),
        email: "minsu@kakao.com".into(),
        name: "민수".into(),
    }
}

/// How the API under test is wired to the stand-in.
struct Options {
    flavour: Flavour,
    person: Person,
    /// Point the token endpoint somewhere else (a closed port for "provider down").
    token_url: Option<String>,
    /// Point Redis somewhere else (a closed port for "Redis down").
    redis_url: Option<String>,
}

impl Options {
    fn google() -> Self {
        Self {
            flavour: Flavour::Google,
            person: ada(),
            token_url: None,
            redis_url: None,
        }
    }

    fn kakao() -> Self {
        Self {
            flavour: Flavour::Kakao,
            person: minsu(),
            token_url: None,
            redis_url: None,
        }
    }
}

/// The API server and the stand-in provider of one test.
struct Harness {
    api: String,
    provider: StandIn,
    provider_name: &'static str,
    pool: PgPool,
    shutdown: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Harness {
    async fn start(pool: PgPool, options: Options) -> Self {
        let provider = StandIn::start(options.flavour, options.person).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = format!("http://{}", listener.local_addr().unwrap());
        let name = match options.flavour {
            Flavour::Google => "google",
            Flavour::Kakao => "kakao",
        };
        let token_url = options
            .token_url
            .unwrap_or_else(|| format!("{}/token", provider.base));
        let mut extra: Vec<String> = [
            "--jwt-secret",
            JWT_SECRET,
            "--jwt-lifetime",
            &format!("{JWT_LIFETIME_SECS}s"),
            "--public-url",
            &api,
            "--frontend-url",
            &provider.frontend_url(),
            "--oauth-http-timeout",
            "1s",
        ]
        .map(str::to_owned)
        .to_vec();
        for (flag, value) in [
            ("client-id", provider.client_id.clone()),
            ("client-secret", provider.client_secret.clone()),
            ("auth-url", format!("{}/authorize", provider.base)),
            ("token-url", token_url),
            ("userinfo-url", format!("{}/userinfo", provider.base)),
        ] {
            extra.push(format!("--oauth-{name}-{flag}"));
            extra.push(value);
        }
        if let Some(redis) = options.redis_url {
            extra.extend(["--redis-url".to_owned(), redis]);
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let args = common::serve_args(&pool, &extra);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move { mutr_api::serve(args, listener, stop).await });
        let http = reqwest::Client::new();
        common::wait_until("the API to answer", common::DEADLINE, || {
            let url = format!("{api}/healthz");
            let http = http.clone();
            async move {
                http.get(url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
        Self {
            api,
            provider,
            provider_name: name,
            pool,
            shutdown,
        }
    }

    fn authorize_url(&self, query: &str) -> String {
        format!(
            "{}/oauth2/authorization/{}{query}",
            self.api, self.provider_name
        )
    }

    /// Signs in like a browser: follows every redirect, keeps cookies. Returns the `accessToken`
    /// cookie, if the sign-in set one, after checking that the browser ended at the frontend.
    async fn sign_in(&self, query: &str) -> Option<String> {
        let jar = Arc::new(Jar::default());
        let browser = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .build()
            .unwrap();
        let response = browser.get(self.authorize_url(query)).send().await.unwrap();
        assert_eq!(
            response.url().as_str(),
            self.provider.frontend_url(),
            "sign-in must end at the frontend"
        );
        assert_eq!(response.status(), StatusCode::OK);
        let cookies = jar.cookies(&self.api.parse().unwrap())?;
        cookies
            .to_str()
            .unwrap()
            .split("; ")
            .find_map(|c| c.strip_prefix("accessToken="))
            .map(str::to_owned)
    }

    async fn me(&self, auth: Auth<'_>) -> (StatusCode, Value) {
        let response = auth
            .apply(reqwest::Client::new().get(format!("{}/api/v1/users/me", self.api)))
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    async fn create_node(&self, auth: Auth<'_>, content: &str) -> (StatusCode, Value) {
        let response = auth
            .apply(reqwest::Client::new().post(format!("{}/api/v1/nodes", self.api)))
            .json(&json!({ "parentId": null, "content": content }))
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    async fn new_guest(&self) -> (String, String) {
        let body: Value = reqwest::Client::new()
            .post(format!("{}/api/v1/auth/guest", self.api))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let data = &body["data"];
        (
            data["guestToken"].as_str().unwrap().to_owned(),
            data["nickname"].as_str().unwrap().to_owned(),
        )
    }

    async fn member_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM users WHERE role = 'ROLE_USER'")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn user_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM users")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

#[derive(Clone, Copy)]
enum Auth<'a> {
    Bearer(&'a str),
    Guest(&'a str),
}

impl Auth<'_> {
    fn apply(self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Self::Bearer(t) => request.bearer_auth(t),
            Self::Guest(t) => request.header("X-Guest-Token", t),
        }
    }
}

fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT has three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// A client that does not follow redirects, for looking at each step.
fn step_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn location(response: &reqwest::Response) -> String {
    response.headers()[LOCATION].to_str().unwrap().to_owned()
}

fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn query_param(url: &str, name: &str) -> Option<String> {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn with_query_param(url: &str, name: &str, value: &str) -> String {
    let mut parsed = reqwest::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == name {
                value.to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    parsed.to_string()
}

/// Starts a flow step by step: returns the binding cookie (`name=value`) and the provider's
/// redirect back to the callback (with `code` and `state`).
async fn start_flow(h: &Harness) -> (String, String) {
    let client = step_client();
    let start = client.get(h.authorize_url("")).send().await.unwrap();
    assert_eq!(start.status(), StatusCode::FOUND);
    let binding = set_cookies(&start)
        .into_iter()
        .find(|c| c.starts_with("mutr_oauth2_state="))
        .expect("the authorization endpoint binds the state to the browser");
    let binding = binding.split(';').next().unwrap().to_owned();
    let at_provider = client.get(location(&start)).send().await.unwrap();
    assert_eq!(at_provider.status(), StatusCode::SEE_OTHER);
    (binding, location(&at_provider))
}

#[track_caller]
fn assert_no_access_cookie(response: &reqwest::Response, frontend: &str) {
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(location(response), frontend);
    let cookies = set_cookies(response);
    assert!(
        cookies.iter().all(|c| !c.starts_with("accessToken=")),
        "a failed sign-in set {cookies:?}"
    );
}

#[sqlx::test(migrator = "mutr_api::db::MIGRATOR")]
async fn google_sign_in_creates_the_member_once_and_its_token_works(pool: PgPool) {
    let h = Harness::start(pool, Options::google()).await;

    let token = h
        .sign_in("")
        .await
        .expect("a successful sign-in sets accessToken");
    let c = claims(&token);
    assert_eq!(c["sub"], ada().id);
    assert_eq!(c["auth"], "ROLE_USER");
    assert_eq!(c["provider"], "google");
    assert_eq!(
        c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(),
        JWT_LIFETIME_SECS
    );

    let (status, me) = h.me(Auth::Bearer(&token)).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(
        me["data"],
        json!({
            "nickname": "Ada Lovelace", "email": "ada@example.com", "role": "ROLE_USER",
            "provider": "google", "isMember": true,
        })
    );
    let (status, node) = h.create_node(Auth::Bearer(&token), "첫 기록").await;
    assert_eq!(status, StatusCode::OK, "{node}");
    assert_eq!(node["data"]["authorNickname"], "Ada Lovelace");

    // A second sign-in, from another browser, finds the same member.
    let again = h.sign_in("").await.expect("signed in again");
    assert_eq!(h.member_count().await, 1);
    assert_eq!(
        h.me(Auth::Bearer(&again)).await.1["data"]["nickname"],
        "Ada Lovelace"
    );
    assert_eq!(h.provider.token_requests(), 2);

    // Somebody else is another member.
    h.provider.set_person(Person {
        id: "2".into(),
        email: "b@example.com".into(),
        name: "Bea".into(),
    });
    let bea = h.sign_in("").await.expect("another person signs in");
    assert_eq!(h.me(Auth::Bearer(&bea)).await.1["data"]["nickname"], "Bea");
    assert_eq!(h.member_count().await, 2);
}

#[sqlx::test(migrator = "mutr_api::db::MIGRATOR")]
async fn kakao_sign_in_maps_the_kakao_profile(pool: PgPool) {
    let h = Harness::start(pool, Options::kakao()).await;
    let token = h.sign_in("").await.expect("signed in with kakao");
    assert_eq!(claims(&token)["provider"], "kakao");
    assert_eq!(claims(&token)["sub"], "3141592653");
    let (status, me) = h.me(Auth::Bearer(&token)).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["data"]["nickname"], "민수");
    assert_eq!(me["data"]["email"], "minsu@kakao.com");
    assert_eq!(me["data"]["isMember"], true);
    // Google is not configured in this server: not offered.
    let response = reqwest::Client::new()
        .get(format!("{}/oauth2/authorization/google", h.api))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[sqlx::test(migrator = "mutr_api::db::MIGRATOR")]
async fn every_step_follows_the_contract(pool: PgPool) {
    let h = Harness::start(pool, Options::google()).await;
    let client = step_client();

    let start = client.get(h.authorize_url("")).send().await.unwrap();
    assert_eq!(start.status(), StatusCode::FOUND);
    let to_provider = location(&start);
    assert!(
        to_provider.starts_with(&format!("{}/authorize?", h.provider.base)),
        "{to_provider}"
    );
    assert_eq!(
        query_param(&to_provider, "response_type").as_deref(),
        Some("code")
    );
    assert_eq!(
        query_param(&to_provider, "client_id"),
        Some(h.provider.client_id.clone())
    );
    assert_eq!(
        query_param(&to_provider, "redirect_uri"),
        Some(format!("{}/login/oauth2/code/google", h.api))
    );
    assert_eq!(
        query_param(&to_provider, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(
        query_param(&to_provider, "scope").as_deref(),
        Some("openid email profile")
    );
    let state = query_param(&to_provider, "state").unwrap();
    let binding = format!("mutr_oauth2_state={state}");
    assert_eq!(
        set_cookies(&start),
        [format!(
            "{binding}; Path=/login/oauth2/code/google; Max-Age=600; SameSite=Lax; HttpOnly"
        )]
    );
    // The pending authorization is in Redis (shared by every replica) with its TTL, keyed by a
    // hash of the state.
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut redis = redis::Client::open(redis_url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = format!(
        "mutr:oauth2:pending:{}",
        hex::encode(Sha256::digest(state.as_bytes()))
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(
        (1..=600_000).contains(&ttl),
        "pending authorization TTL {ttl} ms"
    );

    let at_provider = client.get(&to_provider).send().await.unwrap();
    let callback = location(&at_provider);
    assert!(
        callback.starts_with(&format!("{}/login/oauth2/code/google?", h.api)),
        "{callback}"
    );

    let done = client
        .get(&callback)
        .header(COOKIE, &binding)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::FOUND);
    assert_eq!(location(&done), h.provider.frontend_url());
    let cookies = set_cookies(&done);
    let access = cookies
        .iter()
        .find(|c| c.starts_with("accessToken="))
        .expect("accessToken cookie");
    let jwt = access
        .strip_prefix("accessToken=")
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    assert_eq!(
        access,
        &format!("accessToken={jwt}; Path=/; Max-Age=60; SameSite=Lax")
    );
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("mutr_oauth2_state=;") && c.contains("Max-Age=0")),
        "the binding cookie is cleared: {cookies:?}"
    );
    let exists: bool = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(
        !exists,
        "the pending authorization is taken by the callback"
    );

    // The same callback again (a replay, even with the cookie): the state is spent, so it never
    // reaches the provider and sets no cookie.
    let replay = client
        .get(&callback)
        .header(COOKIE, &binding)
        .send()
        .await
        .unwrap();
    assert_no_access_cookie(&replay, &h.provider.frontend_url());
    assert_eq!(h.provider.token_requests(), 1);
}

#[sqlx::test(migrator = "mutr_api::db::MIGRATOR")]
async fn a_replayed_code_is_refused(pool: PgPool) {
    let h = Harness::start(pool, Options::google()).await;
    let client = step_client();
    let (binding, callback) = start_flow(&h).await;
    let first = client
        .get(&callback)
        .header(COOKIE, &binding)
        .send()
        .await
        .unwrap();
    assert!(
        set_cookies(&first)
            .iter()
            .any(|c| c.starts_with("accessToken="))
    );

    // An attacker who captured the code starts a flow of their own and feeds it the old code.
    let (binding, fresh) = start_flow(&h).await;
    let old_code = query_param(&callback, "code").unwrap();
    let replay = client
        .get(with_query_param(&fresh, "code", &old_code))
        .header(COOKIE, &binding)
        .send()
        .await
        .unwrap();
    assert_no_access_cookie(&replay, &h.provider.frontend_url());
    assert_eq!(
        h.provider.token_failures(),
        ["invalid_grant: code already used"]
    );
    assert_eq!(h.member_count().await, 1);
}

#[sqlx::test(migrator = "mutr_api::db::MIGRATOR")]
async fn a_forged_or_unbound_state_is_refused(pool: PgPool) {
    let h = Harness::start(pool, Options::google()).await;
    let client = step_client();
    let frontend = h.provider.frontend_url();
    let (binding, callback) = start_flow(&h).await;

    // A state the server never issued.
    let forged = with_query_param(&callback, "state", "forged-state-value");
    let r = client
        .get(&forged)
        .header(COOKIE, "mutr_oauth2_state=forged-state-value")
        .send()
        .await
        .unwrap();
    assert_no_access_cookie(&r, &frontend);
    // A real state, but from another browser's flow (login CSRF): no binding cookie, or another.
    let r = client.get(&callback).send().await.unwrap();
    assert_no_access_cookie(&r, &frontend);
    let r = client
        .get(&callback)
        .header(COOKIE, "mutr_oauth2_state=someone-else")
        .send()
        .await
        .unwrap();
    assert_no_access_cookie(&r, &frontend);
    // A callback through the other provider's path is not even offered here.
    let other = callback.replace("/login/oauth2/code/google", "/login/oauth2/code/kakao");
    let r = client
        .get(&other)
        .header(COOKIE, &binding)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        h.provider.token_requests(),
        0,
        "refused before the code was used"
    );
    assert_eq!(h.member_count().await, 0);

    // The refusals spent nothing: the browser that started the flow still completes it.
    let r = client
        .get(&callback)
        .header(COOKIE, &binding)
        .send()
        .await
        .unwrap();
    assert!(
        set_cookies(&r)
            .iter()
            .any(|c| c.starts_with("accessToken="))
    );
}

#[sqlx::test(migrator = "mutr_api::db::MIGRATOR")]
async fn provider_errors_end_at_the_frontend_without_a_cookie(pool: PgPool) {
    let h = Harness::start(pool, Options::google()).await;

    h.provider.set_behaviour(Behaviour::Deny);
    assert_eq!(h.sign_in("").await, None, "declined consent");
    assert_eq!(h.provider.token_requests(), 0);

    h.provider.set_behaviour(Behaviour::TokenServerError);
    assert_eq!(h.sign_in("").await, None, "token endpoint 500");

    h.provider.set_behaviour(Behaviour::TokenHangs);
    let started = Instant::now();
    assert_eq!(h.sign_in("").await, None, "token endpoint never answers");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by MUTR_OAUTH_HTTP_TIMEOUT"
    );

    assert_eq!(h.member_count().await, 0);
    h.provider.set_behaviour(Behaviour::Approve);
    assert!(h.sign_in("").await.is_some(), "the provider is back");
}

#[sqlx::test(migrator = "mutr_api::db::MIGRATOR")]
async fn a_provider_that_is_down_ends_at_the_frontend_without_a_cookie(pool: PgPool) {
    // A port that was just free and now has no listener.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let options = Options {
        token_url: Some(format!("http://{closed}/token")),
        ..Options::google()
    };
    let h = Harness::start(pool, options).await;
    assert_eq!(h.sign_in("").await, None);
    assert_eq!(h.member_count().await, 0);
}

#[sqlx::test(migrator = "mutr_api::db::MIGRATOR")]
async fn expired_or_tampered_tokens_are_refused(pool: PgPool) {
    let h = Harness::start(pool, Options::google()).await;
    let token = h.sign_in("").await.unwrap();
    assert_eq!(h.me(Auth::Bearer(&token)).await.0, StatusCode::OK);

    let signer = TokenSigner::new(
        SigningKey::hs256(JWT_SECRET.as_bytes()).unwrap(),
        Duration::from_secs(JWT_LIFETIME_SECS),
    );
    let expired = signer
        .sign_at(
            "google",
            &ada().id,
            chrono::Utc::now() - chrono::Duration::hours(2),
        )
        .unwrap();
    let (status, body) = h.me(Auth::Bearer(&expired)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["success"], false);
    assert_eq!(
        h.create_node(Auth::Bearer(&expired), "x").await.0,
        StatusCode::UNAUTHORIZED
    );

    // Someone else's subject pasted into a valid token: the signature no longer matches.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut payload = claims(&token);
    payload["sub"] = json!("someone-else");
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap());
    let tampered = parts.join(".");
    assert_eq!(
        h.me(Auth::Bearer(&tampered)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.create_node(Auth::Bearer(&tampered), "x").await.0,
        StatusCode::UNAUTHORIZED
    );

    let other_key = TokenSigner::new(
        SigningKey::hs256(b"a-different-secret-of-enough-length!!").unwrap(),
        Duration::from_secs(60),
    );
    let foreign = other_key.sign("google", &ada().id).unwrap();
    assert_eq!(
        h.me(Auth::Bearer(&foreign)).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[sqlx::test(migrator = "mutr_api::db::MIGRATOR")]
async fn a_guest_who_signs_in_becomes_the_member_and_keeps_their_nodes(pool: PgPool) {
    let h = Harness::start(pool, Options::google()).await;
    let (guest_token, guest_nickname) = h.new_guest().await;
    let (status, node) = h.create_node(Auth::Guest(&guest_token), "손님의 글").await;
    assert_eq!(status, StatusCode::OK, "{node}");
    let node_id = node["data"]["id"].as_i64().unwrap();

    let token = h
        .sign_in(&format!("?guestToken={guest_token}"))
        .await
        .unwrap();
    let (_, me) = h.me(Auth::Bearer(&token)).await;
    assert_eq!(me["data"]["isMember"], true);
    assert_eq!(
        me["data"]["nickname"],
        guest_nickname.as_str(),
        "the guest keeps its nickname"
    );
    assert_eq!(me["data"]["email"], "ada@example.com");
    assert_eq!(h.user_count().await, 1, "the guest row became the member");

    let (author, role): (String, String) = sqlx::query_as(
        "SELECT u.nickname, u.role FROM nodes n JOIN users u ON u.id = n.author_id WHERE n.id = $1",
    )
    .bind(node_id)
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert_eq!(
        (author.as_str(), role.as_str()),
        (guest_nickname.as_str(), "ROLE_USER")
    );
    // The guest token no longer identifies anybody: it cannot act as the member.
    assert_eq!(
        h.me(Auth::Guest(&guest_token)).await.0,
        StatusCode::UNAUTHORIZED
    );
    // A stale guest token does not stop a later sign-in.
    assert!(
        h.sign_in(&format!("?guestToken={guest_token}"))
            .await
            .is_some()
    );
    assert_eq!(h.user_count().await, 1);
}

#[sqlx::test(migrator = "mutr_api::db::MIGRATOR")]
async fn a_guest_who_signs_in_as_an_existing_member_hands_over_their_nodes(pool: PgPool) {
    let h = Harness::start(pool, Options::google()).await;
    let member_token = h.sign_in("").await.unwrap();
    let (_, me) = h.me(Auth::Bearer(&member_token)).await;
    assert_eq!(me["data"]["nickname"], "Ada Lovelace");

    let (guest_token, _) = h.new_guest().await;
    let (_, node) = h
        .create_node(Auth::Guest(&guest_token), "로그인 전에 쓴 글")
        .await;
    let node_id = node["data"]["id"].as_i64().unwrap();
    assert_eq!(h.user_count().await, 2);

    assert!(
        h.sign_in(&format!("?guestToken={guest_token}"))
            .await
            .is_some()
    );
    let author: String = sqlx::query_scalar(
        "SELECT u.provider_user_id FROM nodes n JOIN users u ON u.id = n.author_id WHERE n.id = $1",
    )
    .bind(node_id)
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert_eq!(author, ada().id, "the node now belongs to the member");
    assert_eq!(h.user_count().await, 1, "the guest row is gone");
    assert_eq!(
        h.me(Auth::Guest(&guest_token)).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[sqlx::test(migrator = "mutr_api::db::MIGRATOR")]
async fn unknown_providers_are_404_in_the_envelope(pool: PgPool) {
    let h = Harness::start(pool, Options::google()).await;
    for path in [
        "/oauth2/authorization/github",
        "/oauth2/authorization/kakao",
        "/oauth2/authorization/Google",
        "/login/oauth2/code/github?code=a&state=b",
    ] {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", h.api))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["success"], false, "{path}");
        assert_eq!(body["data"], Value::Null, "{path}");
    }
}

#[sqlx::test(migrator = "mutr_api::db::MIGRATOR")]
async fn a_redis_outage_ends_at_the_frontend_without_a_cookie(pool: PgPool) {
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let options = Options {
        redis_url: Some(format!("redis://{closed}")),
        ..Options::google()
    };
    let h = Harness::start(pool, options).await;
    let response = step_client().get(h.authorize_url("")).send().await.unwrap();
    assert_no_access_cookie(&response, &h.provider.frontend_url());
    assert!(
        set_cookies(&response).is_empty(),
        "no state was stored, so none is bound"
    );
    assert_eq!(h.sign_in("").await, None);
    assert_eq!(h.user_count().await, 0);
}

#[sqlx::test(migrator = "mutr_api::db::MIGRATOR")]
async fn concurrent_sign_ins_of_one_person_make_one_member_holding_every_guests_nodes(
    pool: PgPool,
) {
    let h = Harness::start(pool, Options::google()).await;
    let mut guests = Vec::new();
    for i in 0..3 {
        let (token, _) = h.new_guest().await;
        let (status, node) = h.create_node(Auth::Guest(&token), &format!("글 {i}")).await;
        assert_eq!(status, StatusCode::OK, "{node}");
        guests.push((token, node["data"]["id"].as_i64().unwrap()));
    }
    let queries: Vec<String> = guests
        .iter()
        .map(|(token, _)| format!("?guestToken={token}"))
        .chain([String::new(), String::new()])
        .collect();
    let tokens = futures::future::join_all(queries.iter().map(|q| h.sign_in(q))).await;
    assert!(tokens.iter().all(Option::is_some), "every sign-in succeeds");
    assert_eq!(h.user_count().await, 1, "one member, no guest left");
    for (token, node_id) in &guests {
        let owner: String = sqlx::query_scalar(
            "SELECT u.provider_user_id FROM nodes n JOIN users u ON u.id = n.author_id WHERE n.id = $1",
        )
        .bind(node_id)
        .fetch_one(&h.pool)
        .await
        .unwrap();
        assert_eq!(owner, ada().id);
        assert_eq!(h.me(Auth::Guest(token)).await.0, StatusCode::UNAUTHORIZED);
    }
}
