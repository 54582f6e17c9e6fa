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
