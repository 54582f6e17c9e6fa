//! Issuing member JWTs after a successful sign-in: HS256 with the shared secret, or RS256 with a
//! private key whose public half the verifier holds.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::jwt::{MEMBER_ROLE, MemberClaims};

/// The shortest HS256 secret accepted for signing (RFC 7518 §3.2: a key at least as long as the
/// hash output).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// The claims of a member token issued at `issued_at` and valid for `lifetime`: subject, role,
/// provider and times only. The member row exists before the token does, so neither e-mail nor
/// nickname travel in a token that the client keeps in local storage.
#[must_use]
pub fn member_claims(
    provider: &str,
    sub: &str,
    issued_at: DateTime<Utc>,
    lifetime: Duration,
) -> MemberClaims {
    let iat = u64::try_from(issued_at.timestamp()).unwrap_or(0);
    MemberClaims {
        sub: sub.to_owned(),
        auth: MEMBER_ROLE.to_owned(),
        exp: iat.saturating_add(lifetime.as_secs()),
        iat,
        provider: Some(provider.to_owned()),
        email: None,
        nickname: None,
    }
}

/// The key that signs member tokens.
#[derive(Clone)]
pub enum SigningKey {
    /// HMAC-SHA256 with `MUTR_JWT_SECRET`.
    Hs256(EncodingKey),
    /// RSA-SHA256 with the PEM private key `MUTR_JWT_PRIVATE_KEY`.
    Rs256(EncodingKey),
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Hs256(_) => "Hs256(<redacted>)",
            Self::Rs256(_) => "Rs256(<redacted>)",
        })
    }
}

/// A signing key that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The HS256 secret is shorter than [`MIN_HS256_SECRET_BYTES`].
    #[error("MUTR_JWT_SECRET must be at least {MIN_HS256_SECRET_BYTES} bytes to sign tokens")]
    SecretTooShort,
    /// The private key is not an RSA key in PEM form.
    #[error("MUTR_JWT_PRIVATE_KEY is not a PEM-encoded RSA private key")]
    BadPrivateKey(#[source] jsonwebtoken::errors::Error),
}

impl SigningKey {
    /// An HS256 key from the shared secret.
    ///
    /// # Errors
    /// When the secret is too short to be safe.
    pub fn hs256(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < MIN_HS256_SECRET_BYTES {
            return Err(KeyError::SecretTooShort);
        }
        Ok(Self::Hs256(EncodingKey::from_secret(secret)))
    }

    /// An RS256 key from a PEM-encoded RSA private key (PKCS#1 or PKCS#8).
    ///
    /// # Errors
    /// When the PEM does not hold an RSA private key.
    pub fn rs256_pem(pem: &[u8]) -> Result<Self, KeyError> {
        EncodingKey::from_rsa_pem(pem)
            .map(Self::Rs256)
            .map_err(KeyError::BadPrivateKey)
    }

    const fn algorithm(&self) -> Algorithm {
        match self {
            Self::Hs256(_) => Algorithm::HS256,
            Self::Rs256(_) => Algorithm::RS256,
        }
    }

    const fn encoding_key(&self) -> &EncodingKey {
        match self {
            Self::Hs256(k) | Self::Rs256(k) => k,
        }
    }
}

/// Signs member tokens with one key and one lifetime.
#[derive(Debug, Clone)]
pub struct TokenSigner {
    key: SigningKey,
    lifetime: Duration,
}

/// A token that could not be signed.
#[derive(Debug, thiserror::Error)]
#[error("could not sign the member token")]
pub struct SignError(#[source] jsonwebtoken::errors::Error);

impl TokenSigner {
    /// A signer issuing tokens valid for `lifetime`.
    #[must_use]
    pub const fn new(key: SigningKey, lifetime: Duration) -> Self {
        Self { key, lifetime }
    }

    /// How long an issued token is valid.
    #[must_use]
    pub const fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A token for the member `sub` at `provider`, issued now.
    ///
    /// # Errors
    /// When signing fails (an RSA failure; HMAC signing cannot fail).
    pub fn sign(&self, provider: &str, sub: &str) -> Result<String, SignError> {
        self.sign_at(provider, sub, Utc::now())
    }

    /// A token issued at `issued_at` (tests use a past time to make expired tokens).
    ///
    /// # Errors
    /// When signing fails.
    pub fn sign_at(
        &self,
        provider: &str,
        sub: &str,
        issued_at: DateTime<Utc>,
    ) -> Result<String, SignError> {
        let claims = member_claims(provider, sub, issued_at, self.lifetime);
        jsonwebtoken::encode(
            &Header::new(self.key.algorithm()),
            &claims,
            self.key.encoding_key(),
        )
        .map_err(SignError)
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{DecodingKey, Validation};

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn claims_carry_role_provider_and_lifetime() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let c = member_claims("kakao", "42", at, Duration::from_secs(3600));
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "sub": "42", "auth": "ROLE_USER", "provider": "kakao",
                "iat": 1_700_000_000, "exp": 1_700_003_600,
            })
        );
    }

    #[test]
    fn hs256_tokens_verify_with_the_same_secret_only() {
        let signer = TokenSigner::new(SigningKey::hs256(SECRET).unwrap(), Duration::from_secs(600));
        let token = signer.sign("google", "abc").unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::HS256);
        let data = jsonwebtoken::decode::<MemberClaims>(
            &token,
            &DecodingKey::from_secret(SECRET),
            &Validation::new(Algorithm::HS256),
        )
        .unwrap();
        assert_eq!(data.claims.sub, "abc");
        assert_eq!(data.claims.provider.as_deref(), Some("google"));
        assert_eq!(data.claims.exp - data.claims.iat, 600);
        assert!(
            jsonwebtoken::decode::<MemberClaims>(
                &token,
                &DecodingKey::from_secret(b"another secret of thirty-two bytes!!"),
                &Validation::new(Algorithm::HS256),
            )
            .is_err()
        );
    }

    #[test]
    fn tokens_verify_with_the_api_verifier_for_both_algorithms() {
        use crate::auth::jwt::JwtKeys;
        use crate::{auth::AuthArgs, secret::Secret};

        let hs = TokenSigner::new(SigningKey::hs256(SECRET).unwrap(), Duration::from_secs(60));
        let keys = JwtKeys::from_args(&AuthArgs {
            jwt_secret: Some(Secret::new(std::str::from_utf8(SECRET).unwrap())),
            jwt_public_key: None,
        })
        .unwrap()
        .unwrap();
        let claims = keys.verify(&hs.sign("kakao", "42").unwrap()).unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.provider.as_deref()),
            ("42", Some("kakao"))
        );

        let rs = TokenSigner::new(
            SigningKey::rs256_pem(include_bytes!(
                "../../tests/fixtures/jwt-test-rs256.key.pem"
            ))
            .unwrap(),
            Duration::from_secs(60),
        );
        let token = rs.sign("google", "g-1").unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&token).unwrap().alg,
            Algorithm::RS256
        );
        let keys = JwtKeys::from_args(&AuthArgs {
            jwt_secret: None,
            jwt_public_key: Some(
                include_str!("../../tests/fixtures/jwt-test-rs256.pub.pem").to_owned(),
            ),
        })
        .unwrap()
        .unwrap();
        assert_eq!(keys.verify(&token).unwrap().sub, "g-1");
        // Expired long ago: refused despite a valid signature.
        let old = rs
            .sign_at("google", "g-1", Utc::now() - chrono::Duration::hours(1))
            .unwrap();
        assert!(keys.verify(&old).is_err());
    }

    #[test]
    fn short_secrets_and_bad_pem_are_refused() {
        assert!(matches!(
            SigningKey::hs256(b"short"),
            Err(KeyError::SecretTooShort)
        ));
        assert!(matches!(
            SigningKey::rs256_pem(b"-----BEGIN NOTHING-----"),
            Err(KeyError::BadPrivateKey(_))
        ));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = SigningKey::hs256(SECRET).unwrap();
        let shown = format!("{:?}", TokenSigner::new(key, Duration::from_secs(1)));
        assert!(!shown.contains("0123456789"), "{shown}");
        assert!(shown.contains("redacted"));
    }
}
