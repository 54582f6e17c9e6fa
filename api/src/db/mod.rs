//! PostgreSQL adapters: compile-checked queries over `impl PgExecutor`, so they run on the pool or
//! inside a transaction, and the embedded migrations.

pub mod members;
pub mod nodes;
pub mod users;

use std::time::Duration;

use clap::Args;

use sqlx::{
    PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::secret::Secret;

/// The migrations in `api/migrations`, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// Opens the pool described by `args` (lazily: the first query connects).
pub fn pool(args: &DatabaseArgs) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = args.database_url.expose().parse()?;
    Ok(
        ping_when_idle(PgPoolOptions::new(), args.db_ping_idle_after)
            .max_connections(args.db_max_connections)
            .acquire_timeout(args.db_acquire_timeout)
            .idle_timeout(Some(Duration::from_secs(300)))
            .connect_lazy_with(options.application_name("mutr-api")),
    )
}

/// Checks a pooled connection with a round trip before handing it out only when it has been idle
/// for `after` or longer. sqlx's default (`test_before_acquire`) pings every time, which made each
/// statement three round trips (sqlx also pings on every release): one claim or completion of the
/// pipeline, one `/viz` read. A connection that broke while it was in use is closed on release
/// (that ping fails); one idle for less than `after` was in use then, so it can only have broken
/// during the last `after`, and a PostgreSQL restart takes longer than the default second.
fn ping_when_idle(options: PgPoolOptions, after: Duration) -> PgPoolOptions {
    options
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= after {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// A pool of `connections` to the same database as `pool` for the node writer, whose one statement
/// ([`nodes::create_many`]) reads `nodes` and `users` only by primary key: sequential scans are
/// off on these connections (`enable_seqscan = off`), so its cached plan looks every row up
/// through the index however small the tables were when the plan was made, and that plan is
/// always the one used (`plan_cache_mode = force_generic_plan`).
///
/// Why: `nodes` grows from empty to millions of rows within one process's life, and the generic
/// plan PostgreSQL caches on each connection after five executions stays until the next
/// `ANALYZE` of the table invalidates it. Planned while `nodes` held a few thousand rows, the
/// statement joined by hash over sequential scans (cheapest then) and kept doing so as the table
/// grew: 64 nodes into a 200,000-row table took 650 ms with the plan cached at 44 rows against
/// 4-6 ms by index, and the API bench's node creation fell to a quarter of its rate once the seed
/// scenarios had run on the fresh table first. The statement's look-ups are `LATERAL` subqueries
/// with `LIMIT 1`, so they cannot become hash joins either. Planning every execution afresh
/// (`plan_cache_mode = force_custom_plan`) fixed the plan too, but cost PostgreSQL about 1 ms per
/// batch: a fifth of the machine's CPU in the write-heavy bench (`perf`, `standard_planner`).
///
/// Why the generic plan is forced: left to choose, PostgreSQL compares the generic plan's cost
/// (which assumes ten rows from each `unnest` of a parameter array) with the custom plans' (which
/// know the array's length), and for batches of one or two nodes it keeps planning afresh. The
/// pipeline bench, whose eight posters make such batches, planned 674 of 670 executions
/// (`pg_stat_statements`: 0.64 ms planning against 0.30 ms executing each).
pub fn writer_pool(pool: &PgPool, connections: u32, ping_idle_after: Duration) -> PgPool {
    let options = (*pool.connect_options()).clone().options([
        ("enable_seqscan", "off"),
        ("plan_cache_mode", "force_generic_plan"),
    ]);
    let template = pool.options();
    ping_when_idle(PgPoolOptions::new(), ping_idle_after)
        .max_connections(connections.max(1))
        .acquire_timeout(template.get_acquire_timeout())
        .idle_timeout(template.get_idle_timeout())
        .connect_lazy_with(options)
}

/// Database connection options shared by `serve` and `migrate`.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL.
    #[arg(long = "database-url", env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Secret,

    /// Most connections in the pool of this process.
    #[arg(long, env = "MUTR_DB_MAX_CONNECTIONS", default_value_t = 32)]
    pub db_max_connections: u32,

    /// How long a request waits for a free database connection before it fails.
    #[arg(long, env = "MUTR_DB_ACQUIRE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5s")]
    pub db_acquire_timeout: Duration,

    /// A pooled connection idle for this long or longer is checked with a round trip before it
    /// is used (0s: every time).
    #[arg(long, env = "MUTR_DB_PING_IDLE_AFTER", value_parser = humantime::parse_duration, default_value = "1s")]
    pub db_ping_idle_after: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool on `pool`'s database with one connection, checked when idle `after` or longer.
    fn one_connection(pool: &PgPool, after: Duration) -> PgPool {
        ping_when_idle(PgPoolOptions::new(), after)
            .max_connections(1)
            .connect_lazy_with((*pool.connect_options()).clone())
    }

    async fn backend(pool: &PgPool) -> Result<i32, sqlx::Error> {
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(pool)
            .await
    }

    /// Waits until the connection is back in the pool (sqlx pings it on release, in a task of its
    /// own; a server-side close before that ping would be caught by it instead).
    async fn back_in_pool(pool: &PgPool) {
        for _ in 0..500 {
            if pool.num_idle() == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("the connection did not come back to the pool");
    }

    /// A one-connection pool checked when idle `after` or longer, whose connection the server
    /// closed while it sat idle in the pool; and that connection's backend pid.
    async fn closed_while_idle(admin: &PgPool, after: Duration) -> (PgPool, i32) {
        let pool = one_connection(admin, after);
        let pid = backend(&pool).await.unwrap();
        back_in_pool(&pool).await;
        let done: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
            .bind(pid)
            .fetch_one(admin)
            .await
            .unwrap();
        assert!(done);
        (pool, pid)
    }

    /// A connection that the server closed while it sat idle past the threshold is found out
    /// before use, and the statement runs on a new one: no error reaches the caller.
    #[sqlx::test]
    async fn a_connection_idle_past_the_threshold_is_checked_before_use(admin: PgPool) {
        let (pool, first) = closed_while_idle(&admin, Duration::from_millis(50)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let second = backend(&pool).await.expect("a fresh connection");
        assert_ne!(first, second);
    }

    /// The trade-off, pinned: a connection back in the pool for less than the threshold is used
    /// unchecked, so one the server closed within that time fails one statement, and the pool
    /// replaces it for the next.
    #[sqlx::test]
    async fn a_connection_used_within_the_threshold_is_not_checked(admin: PgPool) {
        let (pool, first) = closed_while_idle(&admin, Duration::from_secs(3600)).await;
        assert!(
            backend(&pool).await.is_err(),
            "the closed connection was used"
        );
        let second = backend(&pool).await.expect("a fresh connection");
        assert_ne!(first, second);
    }
}
