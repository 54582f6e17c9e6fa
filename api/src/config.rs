//! Command-line and environment configuration: every option is a flag and an environment variable
//! (names from DESIGN.md's configuration table), secrets are redacted in `Debug`.

use std::{fmt, net::SocketAddr, str::FromStr, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::realtime::RealtimeArgs;

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
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A configuration value that must never be printed (passwords in URLs, signing keys).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
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

    /// The AI server of this pod's colour (used by the analysis pipeline).
    #[arg(long, env = "MUTR_AI_URL", default_value = "http://127.0.0.1:50051")]
    pub ai_url: String,

    /// This pod's colour, recorded as claim owner.
    #[arg(long, env = "MUTR_COLOR", default_value = "blue")]
    pub color: String,

    /// This pod's name, recorded as claim owner (default: the host name).
    #[arg(long, env = "MUTR_POD_NAME", default_value_t = default_pod_name())]
    pub pod_name: String,

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
}

/// Member token verification. With neither key set, only guests can write.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// HS256 secret that member JWTs are signed with.
    #[arg(long, env = "MUTR_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// RS256 public key (PEM) that member JWTs are verified with; wins over the HS256 secret.
    #[arg(long, env = "MUTR_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<String>,
}

/// Sizes, rates and timeouts of the HTTP API.
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Largest request body accepted, in bytes; larger bodies get 413.
    #[arg(long, env = "MUTR_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,

    /// Most nodes one `/api/v1/nodes/viz` answer carries (the newest first).
    #[arg(long, env = "MUTR_VIZ_MAX_NODES", default_value_t = 5000)]
    pub viz_max_nodes: u32,

    /// Largest `range` accepted by `/api/v1/nodes/viz`.
    #[arg(long, env = "MUTR_VIZ_MAX_RANGE", default_value_t = 100_000.0)]
    pub viz_max_range: f64,

    /// Writes per second that one user may sustain; more get 429.
    #[arg(long, env = "MUTR_WRITE_RATE_PER_SEC", default_value_t = 2)]
    pub write_rate_per_sec: u32,

    /// Writes one user may make in a burst above the sustained rate.
    #[arg(long, env = "MUTR_WRITE_BURST", default_value_t = 10)]
    pub write_burst: u32,

    /// Longest time one HTTP request may take before it is answered with 503.
    #[arg(long, env = "MUTR_REQUEST_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            viz_max_nodes: 5000,
            viz_max_range: 100_000.0,
            write_rate_per_sec: 2,
            write_burst: 10,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// The host name, or `mutr-api` when it cannot be read.
fn default_pod_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "mutr-api".to_owned())
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
