//! The OpenAPI 3.1 document of the REST API, generated from the handlers' `#[utoipa::path]`
//! attributes and the wire types' `ToSchema`, served at `GET /api/openapi.json`, printed by
//! `mutr-api openapi` and checked in as `api/openapi.json` (a test fails when they drift).
//!
//! Every error answer is the [`ErrorEnvelope`]; the reusable responses below name each status the
//! API answers with, so an operation lists exactly the ones its handler and extractors produce.

use std::sync::LazyLock;

use axum::{http::header, response::IntoResponse};
use utoipa::{
    Modify, OpenApi, ToResponse,
    openapi::{
        self, ContentBuilder, HeaderBuilder, RefOr, ResponseBuilder,
        response::Response,
        schema::{ObjectBuilder, Type},
        security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use crate::error::ErrorEnvelope;

/// [`crate::auth::GUEST_TOKEN_HEADER`] as the contract spells it.
const GUEST_TOKEN_HEADER_NAME: &str = "X-Guest-Token";

/// Where the document is served.
pub const PATH: &str = "/api/openapi.json";

/// What the derive cannot say: the title, the envelope's rules and the credentials.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "MUTR API",
        description = include_str!("openapi.md"),
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    modifiers(&Security),
    components(
        schemas(ErrorEnvelope),
        responses(
            BadRequest,
            Unauthorized,
            NotFound,
            MethodNotAllowed,
            PayloadTooLarge,
            UnsupportedMediaType,
            TooManyRequests,
            Internal,
            Unavailable,
        )
    ),
    tags(
        (name = "auth", description = "Guests"),
        (name = "users", description = "The caller"),
        (name = "nodes", description = "Creating nodes and reading them by region"),
        (name = "sign-in", description = "Member sign-in through an OAuth2 provider (browser redirects)"),
        (name = "health", description = "Probes and metrics"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDoc;

/// The two ways to authenticate (CONTRACT.md): a member's JWT or a guest's token.
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "guestToken",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                GUEST_TOKEN_HEADER_NAME,
                "The token from `POST /api/v1/auth/guest`.",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A member's JWT (from the `accessToken` cookie of the sign-in); wins over \
                         `X-Guest-Token` when both are sent.",
                    ))
                    .build(),
            ),
        );
    }
}

/// An error response: the envelope with `success: false` and `data: null`.
fn error(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(RefOr::Ref(openapi::Ref::from_schema_name(
                "ErrorEnvelope",
            ))))
            .build(),
    )
}

fn integer_header(description: &str) -> openapi::Header {
    HeaderBuilder::new()
        .schema(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1)),
        )
        .description(Some(description))
        .build()
}

/// The reusable error responses, each a `components.responses` entry of the document.
macro_rules! error_responses {
    ($($name:ident => $description:literal),* $(,)?) => {$(
        #[doc = $description]
        pub struct $name;

        impl<'r> ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                (stringify!($name), error($description).build().into())
            }
        }
    )*};
}

error_responses! {
    BadRequest => "Invalid input: a malformed body or query, a value out of range",
    Unauthorized => "No valid credentials: neither a known `X-Guest-Token` nor a valid bearer JWT",
    NotFound => "An unknown id, provider or route",
    PayloadTooLarge => "The body is larger than the configured limit (64 KiB by default)",
    UnsupportedMediaType => "The body is not `application/json`",
    Internal => "A server failure; the message never carries internals",
    Unavailable => "Shutting down, or the request took longer than the configured timeout",
}

/// Any method a path does not list is answered 405 with `Allow`.
pub struct MethodNotAllowed;

impl<'r> ToResponse<'r> for MethodNotAllowed {
    fn response() -> (&'r str, RefOr<Response>) {
        let header = HeaderBuilder::new()
            .schema(ObjectBuilder::new().schema_type(Type::String))
            .description(Some("The methods this path accepts"))
            .build();
        let response = error("A method this path does not accept").header("Allow", header);
        ("MethodNotAllowed", response.build().into())
    }
}

/// The caller writes faster than the configured rate.
pub struct TooManyRequests;

impl<'r> ToResponse<'r> for TooManyRequests {
    fn response() -> (&'r str, RefOr<Response>) {
        let response = error("This user writes faster than the configured rate").header(
            "Retry-After",
            integer_header("Seconds until a write is allowed again"),
        );
        ("TooManyRequests", response.build().into())
    }
}

/// The document as served and checked in: pretty JSON with a final newline.
pub fn document() -> String {
    let mut json = super::documented_routes()
        .split_for_parts()
        .1
        .to_pretty_json()
        // Plain structs of strings and maps: serialising them cannot fail.
        .expect("the OpenAPI document serialises");
    json.push('\n');
    json
}

static DOCUMENT: LazyLock<String> = LazyLock::new(document);

/// This document. It is the one JSON answer outside the envelope: tools read it as it is.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "meta",
    operation_id = "openapi",
    summary = "This OpenAPI document",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document, not enveloped", body = Object, content_type = "application/json"),
        (status = 503, response = Unavailable),
    )
)]
pub async fn serve() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    const CHECKED_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");

    fn parsed() -> Value {
        serde_json::from_str(&document()).unwrap()
    }

    #[test]
    fn checked_in_document_matches_the_code() {
        let checked_in = std::fs::read_to_string(CHECKED_IN).unwrap_or_default();
        assert!(
            checked_in == document(),
            "api/openapi.json differs from what the code generates; regenerate it with \
             `make openapi` (or `cargo run -q -p mutr-api -- openapi > api/openapi.json`) and \
             commit it"
        );
    }

    #[test]
    fn document_is_openapi_3_1_with_every_rest_route() {
        let doc = parsed();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut paths: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        paths.sort_unstable();
        assert_eq!(
            paths,
            [
                "/api/openapi.json",
                "/api/v1/auth/guest",
                "/api/v1/nodes",
                "/api/v1/nodes/viz",
                "/api/v1/users/me",
                "/healthz",
                "/login/oauth2/code/{provider}",
                "/metrics",
                "/oauth2/authorization/{provider}",
                "/readyz",
            ]
        );
    }

    #[test]
    fn node_schema_keeps_the_contract_spelling() {
        let doc = parsed();
        let node = &doc["components"]["schemas"]["Node"];
        let required: Vec<&str> = node["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for field in [
            "id",
            "content",
            "authorNickname",
            "emotion",
            "x",
            "y",
            "z",
            "rootId",
            "cratedAt",
            "analysisStatus",
        ] {
            assert!(required.contains(&field), "{field} not required: {node}");
        }
        // A local date-time without zone: `format: date-time` would demand an offset.
        assert!(node["properties"]["cratedAt"].get("format").is_none());
        assert!(node["properties"]["cratedAt"]["pattern"].is_string());
    }

    #[test]
    fn every_error_is_the_envelope_and_429_says_when_to_retry() {
        let doc = parsed();
        let responses = doc["components"]["responses"].as_object().unwrap();
        assert_eq!(responses.len(), 9);
        for (name, response) in responses {
            assert_eq!(
                response["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorEnvelope",
                "{name}"
            );
        }
        assert!(responses["TooManyRequests"]["headers"]["Retry-After"].is_object());
        let create = &doc["paths"]["/api/v1/nodes"]["post"]["responses"];
        for status in [
            "200", "400", "401", "404", "413", "415", "429", "500", "503",
        ] {
            assert!(
                create.get(status).is_some(),
                "POST /api/v1/nodes lacks {status}"
            );
        }
        let envelope = &doc["components"]["schemas"]["ErrorEnvelope"];
        assert_eq!(
            envelope["properties"]["success"]["enum"],
            serde_json::json!([false])
        );
        assert_eq!(envelope["properties"]["data"]["type"], "null");
    }
}
