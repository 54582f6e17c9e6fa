//! The page at `/`: the galaxy drawn from `/viz`, live over STOMP, with a box to post as a guest.
//! Plain HTML, CSS and JavaScript compiled into the binary; no build step.
//!
//! The page carries a Content-Security-Policy that allows only what it uses: its own scripts and
//! stylesheet (nothing inline), `fetch` to the API and the push's WebSocket on the same host.

use axum::{
    Router,
    http::{HeaderMap, HeaderValue, header},
    response::IntoResponse,
    routing::get,
};

use crate::state::AppState;

const INDEX_HTML: &str = include_str!("../../assets/index.html");
const GALAXY_CSS: &str = include_str!("../../assets/galaxy.css");
const GALAXY_JS: &str = include_str!("../../assets/galaxy.js");
const STOMP_JS: &str = include_str!("../../assets/stomp.js");

/// The page's policy, before `connect-src`.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `/` and its scripts and styles.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/assets/galaxy.css", get(galaxy_css))
        .route("/assets/galaxy.js", get(galaxy_js))
        .route("/assets/stomp.js", get(stomp_js))
}

/// The page's Content-Security-Policy for a request to `host`. `connect-src 'self'` alone
/// covers `ws:`/`wss:` to the same host only in browsers that implement CSP 3, so the push's
/// WebSocket URLs on the request's host are listed too (the page opens them at
/// `location.host`). A Host header that is not a plain host and port adds nothing.
pub fn content_security_policy(host: Option<&str>) -> String {
    let mut policy = format!("{PAGE_CSP}; connect-src 'self'");
    if let Some(host) = host.filter(|h| is_plain_host(h)) {
        policy.push_str(&format!(" ws://{host} wss://{host}"));
    }
    policy
}

/// A host name, IPv4 or bracketed IPv6 address, with an optional port: nothing that could end
/// the directive or add a source.
fn is_plain_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

async fn index(headers: HeaderMap) -> impl IntoResponse {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let csp = HeaderValue::from_str(&content_security_policy(host))
        .unwrap_or_else(|_| HeaderValue::from_static(PAGE_CSP));
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CONTENT_SECURITY_POLICY, csp),
        ],
        INDEX_HTML,
    )
}

async fn galaxy_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        GALAXY_CSS,
    )
}

async fn galaxy_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        GALAXY_JS,
    )
}

async fn stomp_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        STOMP_JS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_the_push_on_the_pages_own_host_only() {
        let csp = content_security_policy(Some("galaxy.example:8080"));
        assert!(
            csp.ends_with("connect-src 'self' ws://galaxy.example:8080 wss://galaxy.example:8080"),
            "{csp}"
        );
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        for hostile in ["a.example; script-src *", "a b", "", "x'y"] {
            assert!(
                content_security_policy(Some(hostile)).ends_with("connect-src 'self'"),
                "{hostile}"
            );
        }
        assert!(content_security_policy(None).ends_with("connect-src 'self'"));
    }

    /// The policy forbids inline scripts and styles: the page must have none.
    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let html = INDEX_HTML.to_lowercase();
        assert!(!html.contains("<style"), "inline <style>");
        assert!(!html.contains("style="), "inline style attribute");
        assert_eq!(
            html.matches("<script").count(),
            html.matches("<script src=").count(),
            "inline <script>"
        );
        let inline_handler = html.match_indices(" on").any(|(i, _)| {
            let rest = &html[i + 3..];
            let name = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            name > 0 && rest[name..].trim_start().starts_with('=')
        });
        assert!(!inline_handler, "inline event handler");
    }
}
