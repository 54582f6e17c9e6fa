//! The page at `/`: the galaxy drawn from `/viz`, live over STOMP, with a box to post as a guest.
//! Plain HTML and JavaScript compiled into the binary; no build step.

use axum::{Router, http::header, response::IntoResponse, routing::get};

use crate::state::AppState;

const INDEX_HTML: &str = include_str!("../../assets/index.html");
const GALAXY_JS: &str = include_str!("../../assets/galaxy.js");
const STOMP_JS: &str = include_str!("../../assets/stomp.js");

/// `/` and its scripts.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/assets/galaxy.js", get(galaxy_js))
        .route("/assets/stomp.js", get(stomp_js))
}

async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
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
