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
    Ok(PgPoolOptions::new()
        .max_connections(args.db_max_connections)
        .acquire_timeout(args.db_acquire_timeout)
        .idle_timeout(Some(Duration::from_secs(300)))
        .connect_lazy_with(options.application_name("mutr-api")))
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
pub fn writer_pool(pool: &PgPool, connections: u32) -> PgPool {
    let options = (*pool.connect_options()).clone().options([
        ("enable_seqscan", "off"),
        ("plan_cache_mode", "force_generic_plan"),
    ]);
    let template = pool.options();
    PgPoolOptions::new()
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
}
