//! The subcommands, from parsed options to a running server or a finished download.

use std::net::SocketAddr;

use anyhow::Context as _;

use crate::cache::{CacheSettings, ResultCache};
use crate::config::{Cli, Command, FetchArgs, LogFormat, ServeArgs};
use crate::fetch::{self, FetchOptions, Fetched};
use crate::llm::{EmbedSettings, GenSettings};
use crate::models::{self, Manifest};
use crate::server::{self, ModelSource, ServerConfig};
use crate::service::Limits;

/// Sets up logging: `RUST_LOG` filters (default `info`), text or JSON lines on stderr.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::FetchModel(args) => fetch_model(args).await,
    }
}

/// The server configuration that `serve` flags describe; model files are looked up here.
pub fn server_config(args: &ServeArgs) -> anyhow::Result<ServerConfig> {
    let manifest = Manifest::load(args.models.manifest.as_deref())?;
    let dirs = models::search_dirs(args.models.model_dir.as_deref(), &args.models.cache_dir());
    let resolved = models::resolve(
        &manifest,
        args.profile.as_deref(),
        args.gen_model.as_deref(),
        args.embed_model.as_deref(),
        &dirs,
    )?;
    tracing::info!(generate = %resolved.generate.display(), embed = %resolved.embed.display(), "model files");
    let cache = match &args.redis_url {
        Some(url) if !url.is_empty() => Some(ResultCache::new(
            url,
            CacheSettings {
                ttl: args.cache_ttl,
                timeout: args.cache_timeout,
            },
        )?),
        _ => None,
    };
    Ok(ServerConfig {
        models: ModelSource::Files {
            generate: resolved.generate,
            embed: resolved.embed,
            n_gpu_layers: args.n_gpu_layers,
        },
        generate: GenSettings {
            parallel: args.parallel,
            n_ctx: args.n_ctx,
            n_batch: args.n_batch,
            n_threads: args.n_threads.filter(|n| *n > 0),
            contexts: args.gen_contexts,
        },
        embed: EmbedSettings {
            parallel: args.embed_parallel(),
            n_batch: args.embed_batch,
            n_threads: args.embed_threads(),
            text_prefix: args.embed_prefix.clone(),
        },
        limits: Limits {
            max_content_chars: args.max_content_chars,
            max_context_chars: args.max_context_chars,
            max_topic_chars: args.max_topic_chars,
            max_in_flight: args.parallel as usize + args.max_queue,
            request_timeout: args.request_timeout,
            topic_max_tokens: args.topic_max_tokens,
        },
        max_message_bytes: args.max_message_bytes,
        drain_timeout: args.drain_timeout,
        cache,
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = server_config(&args)?;
    // Checked before anything starts: llama.cpp would abort the process on these. The layout
    // is chosen once the model is loaded; this checks the most sequences one context can get.
    config.generate.validate(&crate::llm::Layout {
        threads: 1,
        sequences: vec![
            config
                .generate
                .parallel
                .div_ceil(config.generate.contexts.unwrap_or(1).max(1)),
        ],
        chosen_by: "flags",
    })?;
    config.embed.validate()?;
    let grpc_addr = SocketAddr::new(args.host, args.port);
    let grpc = tokio::net::TcpListener::bind(grpc_addr)
        .await
        .with_context(|| format!("binding gRPC on {grpc_addr}"))?;
    let metrics = crate::metrics::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding the metrics port on {}", args.metrics_addr))?;
    server::serve(config, grpc, metrics, server::shutdown_signal()).await?;
    Ok(())
}

async fn fetch_model(args: FetchArgs) -> anyhow::Result<()> {
    let manifest = Manifest::load(args.models.manifest.as_deref())?;
    let entries = manifest.profile(&args.profile)?;
    let cache = args.models.cache_dir();
    // The folders `serve` searches before the cache: a file already there needs no download.
    let look_in = match &args.dest {
        Some(_) => Vec::new(),
        None => models::search_dirs(args.models.model_dir.as_deref(), &cache)
            .into_iter()
            .filter(|d| *d != cache)
            .collect(),
    };
    let opts = FetchOptions {
        dest: args.dest.clone().unwrap_or(cache),
        require_checksum: args.require_checksum,
        base_url: args.base_url.clone(),
        pypi_url: args.pypi_url.clone(),
        look_in,
        progress: !args.no_progress,
        timeout: args.timeout,
    };
    let fetched = tokio::select! {
        r = fetch::fetch_all(entries, &opts) => r?,
        () = server::shutdown_signal() => anyhow::bail!("interrupted; nothing partial was kept"),
    };
    for f in fetched {
        match f {
            Fetched::Present(path) => tracing::info!(path = %path.display(), "already present"),
            Fetched::Downloaded { path, sha256 } => {
                tracing::info!(path = %path.display(), %sha256, "downloaded");
            }
        }
    }
    tracing::info!(dest = %opts.dest.display(), profile = %args.profile, "models ready");
    Ok(())
}
