//! `mutr-api`: `serve` and `migrate`.

#![forbid(unsafe_code)]

use anyhow::Context as _;
use clap::Parser as _;
use mutr_api::config::{Cli, Command};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    mutr_api::telemetry::init_tracing(cli.log_format);
    match cli.command {
        Command::Serve(args) => {
            tracing::info!(config = ?args, "starting");
            let listener = tokio::net::TcpListener::bind(args.http_addr)
                .await
                .with_context(|| format!("binding {}", args.http_addr))?;
            let shutdown = CancellationToken::new();
            tokio::spawn(mutr_api::shutdown_signal(shutdown.clone()));
            mutr_api::serve(*args, listener, shutdown).await?;
        }
        Command::Migrate(args) => {
            let pool = mutr_api::db::pool(&args.database).context("invalid DATABASE_URL")?;
            mutr_api::db::MIGRATOR
                .run(&pool)
                .await
                .context("running migrations")?;
            tracing::info!("migrations applied");
        }
    }
    Ok(())
}
