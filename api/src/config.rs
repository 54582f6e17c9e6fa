//! The command line: subcommands and the options of `serve`, gathered from the modules that own
//! them (each module defines its own clap `*Args`). Every option is a flag and an environment
//! variable (names from DESIGN.md's configuration table); secrets are redacted in `Debug`.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    analysis::{ActivateArgs, AnalysisArgs, RecoverArgs},
    auth::AuthArgs,
    db::DatabaseArgs,
    http::Limits,
    realtime::RealtimeArgs,
    secret::Secret,
    telemetry::LogFormat,
};

/// MUTR API: HTTP endpoints, live push and the hand-off to the analysis pipeline.
#[derive(Debug, Parser)]
#[command(name = "mutr-api", version, about, args_override_self = true)]
pub struct Cli {
    /// Log format: `text` for people, `json` for clusters.
    #[arg(long, env = "MUTR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `mutr-api`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve HTTP, WebSocket and `/metrics`.
    Serve(Box<ServeArgs>),
    /// Apply the database migrations embedded in this binary, then exit.
    Migrate(MigrateArgs),
    /// Return every analysis claimed by one colour to `PENDING` and wake the active replicas;
    /// prints a JSON summary (also to `/dev/termination-log` when writable).
    Recover(RecoverArgs),
    /// Record the colour whose pods claim analysis work; pods follow within a second or two.
    Activate(ActivateArgs),
    /// Print the OpenAPI 3.1 document of the REST API (what `GET /api/openapi.json` serves).
    Openapi,
}

/// Options of `mutr-api migrate`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// Options of `mutr-api serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Redis connection URL (pub/sub fan-out and coordination).
    #[arg(long = "redis-url", env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Secret,

    /// Address for HTTP, WebSocket and `/metrics`.
    #[arg(long, env = "MUTR_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// How long shutdown waits for work in flight (analyses, HTTP requests) before it exits.
    #[arg(long, env = "MUTR_DRAIN_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    pub drain_timeout: Duration,

    /// How long shutdown keeps serving after `/readyz` starts failing, so that load balancers stop
    /// sending new requests before connections close.
    #[arg(long, env = "MUTR_SHUTDOWN_GRACE", value_parser = humantime::parse_duration, default_value = "5s")]
    pub shutdown_grace: Duration,

    #[command(flatten)]
    pub auth: AuthArgs,

    #[command(flatten)]
    pub oauth: crate::oauth::OAuthArgs,

    #[command(flatten)]
    pub limits: Limits,

    #[command(flatten)]
    pub node_writer: crate::node_writer::NodeWriterArgs,

    #[command(flatten)]
    pub guest_cache: crate::auth::cache::GuestCacheArgs,

    /// Origins allowed to call the API from a browser (comma-separated, `*` for any). Empty: same
    /// origin only.
    #[arg(long, env = "MUTR_CORS_ORIGINS", value_delimiter = ',', num_args = 0..)]
    pub cors_origins: Vec<String>,

    #[command(flatten)]
    pub realtime: RealtimeArgs,

    #[command(flatten)]
    pub analysis: AnalysisArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let cli = Cli::try_parse_from([
            "mutr-api",
            "serve",
            "--database-url",
            "postgres://u:hunter2@db/mutr",
            "--redis-url",
            "redis://:hunter3@r",
            "--jwt-secret",
            "hunter4",
        ])
        .unwrap();
        let printed = format!("{cli:?}");
        for secret in ["hunter2", "hunter3", "hunter4"] {
            assert!(!printed.contains(secret), "{secret} leaked: {printed}");
        }
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.http_addr.port(), 8080);
        assert_eq!(args.limits.max_body_bytes, 65536);
        assert_eq!(args.drain_timeout, Duration::from_secs(30));
    }
}
