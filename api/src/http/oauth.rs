//! The sign-in endpoints of CONTRACT.md: `GET /oauth2/authorization/{provider}` sends the browser
//! to the provider, `GET /login/oauth2/code/{provider}` completes the sign-in, sets the
//! `accessToken` cookie and sends the browser to the frontend. Every failure after the provider is
//! known ends at the frontend too, without a cookie; an unknown or unconfigured provider is a 404
//! in the envelope.

use std::sync::Arc;

use axum::{
    extract::{FromRef, Path, Query, State, rejection::QueryRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::{GUEST_TOKEN_HEADER, guest};
use crate::db::users;
use crate::error::ApiError;
use crate::http::openapi::{BadRequest, NotFound, Unavailable};
use crate::oauth::{
    CALLBACK_PATH, Callback, STATE_COOKIE, SignIn, SignInError, provider::Provider,
};
use crate::state::AppState;

/// Name of the cookie that carries the member JWT to the web client.
pub const ACCESS_TOKEN_COOKIE: &str = "accessToken";

/// `Max-Age` of the `accessToken` cookie: the client moves it to local storage at once.
const ACCESS_TOKEN_COOKIE_MAX_AGE_SECS: u64 = 60;

/// The sign-in routes, with their OpenAPI operations.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(authorize))
        .routes(routes!(callback))
}

impl FromRef<AppState> for Arc<SignIn> {
    fn from_ref(state: &AppState) -> Self {
        state.sign_in.clone()
    }
}

/// Query of the authorization endpoint.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AuthorizeQuery {
    /// The guest token of a guest who signs in, so the member keeps the guest's nodes. A browser
    /// navigation cannot send `X-Guest-Token`, hence a query parameter.
    #[serde(rename = "guestToken")]
    #[param(rename = "guestToken")]
    guest_token: Option<String>,
}

/// Starts a sign-in: a `302` to the provider, with a cookie binding the flow to this browser.
#[utoipa::path(
    get,
    path = "/oauth2/authorization/{provider}",
    tag = "sign-in",
    operation_id = "authorize",
    summary = "Start a member sign-in",
    description = "Sends the browser to the provider (authorization code with state and PKCE). A \
                   guest who signs in passes its token (header or `guestToken`) so the member keeps \
                   the guest's nodes. When the flow cannot start, the redirect goes to the \
                   frontend instead.",
    params(
        ("provider" = String, Path, description = "`google` or `kakao`; another name, or one this \
                                                  server has not configured, is 404"),
        ("X-Guest-Token" = Option<String>, Header, description = "The token of a guest who signs in"),
        AuthorizeQuery,
    ),
    responses(
        (status = 302, description = "To the provider's authorization page (or to the frontend \
                                      when the flow cannot start)", headers(
            ("Location" = String, description = "The provider's authorization URL, or the frontend URL"),
            ("Set-Cookie" = String, description = "The flow's binding cookie (`HttpOnly`, only sent to the callback)"),
            ("Cache-Control" = String, description = "`no-store`"),
        )),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    )
)]
async fn authorize(
    State(sign_in): State<Arc<SignIn>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    query: Result<Query<AuthorizeQuery>, QueryRejection>,
) -> Response {
    let Some(provider) = sign_in.provider(&name) else {
        return unknown_provider();
    };
    let Query(query) = match query {
        Ok(q) => q,
        Err(rejection) => return ApiError::from(rejection).into_response(),
    };
    let guest_token = headers
        .get(GUEST_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(query.guest_token)
        .filter(|t| !t.trim().is_empty());
    let guest_user_id = match guest_token {
        Some(token) => resolve_guest(&sign_in, provider, token.trim()).await,
        None => None,
    };
    match sign_in.start(provider, guest_user_id).await {
        Ok(started) => {
            let binding = cookie(
                STATE_COOKIE,
                &started.state,
                &state_cookie_path(provider),
                sign_in.state_ttl().as_secs().max(1),
                true,
                sign_in.secure_cookies(),
            );
            tracing::debug!(%provider, linking_guest = guest_user_id.is_some(), "sign-in started");
            found(started.authorize_url.as_str(), &[binding])
        }
        Err(err) => {
            count(provider, err.kind());
            tracing::error!(%provider, error = %chain(&err), "sign-in could not start");
            found(sign_in.frontend_url(), &[])
        }
    }
}

/// The guest a token names, or `None` (signing in without linking) when it names nobody: a stale
/// token of a guest who already signed in must not stop the sign-in.
async fn resolve_guest(sign_in: &SignIn, provider: Provider, token: &str) -> Option<i64> {
    match users::find_guest(sign_in.db(), &guest::hash(token)).await {
        Ok(Some(guest)) => Some(guest.id),
        Ok(None) => {
            tracing::info!(%provider, "guest token names no guest; signing in without linking");
            None
        }
        Err(err) => {
            tracing::error!(%provider, error = %err, "guest lookup failed; signing in without linking");
            None
        }
    }
}

/// Completes a sign-in and sends the browser to the frontend, with the `accessToken` cookie on
/// success.
#[utoipa::path(
    get,
    path = "/login/oauth2/code/{provider}",
    tag = "sign-in",
    operation_id = "signInCallback",
    summary = "The provider's return",
    description = "Exchanges the code, finds or creates the member, and redirects to the frontend \
                   URL with `accessToken=<jwt>` (`Path=/`, `Max-Age=60`, `SameSite=Lax`, readable \
                   by script). A failed or cancelled sign-in redirects there without that cookie.",
    params(
        ("provider" = String, Path, description = "`google` or `kakao`; another name, or one this \
                                                  server has not configured, is 404"),
        ("code" = Option<String>, Query, description = "The authorization code"),
        ("state" = Option<String>, Query, description = "The state the flow started with"),
        ("error" = Option<String>, Query, description = "An OAuth2 error code, when the provider refused"),
    ),
    responses(
        (status = 302, description = "To the frontend", headers(
            ("Location" = String, description = "The frontend URL"),
            ("Set-Cookie" = String, description = "`accessToken=<jwt>` on success; the binding cookie cleared always"),
            ("Cache-Control" = String, description = "`no-store`"),
        )),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    )
)]
async fn callback(
    State(sign_in): State<Arc<SignIn>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    query: Result<Query<Callback>, QueryRejection>,
) -> Response {
    let Some(provider) = sign_in.provider(&name) else {
        return unknown_provider();
    };
    let secure = sign_in.secure_cookies();
    let path = state_cookie_path(provider);
    // The binding cookie has done its job whatever happens next.
    let clear_binding = cookie(STATE_COOKIE, "", &path, 0, true, secure);
    let callback = match query {
        Ok(Query(callback)) => callback,
        Err(_) => Callback::default(),
    };
    let bound = read_cookie(&headers, STATE_COOKIE);
    match sign_in.finish(provider, callback, bound.as_deref()).await {
        Ok(signed_in) => {
            count(provider, "success");
            tracing::info!(%provider, user_id = signed_in.user_id, "member signed in");
            let access = cookie(
                ACCESS_TOKEN_COOKIE,
                &signed_in.token,
                "/",
                ACCESS_TOKEN_COOKIE_MAX_AGE_SECS,
                false,
                secure,
            );
            found(sign_in.frontend_url(), &[clear_binding, access])
        }
        Err(err) => {
            count(provider, err.kind());
            // Infrastructure failures are ours to fix; the rest are the browser's or provider's.
            if matches!(
                err,
                SignInError::Store(_) | SignInError::Database(_) | SignInError::Sign(_)
            ) {
                tracing::error!(%provider, error = %chain(&err), "sign-in failed");
            } else {
                tracing::warn!(%provider, reason = %err, "sign-in failed");
            }
            found(sign_in.frontend_url(), &[clear_binding])
        }
    }
}

/// An infrastructure error with its causes (`redis failed: connection refused`), for the log. The
/// sources are Redis, PostgreSQL and signing errors, which carry no tokens or secrets; provider
/// failures are logged by their `Display` only.
fn chain(err: &SignInError) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Counts a finished sign-in attempt by provider and outcome.
fn count(provider: Provider, outcome: &'static str) {
    metrics::counter!(
        "mutr_sign_ins_total",
        "provider" => provider.as_str(),
        "outcome" => outcome
    )
    .increment(1);
}

fn unknown_provider() -> Response {
    ApiError::NotFound("unknown sign-in provider".to_owned()).into_response()
}

/// The binding cookie goes only to this provider's callback.
fn state_cookie_path(provider: Provider) -> String {
    format!("{CALLBACK_PATH}/{provider}")
}

/// A `302 Found` to `location` (as Spring answers), setting `cookies`, never cached.
fn found(location: &str, cookies: &[String]) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    match HeaderValue::from_str(location) {
        Ok(v) => {
            headers.insert(header::LOCATION, v);
        }
        // Unreachable for URLs that parsed at start-up or came from the oauth2 crate.
        Err(_) => {
            return ApiError::Internal(anyhow::anyhow!("unusable redirect URL")).into_response();
        }
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            headers.append(header::SET_COOKIE, v);
        }
    }
    response
}

/// A `Set-Cookie` value. Values here are base64url or JWTs, which need no quoting.
fn cookie(
    name: &str,
    value: &str,
    path: &str,
    max_age: u64,
    http_only: bool,
    secure: bool,
) -> String {
    let mut c = format!("{name}={value}; Path={path}; Max-Age={max_age}; SameSite=Lax");
    if http_only {
        c.push_str("; HttpOnly");
    }
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// The value of the cookie `name` in the request's `Cookie` headers.
fn read_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim_matches('"').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_cookie_matches_the_contract() {
        assert_eq!(
            cookie(ACCESS_TOKEN_COOKIE, "a.b.c", "/", 60, false, false),
            "accessToken=a.b.c; Path=/; Max-Age=60; SameSite=Lax"
        );
        assert_eq!(
            cookie(
                STATE_COOKIE,
                "s",
                "/login/oauth2/code/google",
                600,
                true,
                true
            ),
            "mutr_oauth2_state=s; Path=/login/oauth2/code/google; Max-Age=600; SameSite=Lax; HttpOnly; Secure"
        );
    }

    #[test]
    fn infrastructure_errors_are_logged_with_their_causes() {
        let json = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let err = SignInError::Store(crate::oauth::state::StateStoreError::Malformed(json));
        let text = chain(&err);
        assert!(
            text.starts_with("a pending authorization in redis is malformed: EOF"),
            "{text}"
        );
    }

    #[test]
    fn cookies_are_read_from_every_cookie_header() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; other=2"));
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("mutr_oauth2_state=xyz"),
        );
        assert_eq!(read_cookie(&headers, STATE_COOKIE).as_deref(), Some("xyz"));
        assert_eq!(read_cookie(&headers, "a").as_deref(), Some("1"));
        assert_eq!(read_cookie(&headers, "missing"), None);
    }
}
