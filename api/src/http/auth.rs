//! `POST /api/v1/auth/guest`: a new guest with a random token and a Korean nickname.

use axum::extract::State;
use serde::Serialize;

use crate::{
    auth::guest,
    db::users,
    domain::nickname,
    error::{ApiError, ApiOk},
    state::AppState,
};

/// What a new guest receives; the token identifies them from then on.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GuestIssued {
    /// Send as `X-Guest-Token`.
    pub guest_token: String,
    /// `형용사_명사_NNNN`.
    pub nickname: String,
}

/// Issues a guest token; only its hash is stored.
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
