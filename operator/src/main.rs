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
        Some(Command::Crd) => match mutr_operator::crd::crd_yaml() {
            Ok(yaml) => match std::io::stdout().write_all(yaml.as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("cannot write the CRD: {e}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("cannot serialize the CRD: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Render(args)) => match mutr_operator::render::run(&args) {
            Ok(yaml) => match std::io::stdout().write_all(yaml.as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("cannot write the objects: {e}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!(
                    "mutr-operator render: {e}: {}",
                    std::error::Error::source(&e)
                        .map(ToString::to_string)
                        .unwrap_or_default()
                );
                ExitCode::FAILURE
            }
        },
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
