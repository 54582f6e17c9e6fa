//! Member JWTs: verification with an HS256 secret or an RS256 public key from configuration.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::{Deserialize, Serialize};

use super::AuthArgs;

/// The role claim a member token must carry.
pub const MEMBER_ROLE: &str = "ROLE_USER";

/// Claims of a member token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberClaims {
    /// The member's id at the provider.
    pub sub: String,
    /// `ROLE_USER`.
    pub auth: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issue time, seconds since the epoch.
    #[serde(default)]
    pub iat: u64,
    /// `google` or `kakao`; absent in tokens of the old server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The member's e-mail, when the provider shares it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The member's nickname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nickname: Option<String>,
}

/// Why a key could not be built or a token was rejected.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// The configured RS256 public key is not a PEM RSA public key.
    #[error("MUTR_JWT_PUBLIC_KEY is not a PEM RSA public key")]
    BadPublicKey(#[source] jsonwebtoken::errors::Error),
    /// Signature, expiry or shape is wrong.
    #[error("invalid token")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    /// The token is valid but not a member token.
    #[error("token role is not {MEMBER_ROLE}")]
    WrongRole,
}

/// The key and rules that member tokens are verified with.
pub struct JwtKeys {
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl JwtKeys {
    /// The keys configured in `args`: the RS256 public key when set, else the HS256 secret, else
    /// none (member tokens are then refused).
    pub fn from_args(args: &AuthArgs) -> Result<Option<Self>, JwtError> {
        if let Some(pem) = &args.jwt_public_key {
            let key = DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(JwtError::BadPublicKey)?;
            return Ok(Some(Self::new(key, Algorithm::RS256)));
        }
        Ok(args.jwt_secret.as_ref().map(|secret| {
            Self::new(
                DecodingKey::from_secret(secret.expose().as_bytes()),
                Algorithm::HS256,
            )
        }))
    }

    fn new(decoding: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 30;
        Self {
            decoding,
            validation,
        }
    }

    /// The claims of a valid, unexpired member token.
    pub fn verify(&self, token: &str) -> Result<MemberClaims, JwtError> {
        let claims = decode::<MemberClaims>(token, &self.decoding, &self.validation)?.claims;
        if claims.auth != MEMBER_ROLE {
            return Err(JwtError::WrongRole);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use jsonwebtoken::{EncodingKey, Header, encode};

    fn now() -> u64 {
        u64::try_from(chrono::Utc::now().timestamp()).unwrap()
    }

    fn claims(exp: u64, auth: &str) -> MemberClaims {
        MemberClaims {
            sub: "123".into(),
            auth: auth.into(),
            exp,
            iat: now(),
            provider: Some("google".into()),
            email: None,
            nickname: Some("앨리스".into()),
        }
    }

    fn hs_keys(secret: &str) -> JwtKeys {
        JwtKeys::from_args(&AuthArgs {
            jwt_secret: Some(Secret::new(secret)),
            jwt_public_key: None,
        })
        .unwrap()
        .unwrap()
    }

    fn sign(c: &MemberClaims, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            c,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn hs256_accepts_valid_and_rejects_the_rest() {
        let keys = hs_keys("s3cret-s3cret-s3cret-s3cret-s3cret");
        let good = claims(now() + 600, MEMBER_ROLE);
        assert_eq!(
            keys.verify(&sign(&good, "s3cret-s3cret-s3cret-s3cret-s3cret"))
                .unwrap(),
            good
        );
        assert!(matches!(
            keys.verify(&sign(&good, "another-secret-another-secret")),
            Err(JwtError::Invalid(_))
        ));
        assert!(matches!(
            keys.verify(&sign(
                &claims(now() - 3600, MEMBER_ROLE),
                "s3cret-s3cret-s3cret-s3cret-s3cret"
            )),
            Err(JwtError::Invalid(_))
        ));
        assert!(matches!(
            keys.verify(&sign(
                &claims(now() + 600, "ROLE_GUEST"),
                "s3cret-s3cret-s3cret-s3cret-s3cret"
            )),
            Err(JwtError::WrongRole)
        ));
        assert!(keys.verify("not.a.token").is_err());
    }

    #[test]
    fn no_keys_configured() {
        let keys = JwtKeys::from_args(&AuthArgs {
            jwt_secret: None,
            jwt_public_key: None,
        })
        .unwrap();
        assert!(keys.is_none());
    }

    #[test]
    fn bad_public_key_is_a_config_error() {
        let err = JwtKeys::from_args(&AuthArgs {
            jwt_secret: None,
            jwt_public_key: Some("not a pem".into()),
        })
        .unwrap_err();
        assert!(matches!(err, JwtError::BadPublicKey(_)));
    }
}
