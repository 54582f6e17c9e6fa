//! Member sign-in: a guest who signs in becomes the member, keeping their nodes. Either the guest
//! row itself is upgraded (the member is new), or the guest's nodes move to the existing member
//! and the guest row is removed. Both happen in one transaction, and the guest token stops
//! working either way.

use sqlx::{PgPool, Postgres, Transaction};

use super::users::{self, NewMember, User};

/// Signs in `member` (who must have a provider), taking over the guest `guest_id` when it still is
/// a guest. Returns the member.
///
/// # Errors
/// When PostgreSQL fails.
pub async fn sign_in_linking_guest(
    db: &PgPool,
    member: &NewMember<'_>,
    guest_id: i64,
) -> Result<User, sqlx::Error> {
    // A concurrent first sign-in of the same member can insert the row between our check and our
    // upgrade; the unique violation then means "the member exists now", and a second attempt
    // takes the merge path.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut tx = db.begin().await?;
        match link_in(&mut tx, member, guest_id).await {
            Ok(user) => {
                tx.commit().await?;
                return Ok(user);
            }
            Err(e)
                if attempt < 2
                    && e.as_database_error()
                        .is_some_and(|d| d.is_unique_violation()) =>
            {
                tx.rollback().await?;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn link_in(
    tx: &mut Transaction<'_, Postgres>,
    member: &NewMember<'_>,
    guest_id: i64,
) -> Result<User, sqlx::Error> {
    let guest = sqlx::query_scalar!(
        "SELECT id FROM users WHERE id = $1 AND role = 'ROLE_GUEST' FOR UPDATE",
        guest_id,
    )
    .fetch_optional(&mut **tx)
    .await?;
    let existing = sqlx::query_scalar!(
        "SELECT id FROM users WHERE provider = $1 AND provider_user_id = $2 FOR UPDATE",
        member.provider,
        member.subject,
    )
    .fetch_optional(&mut **tx)
    .await?;

    let member_id = match (guest, existing) {
        // The guest was upgraded or merged already (a second tab, a replayed link): plain sign-in.
        (None, _) => return users::create_member(&mut **tx, member).await,
        (Some(guest), Some(member_id)) => {
            sqlx::query!(
                "UPDATE nodes SET author_id = $1 WHERE author_id = $2",
                member_id,
                guest,
            )
            .execute(&mut **tx)
            .await?;
            sqlx::query!("DELETE FROM users WHERE id = $1", guest)
                .execute(&mut **tx)
                .await?;
            member_id
        }
        // The member is new: the guest row becomes the member, keeping its id, its nickname and
        // so its nodes. Its token hash goes, so the old guest token identifies nobody.
        (Some(guest), None) => {
            sqlx::query!(
                "UPDATE users
                 SET role = 'ROLE_USER', provider = $2, provider_user_id = $3, email = $4,
                     guest_token_hash = NULL, updated_at = now()
                 WHERE id = $1",
                guest,
                member.provider,
                member.subject,
                member.email,
            )
            .execute(&mut **tx)
            .await?;
            guest
        }
    };
    users::find_by_id(&mut **tx, member_id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}
