//! `mutr-ai-server`: parses the command line and runs it; everything else is in the library.

#![forbid(unsafe_code)]

use clap::Parser;
use mutr_ai_server::{cli, config::Cli};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Cli::parse();
    cli::init_tracing(args.log_format);
    cli::run(args).await
}
