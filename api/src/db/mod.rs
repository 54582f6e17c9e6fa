//! PostgreSQL adapters: compile-checked queries over `impl PgExecutor`, so they run on the pool or
//! inside a transaction, and the embedded migrations.

pub mod members;
pub mod nodes;
pub mod users;

use std::time::Duration;

use sqlx::{
    PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::DatabaseArgs;

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
