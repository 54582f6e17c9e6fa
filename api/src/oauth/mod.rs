//! Member sign-in with Google and Kakao: the OAuth2 authorization-code flow with PKCE, the
//! provider's userinfo, the member found or created (a guest upgraded or merged), and the JWT the
//! web client keeps.
//!
//! [`SignIn::start`] remembers a pending authorization (see [`state`]) and sends the browser to the
//! provider; [`SignIn::finish`] checks the callback's `state` against the browser's binding cookie,
//! takes the pending authorization exactly once, exchanges the code with the PKCE verifier, reads
//! userinfo and returns a signed member token. The HTTP side is `http::oauth`.

pub mod config;
pub mod provider;
pub mod state;

use std::collections::HashMap;
use std::time::Duration;

use oauth2::basic::{BasicClient, BasicErrorResponseType, BasicRequestTokenError};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, HttpClientError, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    TokenResponse, TokenUrl, url::Url,
};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::auth::signing::{KeyError, SignError, SigningKey, TokenSigner};
use crate::db::members;
use crate::db::users::{self, NewMember};
use crate::domain::nickname;
use crate::secret::Secret;
pub use config::OAuthArgs;
use provider::{ClientAuth, Provider, ProviderUser, UserInfoError};
use state::{PendingAuthorization, StateStore, StateStoreError};

/// The browser cookie that binds a pending authorization to the browser that started it.
pub const STATE_COOKIE: &str = "mutr_oauth2_state";

/// The path the provider redirects back to, followed by the provider's name.
pub const CALLBACK_PATH: &str = "/login/oauth2/code";

type ProviderOAuthClient =
    BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// One configured provider: its OAuth2 client, its userinfo endpoint and the token signer.
#[derive(Debug)]
struct ProviderClient {
    oauth: ProviderOAuthClient,
    userinfo_url: Url,
    signer: TokenSigner,
}

/// Sign-in configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A URL option does not parse.
    #[error("{option} is not a valid URL")]
    BadUrl {
        /// The environment variable at fault.
        option: String,
        /// Why it does not parse.
        #[source]
        source: oauth2::url::ParseError,
    },
    /// A provider is configured but no key can sign member tokens.
    #[error(
        "sign-in with {0} is configured but no signing key is: set MUTR_JWT_SECRET or MUTR_JWT_PRIVATE_KEY"
    )]
    NoSigningKey(Provider),
    /// The signing key is unusable.
    #[error("the JWT signing key is unusable")]
    Key(#[from] KeyError),
    /// The two provider calls of a callback could outlast the request timeout, which would answer
    /// 503 instead of sending the browser back to the frontend.
    #[error(
        "MUTR_OAUTH_HTTP_TIMEOUT ({http:?}) must be under half of MUTR_REQUEST_TIMEOUT ({request:?})"
    )]
    TimeoutTooLong {
        /// The per-call provider timeout.
        http: Duration,
        /// The whole-request timeout.
        request: Duration,
    },
    /// The provider HTTP client could not be built (TLS roots).
    #[error("could not build the HTTP client for providers")]
    HttpClient(#[source] reqwest::Error),
}

/// Why a sign-in did not complete. The browser learns none of it (it is sent to the frontend
/// without a cookie); the `Display` is logged and never includes codes, tokens or secrets.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// The provider answered the authorization request with an error (e.g. `access_denied` when
    /// the person declined).
    #[error("the provider refused the authorization: {0}")]
    Denied(String),
    /// The callback carries no `state` or no `code`.
    #[error("the callback is missing `{0}`")]
    MissingParameter(&'static str),
    /// The callback's `state` is not the one this browser started (forged, or another browser's).
    #[error("the callback's state does not match this browser's sign-in")]
    StateMismatch,
    /// No pending authorization for this `state`: expired, or already used (a replay).
    #[error("the sign-in state is unknown, expired or already used")]
    StateUnknown,
    /// The pending authorization was started for another provider.
    #[error("the sign-in was started with {started} but returned through {returned}")]
    ProviderMismatch {
        /// The provider the flow started with.
        started: Provider,
        /// The provider in the callback path.
        returned: Provider,
    },
    /// The token endpoint refused the code (`invalid_grant` for a replayed or forged code).
    #[error("the token endpoint refused the code: {0}")]
    TokenRefused(String),
    /// The token endpoint could not be reached, timed out or answered something unreadable.
    #[error("the token exchange failed: {0}")]
    TokenExchange(&'static str),
    /// The userinfo endpoint could not be reached or timed out.
    #[error("the userinfo request failed")]
    UserInfoRequest(#[source] reqwest::Error),
    /// The userinfo endpoint answered with an error status.
    #[error("the userinfo endpoint answered {0}")]
    UserInfoStatus(reqwest::StatusCode),
    /// The userinfo document is too large or not JSON.
    #[error("the userinfo document is unreadable: {0}")]
    UserInfoBody(&'static str),
    /// The userinfo document names nobody.
    #[error(transparent)]
    UserInfo(#[from] UserInfoError),
    /// Redis failed.
    #[error(transparent)]
    Store(#[from] StateStoreError),
    /// PostgreSQL failed.
    #[error("the member could not be stored")]
    Database(#[from] sqlx::Error),
    /// The token could not be signed.
    #[error(transparent)]
    Sign(#[from] SignError),
}

impl SignInError {
    /// A short, fixed label for metrics (`mutr_sign_ins_total{outcome}`).
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Denied(_) => "denied",
            Self::MissingParameter(_) => "missing_parameter",
            Self::StateMismatch => "state_mismatch",
            Self::StateUnknown => "state_unknown",
            Self::ProviderMismatch { .. } => "provider_mismatch",
            Self::TokenRefused(_) => "token_refused",
            Self::TokenExchange(_) => "token_exchange_failed",
            Self::UserInfoRequest(_) | Self::UserInfoStatus(_) | Self::UserInfoBody(_) => {
                "userinfo_failed"
            }
            Self::UserInfo(_) => "userinfo_unusable",
            Self::Store(_) => "redis_failed",
            Self::Database(_) => "database_failed",
            Self::Sign(_) => "signing_failed",
        }
    }
}

/// Where [`SignIn::start`] sends the browser.
#[derive(Debug)]
pub struct Started {
    /// The provider's authorization URL, with client id, redirect URI, scopes, state and PKCE
    /// challenge.
    pub authorize_url: Url,
    /// The `state`, to be put in the [`STATE_COOKIE`] binding cookie.
    pub state: String,
}

/// What the provider sent back to the callback.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Callback {
    /// The authorization code.
    pub code: Option<String>,
    /// The state the flow started with.
    pub state: Option<String>,
    /// An OAuth2 error code, when the provider refused.
    pub error: Option<String>,
}

/// A completed sign-in.
#[derive(Debug)]
pub struct SignedIn {
    /// The member's `users.id`.
    pub user_id: i64,
    /// The JWT for the `accessToken` cookie.
    pub token: String,
}

/// The sign-in service shared by the HTTP handlers.
#[derive(Debug)]
pub struct SignIn {
    providers: HashMap<Provider, ProviderClient>,
    states: StateStore,
    http: reqwest::Client,
    db: PgPool,
    frontend_url: String,
    secure_cookies: bool,
    userinfo_max_bytes: usize,
}

impl SignIn {
    /// Builds the service from its options. Providers without a client id are not offered; with
    /// none configured every sign-in URL answers 404 and no signing key is needed.
    /// `request_timeout` is the server's limit on one request, which the callback's two provider
    /// calls must fit in.
    ///
    /// # Errors
    /// When a URL does not parse, a provider is configured without a usable signing key, or the
    /// provider timeout does not fit the request timeout.
    pub fn new(
        args: &OAuthArgs,
        jwt_secret: Option<&Secret>,
        request_timeout: Duration,
        db: PgPool,
        redis: redis::aio::ConnectionManager,
    ) -> Result<Self, ConfigError> {
        if args.oauth_http_timeout.saturating_mul(2) >= request_timeout {
            return Err(ConfigError::TimeoutTooLong {
                http: args.oauth_http_timeout,
                request: request_timeout,
            });
        }
        let public_url = args.public_url.trim_end_matches('/');
        parse_url("MUTR_PUBLIC_URL", public_url)?;
        let frontend_url = parse_url("MUTR_FRONTEND_URL", args.frontend_url())?;

        // Read only for a configured provider: a server that offers no sign-in needs no signing
        // key, and a verification-only secret is not held to the signing rules.
        let signing_key = |provider| match (&args.jwt_private_key, jwt_secret) {
            (Some(pem), _) => Ok(SigningKey::rs256_pem(pem.expose().as_bytes())?),
            (None, Some(secret)) => Ok(SigningKey::hs256(secret.expose().as_bytes())?),
            (None, None) => Err(ConfigError::NoSigningKey(provider)),
        };

        let mut providers = HashMap::new();
        for provider in Provider::ALL {
            let Some(settings) = args.provider(provider) else {
                continue;
            };
            let signer = TokenSigner::new(signing_key(provider)?, args.jwt_lifetime);
            let env = |what: &str| {
                format!(
                    "MUTR_OAUTH_{}_{what}",
                    provider.as_str().to_ascii_uppercase()
                )
            };
            let auth_url = AuthUrl::from_url(parse_url(&env("AUTH_URL"), &settings.auth_url)?);
            let token_url = TokenUrl::from_url(parse_url(&env("TOKEN_URL"), &settings.token_url)?);
            let userinfo_url = parse_url(&env("USERINFO_URL"), &settings.userinfo_url)?;
            let redirect = RedirectUrl::from_url(parse_url(
                "MUTR_PUBLIC_URL",
                &format!("{public_url}{CALLBACK_PATH}/{provider}"),
            )?);
            let mut oauth = BasicClient::new(ClientId::new(settings.client_id))
                .set_auth_uri(auth_url)
                .set_token_uri(token_url)
                .set_redirect_uri(redirect)
                .set_auth_type(match provider.client_auth() {
                    ClientAuth::Basic => AuthType::BasicAuth,
                    ClientAuth::Post => AuthType::RequestBody,
                });
            if let Some(secret) = settings.client_secret {
                oauth = oauth.set_client_secret(ClientSecret::new(secret.expose().to_owned()));
            }
            providers.insert(
                provider,
                ProviderClient {
                    oauth,
                    userinfo_url,
                    signer,
                },
            );
        }

        // Never follow redirects from a provider (SSRF), and bound every call.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(args.oauth_http_timeout)
            .timeout(args.oauth_http_timeout)
            .user_agent(concat!("mutr-api/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ConfigError::HttpClient)?;

        Ok(Self {
            secure_cookies: public_url.starts_with("https://"),
            providers,
            states: StateStore::new(redis, args.oauth_state_ttl),
            http,
            db,
            frontend_url: frontend_url.to_string(),
            userinfo_max_bytes: args.oauth_userinfo_max_bytes,
        })
    }

    /// The configured provider named `name`, or `None` (answered 404).
    #[must_use]
    pub fn provider(&self, name: &str) -> Option<Provider> {
        Provider::from_name(name).filter(|p| self.providers.contains_key(p))
    }

    /// The providers offered, in a stable order.
    #[must_use]
    pub fn providers(&self) -> Vec<Provider> {
        Provider::ALL
            .into_iter()
            .filter(|p| self.providers.contains_key(p))
            .collect()
    }

    /// Where sign-in ends.
    #[must_use]
    pub fn frontend_url(&self) -> &str {
        &self.frontend_url
    }

    /// Whether cookies get the `Secure` attribute (the public URL is HTTPS).
    #[must_use]
    pub const fn secure_cookies(&self) -> bool {
        self.secure_cookies
    }

    /// How long a started sign-in stays valid (the binding cookie's `Max-Age`).
    #[must_use]
    pub const fn state_ttl(&self) -> Duration {
        self.states.ttl()
    }

    /// The database, for resolving a guest token at the start of the flow.
    #[must_use]
    pub const fn db(&self) -> &PgPool {
        &self.db
    }

    /// Starts a sign-in with `provider`: remembers the PKCE verifier (and the guest to link) under
    /// a fresh random state and returns the provider's authorization URL.
    ///
    /// # Errors
    /// When Redis fails.
    ///
    /// # Panics
    /// Never for a provider returned by [`SignIn::provider`].
    pub async fn start(
        &self,
        provider: Provider,
        guest_user_id: Option<i64>,
    ) -> Result<Started, SignInError> {
        let client = &self.providers[&provider];
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (authorize_url, state) = client
            .oauth
            .authorize_url(CsrfToken::new_random)
            .add_scopes(
                provider
                    .scopes()
                    .iter()
                    .map(|s| Scope::new((*s).to_owned())),
            )
            .set_pkce_challenge(challenge)
            .url();
        let pending = PendingAuthorization {
            provider,
            pkce_verifier: verifier.secret().clone(),
            guest_user_id,
        };
        self.states.put(state.secret(), &pending).await?;
        Ok(Started {
            authorize_url,
            state: state.secret().clone(),
        })
    }

    /// Completes a sign-in: checks the state against the browser's binding cookie, takes the
    /// pending authorization, exchanges the code, reads userinfo, stores the member and signs a
    /// token.
    ///
    /// # Errors
    /// Every way the sign-in can fail; see [`SignInError`].
    pub async fn finish(
        &self,
        provider: Provider,
        callback: Callback,
        bound_state: Option<&str>,
    ) -> Result<SignedIn, SignInError> {
        let state = callback
            .state
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or(SignInError::MissingParameter("state"))?;
        // The state must be the one this browser started with (login CSRF): compared as digests,
        // so the comparison time says nothing about the expected value.
        if bound_state.map(|b| Sha256::digest(b.as_bytes()))
            != Some(Sha256::digest(state.as_bytes()))
        {
            return Err(SignInError::StateMismatch);
        }
        let pending = self
            .states
            .take(state)
            .await?
            .ok_or(SignInError::StateUnknown)?;
        if pending.provider != provider {
            return Err(SignInError::ProviderMismatch {
                started: pending.provider,
                returned: provider,
            });
        }
        if let Some(error) = callback.error {
            return Err(SignInError::Denied(printable(&error)));
        }
        let code = callback
            .code
            .filter(|c| !c.is_empty())
            .ok_or(SignInError::MissingParameter("code"))?;

        let client = &self.providers[&provider];
        let token = client
            .oauth
            .exchange_code(AuthorizationCode::new(code))
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier))
            .request_async(&self.http)
            .await
            .map_err(token_error)?;
        let doc = self
            .userinfo(&client.userinfo_url, token.access_token().secret())
            .await?;
        let user = provider.map_userinfo(&doc)?;
        let user_id = self
            .store_member(provider, &user, pending.guest_user_id)
            .await?;
        let token = client.signer.sign(provider.as_str(), &user.id)?;
        Ok(SignedIn { user_id, token })
    }

    /// Fetches the userinfo document with the access token, reading at most the configured
    /// number of bytes.
    async fn userinfo(
        &self,
        url: &Url,
        access_token: &str,
    ) -> Result<serde_json::Value, SignInError> {
        let mut response = self
            .http
            .get(url.clone())
            .bearer_auth(access_token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(SignInError::UserInfoRequest)?;
        if !response.status().is_success() {
            return Err(SignInError::UserInfoStatus(response.status()));
        }
        let limit = self.userinfo_max_bytes;
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(SignInError::UserInfoBody("too large"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(SignInError::UserInfoRequest)?
        {
            if body.len() + chunk.len() > limit {
                return Err(SignInError::UserInfoBody("too large"));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|_| SignInError::UserInfoBody("not JSON"))
    }

    /// Finds or creates the member; with a guest to link, upgrades or merges that guest. A new
    /// member is named after their provider profile, else gets a generated nickname as guests do.
    async fn store_member(
        &self,
        provider: Provider,
        user: &ProviderUser,
        guest_user_id: Option<i64>,
    ) -> Result<i64, SignInError> {
        let nickname = user
            .name
            .clone()
            .unwrap_or_else(|| nickname::generate(&mut rand::rng()));
        let member = NewMember {
            provider: Some(provider.as_str()),
            subject: &user.id,
            email: user.email.as_deref(),
            nickname: &nickname,
        };
        let stored = match guest_user_id {
            Some(guest) => members::sign_in_linking_guest(&self.db, &member, guest).await?,
            None => users::create_member(&self.db, &member).await?,
        };
        Ok(stored.id)
    }
}

fn parse_url(option: &str, value: &str) -> Result<Url, ConfigError> {
    Url::parse(value.trim()).map_err(|source| ConfigError::BadUrl {
        option: option.to_owned(),
        source,
    })
}

/// A provider-supplied word, made safe to log: printable ASCII only, at most 64 characters.
fn printable(raw: &str) -> String {
    raw.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect()
}

/// Maps the token request's failure to an error that carries no response body (which could hold
/// a token) and no secret.
fn token_error(err: BasicRequestTokenError<HttpClientError<reqwest::Error>>) -> SignInError {
    use oauth2::RequestTokenError as E;
    match err {
        E::ServerResponse(response) => SignInError::TokenRefused(match response.error() {
            BasicErrorResponseType::Extension(other) => printable(other),
            known => known.as_ref().to_owned(),
        }),
        E::Request(HttpClientError::Reqwest(e)) if e.is_timeout() => {
            SignInError::TokenExchange("timed out")
        }
        E::Request(HttpClientError::Reqwest(e)) if e.is_connect() => {
            SignInError::TokenExchange("could not connect")
        }
        E::Request(_) => SignInError::TokenExchange("request failed"),
        E::Parse(..) => SignInError::TokenExchange("unreadable response"),
        E::Other(_) => SignInError::TokenExchange("unexpected response"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_strips_control_and_bounds_length() {
        assert_eq!(printable("access_denied"), "access_denied");
        assert_eq!(printable("a\r\nb c\u{7}"), "abc");
        assert_eq!(printable(&"x".repeat(500)).len(), 64);
    }
}
