//! `GET /api/v1/users/me`.

use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    auth::AuthUser,
    db::users::Role,
    error::{ApiError, ApiOk, Envelope},
    http::openapi::{Internal, Unauthorized, Unavailable},
};

/// The caller as `/users/me` describes them.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    /// Shown next to their nodes.
    pub nickname: String,
    /// Members only, when shared.
    pub email: Option<String>,
    /// `ROLE_GUEST` or `ROLE_USER`.
    pub role: Role,
    /// Members only, when known.
    pub provider: Option<String>,
    /// Whether they signed in with a provider.
    pub is_member: bool,
}

/// Describes the caller.
#[utoipa::path(
    get,
    path = "/api/v1/users/me",
    tag = "users",
    operation_id = "me",
    summary = "Who am I",
    security(("guestToken" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = Envelope<Me>),
        (status = 401, response = Unauthorized),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub async fn me(AuthUser(user): AuthUser) -> Result<ApiOk<Me>, ApiError> {
    Ok(ApiOk(Me {
        is_member: user.role == Role::User,
        nickname: user.nickname,
        email: user.email,
        role: user.role,
        provider: user.provider,
    }))
}
