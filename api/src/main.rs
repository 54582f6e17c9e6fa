//! `mutr-api`: `serve`, `migrate`, `recover`, `activate` and `openapi`.

#![forbid(unsafe_code)]

use anyhow::Context as _;
use clap::Parser as _;
use mutr_api::{
    analysis::{self, ActivateSummary, recovery::RecoverSummary},
    config::{Cli, Command},
    db,
};
use tokio_util::sync::CancellationToken;

/// mimalloc rather than glibc's allocator: under the write-heavy bench glibc's `malloc`, `free`
/// and `malloc_consolidate` were a quarter of the API's CPU (api/BENCHMARKS.md, sixth round).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
            let pool = db::pool(&args.database).context("invalid DATABASE_URL")?;
            db::MIGRATOR
                .run(&pool)
                .await
                .context("running migrations")?;
            tracing::info!("migrations applied");
        }
        Command::Recover(args) => {
            let pool = db::pool(&args.database).context("invalid DATABASE_URL")?;
            let recovered = analysis::recovery::recover(&pool, &args.from_color, args.force)
                .await
                .with_context(|| format!("recovering the claims of {}", args.from_color))?;
            let line = serde_json::to_string(&RecoverSummary {
                from_color: &args.from_color,
                returned_to_pending: recovered.returned,
                still_processing: recovered.still_processing,
            })?;
            println!("{line}");
            analysis::write_termination_log(&args.termination_log, &line);
            tracing::info!(summary = %line, "recovered");
        }
        Command::Activate(args) => {
            let pool = db::pool(&args.database).context("invalid DATABASE_URL")?;
            let previous = analysis::colors::activate(&pool, &args.color)
                .await
                .with_context(|| format!("activating {}", args.color))?;
            let line = serde_json::to_string(&ActivateSummary {
                active_color: args.color.clone(),
                previous_color: previous,
            })?;
            println!("{line}");
            analysis::write_termination_log(&args.termination_log, &line);
            tracing::info!(summary = %line, "activated");
        }
        Command::Openapi => print!("{}", mutr_api::http::openapi::document()),
    }
    Ok(())
}
