//! llama.cpp through llama-cpp-2, and nothing outside this module touches it. The crate's rules
//! live here: one backend per process, a context borrows its model and stays on the thread that
//! made it, and every decode runs on a dedicated worker thread fed by a channel.
//!
//! Two workers per engine: [`generator`] (topic and emotion, continuous batching over
//! `parallel` sequences of the generative model) and [`embedder`] (sentence embeddings, several
//! texts per decode).

mod embedder;
mod generator;
pub mod probe;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use tokio::sync::{mpsc, oneshot};

use crate::analysis::prompt::Prompt;
use crate::engine::{EngineError, Models};

pub use embedder::{EmbedSettings, default_parallel as default_embed_parallel};
pub use generator::{GenSettings, Layout, ModelShape, available_cores, embed_threads};

/// Errors loading the models or starting their workers.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// llama.cpp's backend could not start.
    #[error("llama.cpp backend: {0}")]
    Backend(String),
    /// A model file could not be loaded.
    #[error("loading {path}: {reason}")]
    Model {
        /// The file.
        path: PathBuf,
        /// What llama.cpp said.
        reason: String,
    },
    /// The settings cannot work with this model (checked before llama.cpp could abort on them).
    #[error("invalid settings: {0}")]
    Settings(String),
    /// A worker could not create its context.
    #[error("creating the {worker} context: {reason}")]
    Context {
        /// Which worker.
        worker: &'static str,
        /// What llama.cpp said.
        reason: String,
    },
}

static BACKEND: OnceLock<LlamaBackend> = OnceLock::new();

/// Starts a model worker on a thread of its own, named `mutr-<name>`, and waits until `run` has
/// reported whether its llama context exists. `run` receives `rx`, the worker's end of its job
/// channel, and the readiness sender; on a failed start the thread is joined before the error is
/// returned.
fn spawn_worker<R: Send + 'static>(
    worker: &'static str,
    name: String,
    rx: R,
    run: impl FnOnce(R, std::sync::mpsc::Sender<Result<(), LoadError>>) + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, LoadError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name(format!("mutr-{name}"))
        .spawn(move || run(rx, ready_tx))
        .map_err(|e| LoadError::Context {
            worker,
            reason: e.to_string(),
        })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => {
            drop(handle.join());
            Err(e)
        }
        Err(_) => Err(LoadError::Context {
            worker,
            reason: "worker died".into(),
        }),
    }
}

/// Closes a job queue (dropping its sender) and waits for the workers that read it: they stop
/// once it is closed and their work is done. Undoes a start that failed half-way.
fn stop_workers<Q>(queue: Q, threads: Vec<std::thread::JoinHandle<()>>) {
    drop(queue);
    for t in threads {
        drop(t.join());
    }
}

/// The process's llama.cpp backend, started on first use. llama.cpp logs go to `tracing`.
fn backend() -> Result<&'static LlamaBackend, LoadError> {
    if let Some(b) = BACKEND.get() {
        return Ok(b);
    }
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
    match LlamaBackend::init() {
        Ok(b) => Ok(BACKEND.get_or_init(|| b)),
        // Another thread won the race; its backend is (or is about to be) stored.
        Err(llama_cpp_2::LlamaCppError::BackendAlreadyInitialized) => {
            let deadline = Instant::now() + std::time::Duration::from_secs(5);
            loop {
                if let Some(b) = BACKEND.get() {
                    return Ok(b);
                }
                if Instant::now() > deadline {
                    return Err(LoadError::Backend("initialised elsewhere".into()));
                }
                std::thread::yield_now();
            }
        }
        Err(e) => Err(LoadError::Backend(e.to_string())),
    }
}

/// A loaded GGUF model file, shareable between engines (tests load each file once per process).
#[derive(Clone)]
pub struct LoadedModel {
    model: Arc<LlamaModel>,
    path: PathBuf,
    identity: String,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl LoadedModel {
    /// Loads `path` with `n_gpu_layers` layers offloaded (0 on a CPU build). `identity` names the
    /// exact file (its checksum) for cache keys.
    pub fn load(path: &Path, n_gpu_layers: u32, identity: String) -> Result<Self, LoadError> {
        let backend = backend()?;
        let params = LlamaModelParams::default().with_n_gpu_layers(n_gpu_layers);
        let model =
            LlamaModel::load_from_file(backend, path, &params).map_err(|e| LoadError::Model {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            model: Arc::new(model),
            path: path.to_owned(),
            identity,
        })
    }

    /// The file it came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What decides the generative layout in this model.
    pub fn shape(&self) -> ModelShape {
        generator::model_shape(&self.model)
    }
}

/// The generative and the embedding model, each behind its worker threads.
pub struct LlamaEngine {
    /// The generative workers' shared queue: a worker takes a job when it has a free sequence.
    generator: crossbeam_channel::Sender<generator::GenJob>,
    embedder: mpsc::UnboundedSender<embedder::EmbedJob>,
    identity: String,
    layout: Layout,
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for LlamaEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaEngine")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl LlamaEngine {
    /// Starts the workers (one per generative context, one for embeddings) and waits (blocking)
    /// until their contexts exist. Call it from a blocking thread, not from the async runtime.
    pub fn start(
        gen_model: LoadedModel,
        gen_settings: GenSettings,
        embed_model: LoadedModel,
        embed: EmbedSettings,
    ) -> Result<Self, LoadError> {
        let backend = backend()?;
        let cores = available_cores();
        let shape = gen_model.shape();
        let layout = gen_settings.layout(cores, shape);
        tracing::info!(
            cores,
            weights_per_attention = format!("{:.1}", shape.weights_per_attention()),
            contexts = layout.contexts(),
            threads_per_context = layout.threads,
            sequences = ?layout.sequences,
            embed_threads = embed.n_threads,
            chosen_by = layout.chosen_by,
            "generative layout"
        );
        crate::metrics::layout(&layout, embed.n_threads);
        let identity = format!(
            "gen={};embed={};{};{};prompt=v{}",
            gen_model.identity,
            embed_model.identity,
            gen_settings.cache_identity(&layout),
            embed.cache_identity(),
            crate::analysis::prompt::PROMPT_VERSION
        );
        let (gen_tx, mut threads) =
            generator::spawn(backend, gen_model.model, &gen_settings, &layout)?;
        let (embed_tx, embed_thread) = match embedder::spawn(backend, embed_model.model, embed) {
            Ok(started) => started,
            Err(e) => {
                stop_workers(gen_tx, threads);
                return Err(e);
            }
        };
        threads.push(embed_thread);
        Ok(Self {
            generator: gen_tx,
            embedder: embed_tx,
            identity,
            layout,
            threads: std::sync::Mutex::new(threads),
        })
    }

    /// Where the generative sequences run.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Whether every worker thread is still running (a panicked worker would leave requests
    /// failing with `UNAVAILABLE` while health said `SERVING`).
    pub fn workers_alive(&self) -> bool {
        self.threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .all(|t| !t.is_finished())
    }

    /// Stops the workers once their queues are empty and waits for their threads (blocking).
    pub fn shutdown(self) {
        let Self {
            generator,
            embedder,
            threads,
            ..
        } = self;
        drop(generator);
        drop(embedder);
        let handles = std::mem::take(&mut *threads.lock().unwrap_or_else(|e| e.into_inner()));
        for handle in handles {
            if handle.join().is_err() {
                tracing::error!("a model worker panicked");
            }
        }
    }
}

async fn await_reply<T>(
    rx: oneshot::Receiver<Result<T, EngineError>>,
    deadline: Instant,
) -> Result<T, EngineError> {
    match tokio::time::timeout_at(deadline.into(), rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(EngineError::Stopped),
        Err(_) => Err(EngineError::DeadlineExceeded),
    }
}

impl Models for LlamaEngine {
    async fn generate(
        &self,
        prompt: Prompt,
        max_tokens: usize,
        deadline: Instant,
    ) -> Result<String, EngineError> {
        let (reply, rx) = oneshot::channel();
        let task = generator::Task::Generate { max_tokens };
        self.generator
            .send(generator::GenJob::new(
                prompt,
                task,
                deadline,
                generator::Reply::Text(reply),
            ))
            .map_err(|_| EngineError::Stopped)?;
        await_reply(rx, deadline).await
    }

    async fn score(
        &self,
        prompt: Prompt,
        candidates: &'static [&'static str],
        deadline: Instant,
    ) -> Result<Vec<f64>, EngineError> {
        let (reply, rx) = oneshot::channel();
        let task = generator::Task::Score { candidates };
        self.generator
            .send(generator::GenJob::new(
                prompt,
                task,
                deadline,
                generator::Reply::Scores(reply),
            ))
            .map_err(|_| EngineError::Stopped)?;
        await_reply(rx, deadline).await
    }

    async fn embed(
        &self,
        texts: Vec<String>,
        deadline: Instant,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        self.embedder
            .send(embedder::EmbedJob::new(texts, deadline, reply))
            .map_err(|_| EngineError::Stopped)?;
        await_reply(rx, deadline).await
    }

    fn identity(&self) -> &str {
        &self.identity
    }
}
