//! Users: guests found by the hash of their token, members found by (provider, subject).

use sqlx::PgExecutor;

/// A user's role, as stored and sent (`role` in `/users/me`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub enum Role {
    /// Identified by a guest token.
    #[serde(rename = "ROLE_GUEST")]
    Guest,
    /// Signed in with a provider.
    #[serde(rename = "ROLE_USER")]
    User,
}

impl Role {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Guest => "ROLE_GUEST",
            Self::User => "ROLE_USER",
        }
    }

    fn from_db(s: &str) -> Self {
        if s == "ROLE_USER" {
            Self::User
        } else {
            Self::Guest
        }
    }
}

/// A stored user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Primary key.
    pub id: i64,
    /// Shown next to their nodes.
    pub nickname: String,
    /// Guest or member.
    pub role: Role,
    /// Members only, when the provider shares it.
    pub email: Option<String>,
    /// Members only, when known (`google`, `kakao`).
    pub provider: Option<String>,
    /// Members only: the subject at the provider.
    pub provider_user_id: Option<String>,
}

struct Row {
    id: i64,
    nickname: String,
    role: String,
    email: Option<String>,
    provider: Option<String>,
    provider_user_id: Option<String>,
}

impl From<Row> for User {
    fn from(r: Row) -> Self {
        Self {
            id: r.id,
            nickname: r.nickname,
            role: Role::from_db(&r.role),
            email: r.email,
            provider: r.provider,
            provider_user_id: r.provider_user_id,
        }
    }
}

/// Stores a new guest identified by `token_hash` (never the token itself).
pub async fn create_guest(
    db: impl PgExecutor<'_>,
    nickname: &str,
    token_hash: &[u8],
) -> Result<User, sqlx::Error> {
    let row = sqlx::query_as!(
        Row,
        "INSERT INTO users (nickname, role, guest_token_hash) VALUES ($1, 'ROLE_GUEST', $2)
         RETURNING id, nickname, role, email, provider, provider_user_id",
        nickname,
        token_hash,
    )
    .fetch_one(db)
    .await?;
    Ok(row.into())
}

/// The guest whose token hashes to `token_hash`.
pub async fn find_guest(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
) -> Result<Option<User>, sqlx::Error> {
    let row = sqlx::query_as!(
        Row,
        "SELECT id, nickname, role, email, provider, provider_user_id
         FROM users WHERE guest_token_hash = $1 AND role = 'ROLE_GUEST'",
        token_hash,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(Into::into))
}

/// The user with this id.
pub async fn find_by_id(db: impl PgExecutor<'_>, id: i64) -> Result<Option<User>, sqlx::Error> {
    let row = sqlx::query_as!(
        Row,
        "SELECT id, nickname, role, email, provider, provider_user_id FROM users WHERE id = $1",
        id,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(Into::into))
}

/// The member with this subject at this provider; with no provider (tokens of the old server),
/// the member with this subject at any provider, the oldest first.
pub async fn find_member(
    db: impl PgExecutor<'_>,
    provider: Option<&str>,
    subject: &str,
) -> Result<Option<User>, sqlx::Error> {
    let row = match provider {
        Some(provider) => {
            sqlx::query_as!(
                Row,
                "SELECT id, nickname, role, email, provider, provider_user_id
                 FROM users WHERE provider = $1 AND provider_user_id = $2",
                provider,
                subject,
            )
            .fetch_optional(db)
            .await?
        }
        None => {
            sqlx::query_as!(
                Row,
                "SELECT id, nickname, role, email, provider, provider_user_id
                 FROM users WHERE provider_user_id = $1 AND role = 'ROLE_USER'
                 ORDER BY id LIMIT 1",
                subject,
            )
            .fetch_optional(db)
            .await?
        }
    };
    Ok(row.map(Into::into))
}

/// A member seen for the first time, as a token or a provider describes them.
#[derive(Debug, Clone)]
pub struct NewMember<'a> {
    /// `google`, `kakao`, or none for tokens of the old server.
    pub provider: Option<&'a str>,
    /// The member's id at the provider.
    pub subject: &'a str,
    /// Their e-mail, when shared.
    pub email: Option<&'a str>,
    /// Their nickname.
    pub nickname: &'a str,
}

/// Creates the member, or returns the existing one when another request created it first.
/// Existing members keep their stored nickname and e-mail.
pub async fn create_member(
    db: impl PgExecutor<'_>,
    member: &NewMember<'_>,
) -> Result<User, sqlx::Error> {
    let row = match member.provider {
        Some(provider) => {
            sqlx::query_as!(
                Row,
                "INSERT INTO users (nickname, role, provider, provider_user_id, email)
                 VALUES ($1, 'ROLE_USER', $2, $3, $4)
                 ON CONFLICT (provider, provider_user_id) DO UPDATE SET updated_at = users.updated_at
                 RETURNING id, nickname, role, email, provider, provider_user_id",
                member.nickname,
                provider,
                member.subject,
                member.email,
            )
            .fetch_one(db)
            .await?
        }
        None => {
            sqlx::query_as!(
                Row,
                "INSERT INTO users (nickname, role, provider_user_id, email)
                 VALUES ($1, 'ROLE_USER', $2, $3)
                 ON CONFLICT (provider_user_id) WHERE provider IS NULL
                 DO UPDATE SET updated_at = users.updated_at
                 RETURNING id, nickname, role, email, provider, provider_user_id",
                member.nickname,
                member.subject,
                member.email,
            )
            .fetch_one(db)
            .await?
        }
    };
    Ok(row.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::PgPool;

    #[sqlx::test]
    async fn guest_round_trip(pool: PgPool) {
        let created = create_guest(&pool, "차분한_구름_0001", b"hash-1")
            .await
            .unwrap();
        assert_eq!(created.role, Role::Guest);
        assert_eq!(
            find_guest(&pool, b"hash-1").await.unwrap(),
            Some(created.clone())
        );
        assert_eq!(find_guest(&pool, b"hash-2").await.unwrap(), None);
        assert_eq!(find_by_id(&pool, created.id).await.unwrap(), Some(created));
    }

    #[sqlx::test]
    async fn duplicate_guest_token_hash_is_rejected(pool: PgPool) {
        create_guest(&pool, "a", b"same").await.unwrap();
        let err = create_guest(&pool, "b", b"same").await.unwrap_err();
        assert!(
            err.as_database_error()
                .is_some_and(|e| e.is_unique_violation())
        );
    }

    #[sqlx::test]
    async fn member_is_created_once_per_provider_and_subject(pool: PgPool) {
        let new = NewMember {
            provider: Some("google"),
            subject: "g-1",
            email: Some("a@example.com"),
            nickname: "앨리스",
        };
        let first = create_member(&pool, &new).await.unwrap();
        let again = create_member(
            &pool,
            &NewMember {
                nickname: "other",
                ..new.clone()
            },
        )
        .await
        .unwrap();
        assert_eq!(first, again, "existing member keeps its row and nickname");
        assert_eq!(first.role, Role::User);
        assert_eq!(
            find_member(&pool, Some("google"), "g-1").await.unwrap(),
            Some(first.clone())
        );
        assert_eq!(
            find_member(&pool, Some("kakao"), "g-1").await.unwrap(),
            None
        );
        // Tokens of the old server carry no provider: the subject alone finds the member.
        assert_eq!(
            find_member(&pool, None, "g-1").await.unwrap(),
            Some(first.clone())
        );

        let kakao = create_member(
            &pool,
            &NewMember {
                provider: Some("kakao"),
                ..new
            },
        )
        .await
        .unwrap();
        assert_ne!(kakao.id, first.id);
    }

    #[sqlx::test]
    async fn legacy_member_without_provider(pool: PgPool) {
        let new = NewMember {
            provider: None,
            subject: "old-7",
            email: None,
            nickname: "오래된",
        };
        let first = create_member(&pool, &new).await.unwrap();
        assert_eq!(first.provider, None);
        assert_eq!(create_member(&pool, &new).await.unwrap().id, first.id);
        assert_eq!(
            find_member(&pool, None, "old-7").await.unwrap(),
            Some(first)
        );
        assert_eq!(find_member(&pool, None, "missing").await.unwrap(), None);
    }
}
