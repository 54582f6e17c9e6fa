//! The server's lifecycle: bind, report `NOT_SERVING` while the models load, `SERVING` after,
//! and on shutdown `NOT_SERVING` again, refuse new work, let requests in flight finish within the
//! drain timeout, stop the model workers and return.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mutr_proto::{ANALYSIS_SERVICE_NAME, AnalysisServiceServer, FILE_DESCRIPTOR_SET};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::cache::ResultCache;
use crate::llm::{EmbedSettings, GenSettings, LlamaEngine, LoadError, LoadedModel};
use crate::service::{AnalysisHandler, Limits, Shared};

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The models could not be loaded.
    #[error("loading the models")]
    Load(#[source] LoadError),
    /// The gRPC server failed.
    #[error("gRPC server")]
    Transport(#[source] tonic::transport::Error),
    /// Reflection could not be built from the descriptors.
    #[error("gRPC reflection")]
    Reflection(#[source] tonic_reflection::server::Error),
    /// The side port failed.
    #[error("metrics port")]
    Metrics(#[source] std::io::Error),
    /// A model worker thread ended while serving (a bug: it panicked).
    #[error("a model worker stopped unexpectedly")]
    WorkerDied,
}

/// Where the models come from.
#[derive(Debug)]
pub enum ModelSource {
    /// Load these files (on a blocking thread, after the ports are open).
    Files {
        /// The generative model.
        generate: std::path::PathBuf,
        /// The embedding model.
        embed: std::path::PathBuf,
        /// Layers offloaded to the GPU.
        n_gpu_layers: u32,
    },
    /// Already loaded (tests load each file once per process).
    Loaded {
        /// The generative model.
        generate: LoadedModel,
        /// The embedding model.
        embed: LoadedModel,
    },
    /// Handed over by the caller once it has them; the server reports `NOT_SERVING` until then
    /// (and fails if the sender is dropped).
    Deferred(tokio::sync::oneshot::Receiver<(LoadedModel, LoadedModel)>),
}

/// Everything `serve` needs besides its listeners.
#[derive(Debug)]
pub struct ServerConfig {
    /// The models.
    pub models: ModelSource,
    /// Generative worker settings.
    pub generate: GenSettings,
    /// Embedding worker settings.
    pub embed: EmbedSettings,
    /// Input limits and admission.
    pub limits: Limits,
    /// Largest request message in bytes.
    pub max_message_bytes: usize,
    /// How long requests in flight may take after shutdown begins.
    pub drain_timeout: Duration,
    /// The result cache, if any.
    pub cache: Option<ResultCache>,
}

/// Loads the models described by `source` (blocking).
pub fn load_models(source: ModelSource) -> Result<(LoadedModel, LoadedModel), LoadError> {
    match source {
        ModelSource::Loaded { generate, embed } => Ok((generate, embed)),
        ModelSource::Deferred(rx) => rx
            .blocking_recv()
            .map_err(|_| LoadError::Backend("no models were handed over".into())),
        ModelSource::Files {
            generate,
            embed,
            n_gpu_layers,
        } => {
            let identity = |p: &std::path::Path| {
                crate::models::fingerprint(p).map_err(|e| LoadError::Model {
                    path: p.to_owned(),
                    reason: e.to_string(),
                })
            };
            let g = LoadedModel::load(&generate, n_gpu_layers, identity(&generate)?)?;
            let e = LoadedModel::load(&embed, n_gpu_layers, identity(&embed)?)?;
            Ok((g, e))
        }
    }
}

async fn set_health(reporter: &HealthReporter, ready: &watch::Sender<bool>, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter
        .set_service_status(ANALYSIS_SERVICE_NAME, status)
        .await;
    ready.send_replace(status == ServingStatus::Serving);
}

/// Serves gRPC on `grpc` and the side port on `metrics` until `shutdown` resolves, then drains.
pub async fn serve(
    config: ServerConfig,
    grpc: TcpListener,
    metrics: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let prometheus = crate::metrics::install();
    let (ready_tx, ready_rx) = watch::channel(false);
    let (reporter, health_service) = tonic_health::server::health_reporter();
    set_health(&reporter, &ready_tx, ServingStatus::NotServing).await;

    // Both reflection versions: grpcurl and older tools ask for v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().map_err(ServeError::Reflection)?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(ServeError::Reflection)?;

    let shared: Arc<Shared<LlamaEngine>> = Shared::new(config.limits.clone(), config.cache.clone());
    let analysis = AnalysisServiceServer::new(AnalysisHandler::new(shared.clone()))
        .max_decoding_message_size(config.max_message_bytes);

    let (stop_grpc, grpc_stopped) = tokio::sync::oneshot::channel::<()>();
    let grpc_addr = grpc.local_addr().ok();
    let grpc_task = tokio::spawn(
        tonic::transport::Server::builder()
            .timeout(config.limits.request_timeout + Duration::from_secs(1))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(analysis)
            .serve_with_incoming_shutdown(TcpListenerStream::new(grpc), async {
                drop(grpc_stopped.await);
            }),
    );
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_addr = metrics.local_addr().ok();
    let metrics_task = tokio::spawn(
        axum::serve(metrics, crate::metrics::router(prometheus, ready_rx))
            .with_graceful_shutdown(async {
                drop(metrics_stopped.await);
            })
            .into_future(),
    );
    tracing::info!(grpc = ?grpc_addr, metrics = ?metrics_addr, "listening; loading the models");

    // Load on a blocking thread; the ports answer NOT_SERVING meanwhile.
    let started = Instant::now();
    let load = {
        let (source, gen_settings, embed) =
            (config.models, config.generate.clone(), config.embed.clone());
        tokio::task::spawn_blocking(move || {
            let (g, e) = load_models(source)?;
            tracing::info!(generate = %g.path().display(), embed = %e.path().display(), "models loaded");
            LlamaEngine::start(g, gen_settings, e, embed)
        })
    };
    tokio::pin!(shutdown);
    let loaded = tokio::select! {
        result = load => Some(result),
        () = &mut shutdown => None,
    };
    let mut failure = None;
    let shutdown_requested = match loaded {
        Some(Ok(Ok(engine))) => {
            shared.set_models(Arc::new(engine));
            set_health(&reporter, &ready_tx, ServingStatus::Serving).await;
            tracing::info!(elapsed = ?started.elapsed(), "SERVING");
            false
        }
        Some(Ok(Err(e))) => {
            failure = Some(ServeError::Load(e));
            false
        }
        Some(Err(join)) => {
            failure = Some(ServeError::Load(LoadError::Backend(format!(
                "loader panicked: {join}"
            ))));
            false
        }
        None => true,
    };

    if failure.is_none() && !shutdown_requested {
        // Serve until shutdown; a dead worker ends the process (so that it is restarted) rather
        // than leaving a SERVING server that fails every request.
        let watchdog = async {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let alive = shared.models().is_none_or(|m| m.workers_alive());
                if !alive {
                    return;
                }
            }
        };
        tokio::select! {
            () = &mut shutdown => {}
            () = watchdog => {
                tracing::error!("a model worker stopped unexpectedly; shutting down");
                failure = Some(ServeError::WorkerDied);
            }
        }
    }

    // Drain: fail health first, refuse new work, let what is in flight finish.
    tracing::info!(in_flight = shared.in_flight(), "draining");
    set_health(&reporter, &ready_tx, ServingStatus::NotServing).await;
    shared.start_draining();
    let drain_deadline = Instant::now() + config.drain_timeout;
    if !shared.wait_idle(drain_deadline).await {
        tracing::warn!(
            in_flight = shared.in_flight(),
            "drain timeout passed with requests still in flight"
        );
    }
    let _ = stop_grpc.send(());
    let grace = drain_deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
    let grpc_result = match tokio::time::timeout(grace, grpc_task).await {
        Ok(Ok(r)) => r.map_err(ServeError::Transport),
        Ok(Err(join)) => {
            tracing::error!("gRPC server task failed: {join}");
            Ok(())
        }
        Err(_) => {
            tracing::warn!("gRPC connections still open after the drain timeout; closing");
            Ok(())
        }
    };
    if let Some(engine) = shared.take_models() {
        match Arc::try_unwrap(engine) {
            Ok(engine) => {
                drop(tokio::task::spawn_blocking(move || engine.shutdown()).await);
            }
            Err(_) => tracing::warn!("requests still hold the models; not waiting for the workers"),
        }
    }
    let _ = stop_metrics.send(());
    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(2), metrics_task).await {
        return Err(ServeError::Metrics(e));
    }
    tracing::info!("stopped");
    match failure {
        Some(e) => Err(e),
        None => grpc_result,
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
