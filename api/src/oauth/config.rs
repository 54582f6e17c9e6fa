//! Sign-in configuration: the public and frontend URLs, each provider's client and endpoints, the
//! token key and lifetime, and the limits on provider calls. Every option is a flag and an
//! environment variable; client secrets and the private key are redacted in `Debug`.

use std::time::Duration;

use clap::Args;

use super::provider::Provider;
use crate::secret::Secret;

/// Options of member sign-in, flattened into `mutr-api serve`.
#[derive(Debug, Clone, Args)]
pub struct OAuthArgs {
    /// External base URL of the API; OAuth redirect URIs are this plus
    /// `/login/oauth2/code/{provider}`.
    #[arg(long, env = "MUTR_PUBLIC_URL", default_value = "http://localhost:8080")]
    pub public_url: String,

    /// Where the browser is sent when sign-in ends, successful or not (default: the public URL).
    #[arg(long, env = "MUTR_FRONTEND_URL")]
    pub frontend_url: Option<String>,

    /// RS256 private key (PEM) that member JWTs are signed with; when unset they are signed HS256
    /// with `MUTR_JWT_SECRET`. Its public half goes to `MUTR_JWT_PUBLIC_KEY`.
    #[arg(long, env = "MUTR_JWT_PRIVATE_KEY", hide_env_values = true)]
    pub jwt_private_key: Option<Secret>,

    /// How long a member JWT issued at sign-in stays valid.
    #[arg(long, env = "MUTR_JWT_LIFETIME", value_parser = humantime::parse_duration, default_value = "24h")]
    pub jwt_lifetime: Duration,

    /// How long a started sign-in may take at the provider before its state expires.
    #[arg(long, env = "MUTR_OAUTH_STATE_TTL", value_parser = humantime::parse_duration, default_value = "10m")]
    pub oauth_state_ttl: Duration,

    /// Time limit of each call to a provider (token exchange, userinfo), connection included.
    #[arg(long, env = "MUTR_OAUTH_HTTP_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub oauth_http_timeout: Duration,

    /// Largest userinfo document accepted from a provider, in bytes.
    #[arg(long, env = "MUTR_OAUTH_USERINFO_MAX_BYTES", default_value_t = 64 * 1024)]
    pub oauth_userinfo_max_bytes: usize,

    /// Google OAuth client id; Google sign-in is offered only when it is set.
    #[arg(long, env = "MUTR_OAUTH_GOOGLE_CLIENT_ID")]
    pub oauth_google_client_id: Option<String>,

    /// Google OAuth client secret.
    #[arg(long, env = "MUTR_OAUTH_GOOGLE_CLIENT_SECRET", hide_env_values = true)]
    pub oauth_google_client_secret: Option<Secret>,

    /// Google authorization endpoint.
    #[arg(long, env = "MUTR_OAUTH_GOOGLE_AUTH_URL", default_value = Provider::Google.default_auth_url())]
    pub oauth_google_auth_url: String,

    /// Google token endpoint.
    #[arg(long, env = "MUTR_OAUTH_GOOGLE_TOKEN_URL", default_value = Provider::Google.default_token_url())]
    pub oauth_google_token_url: String,

    /// Google OpenID Connect userinfo endpoint.
    #[arg(long, env = "MUTR_OAUTH_GOOGLE_USERINFO_URL", default_value = Provider::Google.default_userinfo_url())]
    pub oauth_google_userinfo_url: String,

    /// Kakao REST API key (OAuth client id); Kakao sign-in is offered only when it is set.
    #[arg(long, env = "MUTR_OAUTH_KAKAO_CLIENT_ID")]
    pub oauth_kakao_client_id: Option<String>,

    /// Kakao client secret.
    #[arg(long, env = "MUTR_OAUTH_KAKAO_CLIENT_SECRET", hide_env_values = true)]
    pub oauth_kakao_client_secret: Option<Secret>,

    /// Kakao authorization endpoint.
    #[arg(long, env = "MUTR_OAUTH_KAKAO_AUTH_URL", default_value = Provider::Kakao.default_auth_url())]
    pub oauth_kakao_auth_url: String,

    /// Kakao token endpoint.
    #[arg(long, env = "MUTR_OAUTH_KAKAO_TOKEN_URL", default_value = Provider::Kakao.default_token_url())]
    pub oauth_kakao_token_url: String,

    /// Kakao user endpoint (`/v2/user/me`).
    #[arg(long, env = "MUTR_OAUTH_KAKAO_USERINFO_URL", default_value = Provider::Kakao.default_userinfo_url())]
    pub oauth_kakao_userinfo_url: String,
}

/// One provider's client registration and endpoints.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// Which provider.
    pub provider: Provider,
    /// The client id registered with the provider.
    pub client_id: String,
    /// The client secret, when the registration has one.
    pub client_secret: Option<Secret>,
    /// Authorization endpoint.
    pub auth_url: String,
    /// Token endpoint.
    pub token_url: String,
    /// Userinfo endpoint.
    pub userinfo_url: String,
}

impl OAuthArgs {
    /// The settings of `provider`, or `None` when its client id is unset or blank (not offered).
    #[must_use]
    pub fn provider(&self, provider: Provider) -> Option<ProviderSettings> {
        let (id, secret, auth, token, userinfo) = match provider {
            Provider::Google => (
                &self.oauth_google_client_id,
                &self.oauth_google_client_secret,
                &self.oauth_google_auth_url,
                &self.oauth_google_token_url,
                &self.oauth_google_userinfo_url,
            ),
            Provider::Kakao => (
                &self.oauth_kakao_client_id,
                &self.oauth_kakao_client_secret,
                &self.oauth_kakao_auth_url,
                &self.oauth_kakao_token_url,
                &self.oauth_kakao_userinfo_url,
            ),
        };
        let client_id = id.as_deref().map(str::trim).filter(|s| !s.is_empty())?;
        Some(ProviderSettings {
            provider,
            client_id: client_id.to_owned(),
            client_secret: secret.clone().filter(|s| !s.expose().is_empty()),
            auth_url: auth.clone(),
            token_url: token.clone(),
            userinfo_url: userinfo.clone(),
        })
    }

    /// The frontend URL, defaulting to the public URL.
    #[must_use]
    pub fn frontend_url(&self) -> &str {
        self.frontend_url
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or(&self.public_url)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        oauth: OAuthArgs,
    }

    #[test]
    fn providers_are_offered_only_with_a_client_id_and_default_to_real_endpoints() {
        let cli = Cli::try_parse_from([
            "t",
            "--oauth-kakao-client-id",
            "kid",
            "--oauth-kakao-client-secret",
            "hunter2",
            "--oauth-google-client-id",
            "  ",
        ])
        .unwrap();
        assert!(cli.oauth.provider(Provider::Google).is_none());
        let kakao = cli.oauth.provider(Provider::Kakao).unwrap();
        assert_eq!(kakao.client_id, "kid");
        assert_eq!(kakao.auth_url, "https://kauth.kakao.com/oauth/authorize");
        assert_eq!(kakao.token_url, "https://kauth.kakao.com/oauth/token");
        assert_eq!(kakao.userinfo_url, "https://kapi.kakao.com/v2/user/me");
        assert_eq!(cli.oauth.frontend_url(), "http://localhost:8080");
        assert_eq!(cli.oauth.jwt_lifetime, Duration::from_secs(24 * 3600));
        let shown = format!("{cli:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
