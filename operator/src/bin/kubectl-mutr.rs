//! `kubectl-mutr`: the kubectl plugin (`kubectl mutr status|promote|abort|wait`).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use mutr_operator::plugin::{self, PluginCli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = PluginCli::parse();
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(error) => {
            eprintln!("kubectl-mutr: cannot reach the cluster: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout();
    match plugin::run(client, &cli, &mut stdout).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let mut message = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("kubectl-mutr: {message}");
            ExitCode::FAILURE
        }
    }
}
