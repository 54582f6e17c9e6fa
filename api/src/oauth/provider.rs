//! The supported sign-in providers: their names, default endpoints, scopes, and how each one's
//! userinfo document maps onto a member.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The longest nickname taken from a provider's profile; longer names are cut at a character
/// boundary so a hostile profile cannot bloat every node that carries the author's nickname.
pub const MAX_NICKNAME_CHARS: usize = 30;

/// The longest provider user id or email accepted from a userinfo document.
const MAX_FIELD_CHARS: usize = 320;

/// An OAuth2 provider a member can sign in with.
///
/// The lower-case name is what appears in the URLs (`/oauth2/authorization/google`), in the
/// `users.provider` column and in the JWT `provider` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Google, through its OpenID Connect userinfo endpoint.
    Google,
    /// Kakao, through its `/v2/user/me` endpoint.
    Kakao,
}

/// How the client authenticates itself at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_secret_basic`: HTTP Basic authentication.
    Basic,
    /// `client_secret_post`: `client_id` and `client_secret` in the form body.
    Post,
}

impl Provider {
    /// Every provider, in the order they are configured.
    pub const ALL: [Self; 2] = [Self::Google, Self::Kakao];

    /// The provider's name as used in URLs, the database and the JWT.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Google => "google",
            Self::Kakao => "kakao",
        }
    }

    /// The provider named by a path segment; names are matched exactly (lower case), as in the
    /// web client's links.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// The real authorization endpoint.
    #[must_use]
    pub const fn default_auth_url(self) -> &'static str {
        match self {
            Self::Google => "https://accounts.google.com/o/oauth2/v2/auth",
            Self::Kakao => "https://kauth.kakao.com/oauth/authorize",
        }
    }

    /// The real token endpoint.
    #[must_use]
    pub const fn default_token_url(self) -> &'static str {
        match self {
            Self::Google => "https://oauth2.googleapis.com/token",
            Self::Kakao => "https://kauth.kakao.com/oauth/token",
        }
    }

    /// The real userinfo endpoint.
    #[must_use]
    pub const fn default_userinfo_url(self) -> &'static str {
        match self {
            Self::Google => "https://openidconnect.googleapis.com/v1/userinfo",
            Self::Kakao => "https://kapi.kakao.com/v2/user/me",
        }
    }

    /// The scopes asked for: just enough for an id, an email and a display name.
    #[must_use]
    pub const fn scopes(self) -> &'static [&'static str] {
        match self {
            Self::Google => &["openid", "email", "profile"],
            Self::Kakao => &["profile_nickname", "account_email"],
        }
    }

    /// How the client secret is presented: Google takes HTTP Basic, Kakao documents only the form
    /// body (Spring's `client_secret_post` for Kakao).
    #[must_use]
    pub const fn client_auth(self) -> ClientAuth {
        match self {
            Self::Google => ClientAuth::Basic,
            Self::Kakao => ClientAuth::Post,
        }
    }

    /// Reads the member's identity out of the provider's userinfo document.
    ///
    /// # Errors
    /// When the document has no usable user id.
    pub fn map_userinfo(self, doc: &Value) -> Result<ProviderUser, UserInfoError> {
        match self {
            Self::Google => map_google(doc),
            Self::Kakao => map_kakao(doc),
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who signed in, as the provider describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderUser {
    /// The member's stable id at the provider (Google `sub`, Kakao `id`).
    pub id: String,
    /// The email, when the provider shares one it has verified.
    pub email: Option<String>,
    /// A display name, cleaned and cut to [`MAX_NICKNAME_CHARS`].
    pub name: Option<String>,
}

/// A userinfo document that does not identify anybody.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserInfoError {
    /// The id field is missing, empty, too long or of the wrong type.
    #[error("the userinfo document has no usable `{0}`")]
    MissingId(&'static str),
}

/// Google's OpenID Connect userinfo: `sub`, `email` (+ `email_verified`), `name`.
fn map_google(doc: &Value) -> Result<ProviderUser, UserInfoError> {
    let id = doc
        .get("sub")
        .and_then(Value::as_str)
        .and_then(clean_id)
        .ok_or(UserInfoError::MissingId("sub"))?;
    // An unverified address is not the member's to claim; Google omits the flag only for
    // accounts whose address it manages itself.
    let verified = doc.get("email_verified").and_then(Value::as_bool) != Some(false);
    let email = verified
        .then(|| {
            doc.get("email")
                .and_then(Value::as_str)
                .and_then(clean_email)
        })
        .flatten();
    let name = doc.get("name").and_then(Value::as_str).and_then(clean_name);
    Ok(ProviderUser { id, email, name })
}

/// Kakao's `/v2/user/me`: numeric `id`, `kakao_account.email` (with its validity flags),
/// `kakao_account.profile.nickname`, else the older `properties.nickname`.
fn map_kakao(doc: &Value) -> Result<ProviderUser, UserInfoError> {
    let id = match doc.get("id") {
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        Some(Value::String(s)) => clean_id(s),
        _ => None,
    }
    .ok_or(UserInfoError::MissingId("id"))?;
    let account = doc.get("kakao_account");
    let flag = |name: &str| account.and_then(|a| a.get(name)).and_then(Value::as_bool);
    let email_ok =
        flag("is_email_valid") != Some(false) && flag("is_email_verified") != Some(false);
    let email = email_ok
        .then(|| {
            account
                .and_then(|a| a.get("email"))
                .and_then(Value::as_str)
                .and_then(clean_email)
        })
        .flatten();
    let name = account
        .and_then(|a| a.pointer("/profile/nickname"))
        .and_then(Value::as_str)
        .and_then(clean_name)
        .or_else(|| {
            doc.pointer("/properties/nickname")
                .and_then(Value::as_str)
                .and_then(clean_name)
        });
    Ok(ProviderUser { id, email, name })
}

fn clean_id(raw: &str) -> Option<String> {
    let id = raw.trim();
    (!id.is_empty() && id.chars().count() <= MAX_FIELD_CHARS && !id.chars().any(char::is_control))
        .then(|| id.to_owned())
}

fn clean_email(raw: &str) -> Option<String> {
    let email = raw.trim();
    (email.contains('@')
        && email.chars().count() <= MAX_FIELD_CHARS
        && !email.chars().any(|c| c.is_control() || c.is_whitespace()))
    .then(|| email.to_owned())
}

/// Collapses whitespace, drops control characters and cuts to [`MAX_NICKNAME_CHARS`].
fn clean_name(raw: &str) -> Option<String> {
    let name = raw
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NICKNAME_CHARS)
        .collect::<String>();
    let name = name.trim_end();
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn provider_names_round_trip_and_are_exact() {
        for p in Provider::ALL {
            assert_eq!(Provider::from_name(p.as_str()), Some(p));
            assert_eq!(serde_json::to_value(p).unwrap(), json!(p.as_str()));
        }
        assert_eq!(Provider::from_name("Google"), None);
        assert_eq!(Provider::from_name("github"), None);
        assert_eq!(Provider::from_name(""), None);
    }

    #[test]
    fn google_userinfo_maps_sub_email_and_name() {
        let doc = json!({
            "sub": "110169484474386276334", "email": "ada@example.com", "email_verified": true,
            "name": "Ada  Lovelace", "picture": "https://example.com/a.png"
        });
        assert_eq!(
            Provider::Google.map_userinfo(&doc).unwrap(),
            ProviderUser {
                id: "110169484474386276334".into(),
                email: Some("ada@example.com".into()),
                name: Some("Ada Lovelace".into()),
            }
        );
    }

    #[test]
    fn google_unverified_email_is_dropped_and_missing_sub_is_refused() {
        let doc = json!({ "sub": "1", "email": "x@example.com", "email_verified": false });
        let user = Provider::Google.map_userinfo(&doc).unwrap();
        assert_eq!(user.email, None);
        assert_eq!(user.name, None);
        for doc in [
            json!({ "email": "x@example.com" }),
            json!({ "sub": "  " }),
            json!({ "sub": 7 }),
        ] {
            assert_eq!(
                Provider::Google.map_userinfo(&doc),
                Err(UserInfoError::MissingId("sub"))
            );
        }
    }

    #[test]
    fn kakao_userinfo_maps_numeric_id_account_email_and_profile_nickname() {
        let doc = json!({
            "id": 3_141_592_653_u64,
            "kakao_account": {
                "email": "minsu@kakao.com", "is_email_valid": true, "is_email_verified": true,
                "profile": { "nickname": "민수" }
            },
            "properties": { "nickname": "옛이름" }
        });
        assert_eq!(
            Provider::Kakao.map_userinfo(&doc).unwrap(),
            ProviderUser {
                id: "3141592653".into(),
                email: Some("minsu@kakao.com".into()),
                name: Some("민수".into()),
            }
        );
    }

    #[test]
    fn kakao_falls_back_to_properties_nickname_and_drops_invalid_email() {
        let doc = json!({
            "id": 42,
            "kakao_account": { "email": "old@kakao.com", "is_email_valid": false },
            "properties": { "nickname": "하늘" }
        });
        let user = Provider::Kakao.map_userinfo(&doc).unwrap();
        assert_eq!(user.id, "42");
        assert_eq!(user.email, None);
        assert_eq!(user.name.as_deref(), Some("하늘"));
        assert_eq!(
            Provider::Kakao.map_userinfo(&json!({ "id": 1.5 })),
            Err(UserInfoError::MissingId("id"))
        );
        assert_eq!(
            Provider::Kakao.map_userinfo(&json!({ "kakao_account": {} })),
            Err(UserInfoError::MissingId("id"))
        );
    }

    #[test]
    fn names_are_cleaned_and_cut_on_character_boundaries() {
        let long = "가".repeat(MAX_NICKNAME_CHARS + 10);
        let doc = json!({ "sub": "1", "name": format!(" \u{7}{long} ") });
        let name = Provider::Google.map_userinfo(&doc).unwrap().name.unwrap();
        assert_eq!(name.chars().count(), MAX_NICKNAME_CHARS);
        assert!(name.chars().all(|c| c == '가'));
        let doc = json!({ "sub": "1", "name": " \n\t " });
        assert_eq!(Provider::Google.map_userinfo(&doc).unwrap().name, None);
    }
}
