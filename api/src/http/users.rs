//! `GET /api/v1/users/me`.

use serde::Serialize;

use crate::{
    auth::AuthUser,
    db::users::Role,
    error::{ApiError, ApiOk},
};

/// The caller as `/users/me` describes them.
#[derive(Debug, Serialize)]
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
pub async fn me(AuthUser(user): AuthUser) -> Result<ApiOk<Me>, ApiError> {
    Ok(ApiOk(Me {
        is_member: user.role == Role::User,
        nickname: user.nickname,
        email: user.email,
        role: user.role,
        provider: user.provider,
    }))
}
