//! Who is calling: members by `Authorization: Bearer <JWT>`, guests by `X-Guest-Token`. When both
//! are sent the bearer token wins. Reads are public; writes take an [`Author`] (an [`AuthUser`] that
//! may come from the guest cache).

pub mod cache;
pub mod guest;
pub mod jwt;
pub mod signing;

use axum::{extract::FromRequestParts, http::request::Parts};
use clap::Args;

use crate::{
    db::users::{self, NewMember, User},
    domain::nickname,
    error::ApiError,
    secret::Secret,
    state::AppState,
};

/// The header a guest sends its token in.
pub const GUEST_TOKEN_HEADER: &str = "x-guest-token";

/// The authenticated user of a request; rejects with 401 when there is none.
#[derive(Debug, Clone)]
pub struct AuthUser(pub User);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(token) = bearer(parts) {
            return member(state, token).await.map(AuthUser);
        }
        if let Some(token) = guest_token(parts) {
            return users::find_guest(&state.db, &guest::hash(token))
                .await?
                .map(AuthUser)
                .ok_or_else(|| ApiError::Unauthorized("unknown guest token".to_owned()));
        }
        Err(ApiError::Unauthorized("authentication required".to_owned()))
    }
}

/// The author of a write: the authenticated user and, for a guest, the hash of the token it was
/// found by. A guest may come from the [`cache::GuestCache`]; the statement that stores the write
/// checks the token again.
#[derive(Debug, Clone)]
pub struct Author {
    /// Who writes.
    pub user: User,
    /// The guest's token hash; none for a member.
    pub guest_token_hash: Option<Vec<u8>>,
}

impl FromRequestParts<AppState> for Author {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(token) = bearer(parts) {
            return Ok(Self {
                user: member(state, token).await?,
                guest_token_hash: None,
            });
        }
        let Some(token) = guest_token(parts) else {
            return Err(ApiError::Unauthorized("authentication required".to_owned()));
        };
        let hash = guest::hash(token);
        let user = match state.guest_cache.get(&hash) {
            Some(user) => user,
            None => {
                let user = users::find_guest(&state.db, &hash)
                    .await?
                    .ok_or_else(|| ApiError::Unauthorized("unknown guest token".to_owned()))?;
                state.guest_cache.insert(hash.clone(), user.clone());
                user
            }
        };
        Ok(Self {
            user,
            guest_token_hash: Some(hash),
        })
    }
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// The token of `X-Guest-Token`.
fn guest_token(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(GUEST_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Verifies a member token and finds the member, creating it on first sight.
async fn member(state: &AppState, token: &str) -> Result<User, ApiError> {
    let keys = state.jwt.as_deref().ok_or_else(|| {
        ApiError::Unauthorized("member tokens are not accepted by this server".to_owned())
    })?;
    let claims = keys.verify(token).map_err(|e| {
        tracing::debug!(error = %e, "member token rejected");
        ApiError::Unauthorized("invalid or expired token".to_owned())
    })?;
    let provider = claims.provider.as_deref();
    if let Some(user) = users::find_member(&state.db, provider, &claims.sub).await? {
        return Ok(user);
    }
    let generated;
    let nickname = match claims
        .nickname
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        Some(n) => n,
        None => {
            generated = nickname::generate(&mut rand::rng());
            &generated
        }
    };
    let user = users::create_member(
        &state.db,
        &NewMember {
            provider,
            subject: &claims.sub,
            email: claims.email.as_deref(),
            nickname,
        },
    )
    .await?;
    tracing::info!(
        user_id = user.id,
        provider = provider.unwrap_or("-"),
        "member created on first sight"
    );
    Ok(user)
}

/// Member token verification. With neither key set, only guests can write.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// HS256 secret that member JWTs are signed with.
    #[arg(long, env = "MUTR_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// RS256 public key (PEM) that member JWTs are verified with; wins over the HS256 secret.
    #[arg(long, env = "MUTR_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<String>,
}
