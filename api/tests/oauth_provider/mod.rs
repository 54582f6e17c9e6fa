//! A stand-in OAuth2 provider for the sign-in tests: a small axum server on `127.0.0.1:0` that
//! speaks the real authorization-code protocol with PKCE (S256). `/authorize` redirects back with
//! a single-use code, `/token` checks the client, the code, the redirect URI and the code verifier
//! against the challenge, and `/userinfo` answers the bearer of an issued access token with a
//! Google- or Kakao-shaped document. `/frontend` stands for the web client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::{
    Form, Json, Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

/// Which provider the stand-in imitates: the shape of userinfo and how the client authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// Client secret by HTTP Basic; OIDC userinfo (`sub`, `email`, `name`).
    Google,
    /// Client secret in the form body; `/v2/user/me` (`id`, `kakao_account`).
    Kakao,
}

/// How the stand-in answers the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// The person consents; every endpoint works.
    Approve,
    /// The person declines: `/authorize` redirects back with `error=access_denied`.
    Deny,
    /// `/token` answers 500.
    TokenServerError,
    /// `/token` never answers.
    TokenHangs,
}

/// The person who signs in at the stand-in.
#[derive(Debug, Clone)]
pub struct Person {
    /// Their id at the provider.
    pub id: String,
    /// Their email.
    pub email: String,
    /// Their display name.
    pub name: String,
}

#[derive(Debug)]
struct Grant {
    challenge: String,
    redirect_uri: String,
    person: Person,
    used: bool,
}

#[derive(Debug)]
struct Inner {
    behaviour: Behaviour,
    person: Person,
    codes: HashMap<String, Grant>,
    tokens: HashMap<String, Person>,
    token_requests: usize,
    token_failures: Vec<String>,
    next: u64,
}

#[derive(Debug, Clone)]
struct Shared {
    flavour: Flavour,
    client_id: String,
    client_secret: String,
    inner: Arc<Mutex<Inner>>,
}

/// A running stand-in provider.
#[derive(Debug, Clone)]
pub struct StandIn {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The client id it accepts.
    pub client_id: String,
    /// The client secret it accepts.
    pub client_secret: String,
    shared: Shared,
}

impl StandIn {
    /// Starts a stand-in imitating `flavour`, whose person is `person`.
    pub async fn start(flavour: Flavour, person: Person) -> Self {
        let shared = Shared {
            flavour,
            client_id: format!("client-{flavour:?}").to_lowercase(),
            client_secret: "stand-in-secret-value".to_owned(),
            inner: Arc::new(Mutex::new(Inner {
                behaviour: Behaviour::Approve,
                person,
                codes: HashMap::new(),
                tokens: HashMap::new(),
                token_requests: 0,
                token_failures: Vec::new(),
                next: 0,
            })),
        };
        let app = Router::new()
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/userinfo", get(userinfo))
            .route("/frontend", get(|| async { "the web client" }))
            .with_state(shared.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            base,
            client_id: shared.client_id.clone(),
            client_secret: shared.client_secret.clone(),
            shared,
        }
    }

    /// Changes how the next requests are answered.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.shared.inner.lock().unwrap().behaviour = behaviour;
    }

    /// Changes who signs in next.
    pub fn set_person(&self, person: Person) {
        self.shared.inner.lock().unwrap().person = person;
    }

    /// How many requests reached `/token`.
    pub fn token_requests(&self) -> usize {
        self.shared.inner.lock().unwrap().token_requests
    }

    /// Why `/token` refused requests, in order (e.g. `invalid_grant: code already used`).
    pub fn token_failures(&self) -> Vec<String> {
        self.shared.inner.lock().unwrap().token_failures.clone()
    }

    /// The web client's URL (where the API should send the browser at the end).
    pub fn frontend_url(&self) -> String {
        format!("{}/frontend", self.base)
    }
}

#[derive(Debug, Deserialize)]
struct AuthorizeQuery {
    response_type: String,
    client_id: String,
    redirect_uri: String,
    state: String,
    scope: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

async fn authorize(State(s): State<Shared>, Query(q): Query<AuthorizeQuery>) -> Response {
    if q.client_id != s.client_id || q.response_type != "code" || q.scope.is_none() {
        return (StatusCode::BAD_REQUEST, "invalid_request").into_response();
    }
    let (Some(challenge), Some("S256")) = (q.code_challenge, q.code_challenge_method.as_deref())
    else {
        return (StatusCode::BAD_REQUEST, "PKCE S256 is required").into_response();
    };
    let mut inner = s.inner.lock().unwrap();
    let mut back = reqwest::Url::parse(&q.redirect_uri).unwrap();
    if inner.behaviour == Behaviour::Deny {
        back.query_pairs_mut()
            .append_pair("error", "access_denied")
            .append_pair("state", &q.state);
        return Redirect::to(back.as_str()).into_response();
    }
    inner.next += 1;
    let code = format!("code-{}-{}", inner.next, rand_suffix());
    let person = inner.person.clone();
    inner.codes.insert(
        code.clone(),
        Grant {
            challenge,
            redirect_uri: q.redirect_uri.clone(),
            person,
            used: false,
        },
    );
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &q.state);
    Redirect::to(back.as_str()).into_response()
}

#[derive(Debug, Deserialize)]
struct TokenForm {
    grant_type: String,
    code: String,
    redirect_uri: String,
    code_verifier: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

fn token_error(inner: &mut Inner, status: StatusCode, error: &str, why: &str) -> Response {
    inner.token_failures.push(format!("{error}: {why}"));
    (
        status,
        Json(json!({ "error": error, "error_description": why })),
    )
        .into_response()
}

async fn token(
    State(s): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    let behaviour = {
        let mut inner = s.inner.lock().unwrap();
        inner.token_requests += 1;
        inner.behaviour
    };
    match behaviour {
        Behaviour::TokenServerError => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded").into_response();
        }
        Behaviour::TokenHangs => std::future::pending::<()>().await,
        Behaviour::Approve | Behaviour::Deny => {}
    }
    let mut inner = s.inner.lock().unwrap();
    let (client_id, client_secret) = match s.flavour {
        Flavour::Google => match basic_credentials(&headers) {
            Some(pair) => pair,
            None => {
                return token_error(
                    &mut inner,
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "no basic auth",
                );
            }
        },
        Flavour::Kakao => (
            form.client_id.clone().unwrap_or_default(),
            form.client_secret.clone().unwrap_or_default(),
        ),
    };
    if client_id != s.client_id || client_secret != s.client_secret {
        return token_error(
            &mut inner,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "bad client",
        );
    }
    if form.grant_type != "authorization_code" {
        return token_error(
            &mut inner,
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant",
        );
    }
    let Some(grant) = inner.codes.get_mut(&form.code) else {
        return token_error(
            &mut inner,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown code",
        );
    };
    if grant.used {
        return token_error(
            &mut inner,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "code already used",
        );
    }
    grant.used = true;
    if grant.redirect_uri != form.redirect_uri {
        return token_error(
            &mut inner,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "redirect_uri mismatch",
        );
    }
    let verifier = form.code_verifier.unwrap_or_default();
    if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != grant.challenge {
        return token_error(
            &mut inner,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "PKCE verifier mismatch",
        );
    }
    let person = grant.person.clone();
    inner.next += 1;
    let access_token = format!("at-{}-{}", inner.next, rand_suffix());
    inner.tokens.insert(access_token.clone(), person);
    Json(json!({
        "access_token": access_token,
        "token_type": if s.flavour == Flavour::Google { "Bearer" } else { "bearer" },
        "expires_in": 3599,
    }))
    .into_response()
}

async fn userinfo(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let inner = s.inner.lock().unwrap();
    let Some(person) = bearer.and_then(|t| inner.tokens.get(t)) else {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "invalid_token" })),
        )
            .into_response();
    };
    let doc: Value = match s.flavour {
        Flavour::Google => json!({
            "sub": person.id, "email": person.email, "email_verified": true,
            "name": person.name, "picture": "https://example.invalid/p.png",
        }),
        Flavour::Kakao => json!({
            "id": person.id.parse::<u64>().expect("kakao ids are numeric"),
            "connected_at": "2026-11-26T00:00:00Z",
            "properties": { "nickname": person.name },
            "kakao_account": {
                "profile_nickname_needs_agreement": false,
                "profile": { "nickname": person.name, "is_default_nickname": false },
                "has_email": true, "email_needs_agreement": false,
                "is_email_valid": true, "is_email_verified": true, "email": person.email,
            },
        }),
    };
    Json(doc).into_response()
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let encoded = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    // RFC 6749 §2.3.1: both parts are form-urlencoded inside Basic credentials.
    let unescape = |s: &str| {
        oauth2::url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

fn rand_suffix() -> String {
    use rand::Rng;
    format!("{:016x}", rand::rng().random::<u64>())
}
