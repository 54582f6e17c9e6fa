//! The API's error type and the response envelope of CONTRACT.md: every JSON answer, success or
//! error, is `{ "success", "message", "data" }`.

use axum::{
    Json,
    body::Body,
    extract::Request,
    extract::rejection::{JsonRejection, QueryRejection},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::{
    ToSchema,
    openapi::schema::{Object, ObjectBuilder, Type},
};

// What `ApiOk` sends; the OpenAPI document's schemas of successes are derived from it.
/// The envelope of a success: `success: true`, `message: "Success"`, the payload in `data`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope<T> {
    /// Always `true`.
    #[schema(schema_with = always_true)]
    pub success: bool,
    /// Always `Success`.
    #[schema(schema_with = success_message)]
    pub message: &'static str,
    /// The payload.
    pub data: T,
}

/// The envelope of every error: `success: false`, a message, `data: null`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    /// Always `false`.
    #[schema(schema_with = always_false)]
    pub success: bool,
    /// What went wrong, in words a client can act on; never server internals.
    pub message: String,
    /// Always `null`.
    #[schema(schema_with = null)]
    pub data: (),
}

fn always_true() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .enum_values(Some([true]))
        .build()
}

fn always_false() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .enum_values(Some([false]))
        .build()
}

fn success_message() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some([SUCCESS]))
        .build()
}

fn null() -> Object {
    ObjectBuilder::new().schema_type(Type::Null).build()
}

const SUCCESS: &str = "Success";

/// A successful answer: `200` with the envelope around `data`.
#[derive(Debug)]
pub struct ApiOk<T>(pub T);

impl<T: Serialize> IntoResponse for ApiOk<T> {
    fn into_response(self) -> Response {
        Json(Envelope {
            success: true,
            message: SUCCESS,
            data: self.0,
        })
        .into_response()
    }
}

/// A successful answer whose payload is already JSON (a node as the live push carried it): the
/// same bytes as [`ApiOk`] around the parsed payload, without serialising it a second time.
#[derive(Debug)]
pub struct ApiOkJson(pub String);

impl IntoResponse for ApiOkJson {
    fn into_response(self) -> Response {
        // `Envelope`'s fields in their order, as serde writes them.
        const HEAD: &str = r#"{"success":true,"message":"Success","data":"#;
        let mut body = String::with_capacity(HEAD.len() + self.0.len() + 1);
        body.push_str(HEAD);
        body.push_str(&self.0);
        body.push('}');
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response()
    }
}

/// Everything a handler can fail with. Only the variants' `Display` reaches clients; the internal
/// variants are logged and answered with a generic message.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or a value is out of range.
    #[error("{0}")]
    BadRequest(String),
    /// No valid credentials were sent for an operation that needs a user.
    #[error("{0}")]
    Unauthorized(String),
    /// The addressed resource does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The method is not supported on this path.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The body is larger than the configured limit.
    #[error("request body too large")]
    PayloadTooLarge,
    /// The body is not `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// This user writes faster than the configured rate.
    #[error("too many requests; retry in {retry_after_secs} s")]
    RateLimited {
        /// Seconds until a write is allowed again.
        retry_after_secs: u64,
    },
    /// The server is shutting down or a dependency is unavailable.
    #[error("{0}")]
    Unavailable(String),
    /// A database failure; details are logged, never sent. Answered 503 when PostgreSQL cannot
    /// be reached (the request may be retried), 500 otherwise.
    #[error("{}", if database_unavailable(.0) { "database unavailable" } else { "internal error" })]
    Database(#[from] sqlx::Error),
    /// Any other failure; details are logged, never sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Database(e) if database_unavailable(e) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Database(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Whether `e` says PostgreSQL cannot be reached now (no connection within the acquire timeout,
/// a broken connection, a server shutting down or starting), rather than that the request or the
/// data is wrong.
pub fn database_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        // Class 08: connection exception; 57P: operator intervention (shutdown, starting up).
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

/// The envelope for an error status and message, as a complete response.
pub fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    let body = ErrorEnvelope {
        success: false,
        message: message.into(),
        data: (),
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{\"success\":false}".to_vec());
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Gives error answers that axum or tower produced without a body of ours (timeouts, limits) the
/// envelope too, so that every error a client sees has one shape.
pub async fn envelope_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let message = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "request body too large",
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => "request timed out",
            s if s.is_server_error() => "internal error",
            s => s.canonical_reason().unwrap_or("request failed"),
        };
        let mut enveloped = error_response(status, message);
        for name in [header::RETRY_AFTER, header::ALLOW] {
            if let Some(v) = response.headers().get(&name) {
                enveloped.headers_mut().insert(name, v.clone());
            }
        }
        return enveloped;
    }
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            Self::Database(e) if database_unavailable(e) => {
                tracing::warn!(error = %e, "database unavailable");
            }
            Self::Database(e) => tracing::error!(error = %e, "database error"),
            Self::Internal(e) => tracing::error!(error = format!("{e:#}"), "internal error"),
            _ => {}
        }
        let mut response = error_response(status, self.to_string());
        if let Self::RateLimited { retry_after_secs } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType(
                "expected a JSON body (Content-Type: application/json)".to_owned(),
            ),
            // Parse and shape errors describe the client's own input, never server internals.
            _ => Self::BadRequest(rejection.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::BadRequest(rejection.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_json(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn internal_errors_do_not_leak() {
        let err = ApiError::Internal(anyhow::anyhow!("password=hunter2 at db:5432"));
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = body_json(response).await;
        assert_eq!(
            body,
            serde_json::json!({"success": false, "message": "internal error", "data": null})
        );
    }

    #[tokio::test]
    async fn rate_limit_sets_retry_after() {
        let response = ApiError::RateLimited {
            retry_after_secs: 3,
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
    }

    #[tokio::test]
    async fn a_payload_sent_as_json_gets_the_same_envelope_and_bytes() {
        let payload =
            serde_json::json!({"id": 7, "content": "한 \"줄\"\n", "x": 1.5, "topic": null});
        let parsed = ApiOk(&payload).into_response();
        let raw = ApiOkJson(serde_json::to_string(&payload).unwrap()).into_response();
        assert_eq!(raw.status(), parsed.status());
        assert_eq!(
            raw.headers()[header::CONTENT_TYPE],
            parsed.headers()[header::CONTENT_TYPE]
        );
        let raw = axum::body::to_bytes(raw.into_body(), usize::MAX)
            .await
            .unwrap();
        let parsed = axum::body::to_bytes(parsed.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(raw, parsed);
    }

    #[tokio::test]
    async fn success_envelope() {
        let body = body_json(ApiOk(serde_json::json!({"a": 1})).into_response()).await;
        assert_eq!(
            body,
            serde_json::json!({"success": true, "message": "Success", "data": {"a": 1}})
        );
    }
}
