//! `POST /api/v1/auth/guest`: a new guest with a random token and a Korean nickname.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    auth::guest,
    db::users,
    domain::nickname,
    error::{ApiError, ApiOk, Envelope},
    http::openapi::{Internal, Unavailable},
    state::AppState,
};

/// What a new guest receives; the token identifies them from then on.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuestIssued {
    /// Send as `X-Guest-Token`.
    #[schema(value_type = uuid::Uuid)]
    pub guest_token: String,
    /// `형용사_명사_NNNN`.
    #[schema(example = "차분한_구름_4821")]
    pub nickname: String,
}

/// Issues a guest token; only its hash is stored.
#[utoipa::path(
    post,
    path = "/api/v1/auth/guest",
    tag = "auth",
    operation_id = "issueGuest",
    summary = "Become a guest",
    description = "A new guest with a random token and a Korean nickname. The token identifies the \
                   guest from then on (send it as `X-Guest-Token`); no body is read.",
    responses(
        (status = 200, description = "The new guest", body = Envelope<GuestIssued>),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub async fn issue_guest(State(state): State<AppState>) -> Result<ApiOk<GuestIssued>, ApiError> {
    let token = guest::new_token();
    let nickname = nickname::generate(&mut rand::rng());
    let user = users::create_guest(&state.db, &nickname, &guest::hash(&token)).await?;
    metrics::counter!("mutr_guests_created_total").increment(1);
    tracing::info!(user_id = user.id, "guest created");
    Ok(ApiOk(GuestIssued {
        guest_token: token,
        nickname: user.nickname,
    }))
}
