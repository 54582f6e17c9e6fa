//! `mutr-operator`: runs the MutrDeployment controller, prints the CRD (`mutr-operator crd`), or
//! prints what it would apply for a resource (`mutr-operator render`).
#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use mutr_operator::cli::{self, Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crd) => print(mutr_operator::crd::crd_yaml(), "the CRD"),
        Some(Command::Render(args)) => print(mutr_operator::render::run(&args), "the objects"),
        command => {
            cli::init_tracing(cli.log_format);
            let args = match command {
                Some(Command::Run(args)) => args,
                _ => cli.run,
            };
            match cli::run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(error = %error, source = ?std::error::Error::source(&error), "mutr-operator failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Writes a printing subcommand's output to stdout, or its error (with the cause) to stderr.
fn print<E: std::error::Error>(output: Result<String, E>, what: &str) -> ExitCode {
    let result = output.map_err(|e| {
        let cause = std::error::Error::source(&e)
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        format!("cannot produce {what}: {e}{cause}")
    });
    let written = result.and_then(|text| {
        std::io::stdout()
            .write_all(text.as_bytes())
            .map_err(|e| format!("cannot write {what}: {e}"))
    });
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("mutr-operator: {message}");
            ExitCode::FAILURE
        }
    }
}
