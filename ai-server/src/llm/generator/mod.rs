//! The generative model's workers: continuous batching of topic generation and emotion scoring.
//!
//! - [`settings`]: the settings as given, and the layout chosen from them, the cores and the
//!   model (contexts, threads and sequences of each);
//! - [`job`]: what the service sends (prompt, task, deadline, reply channel);
//! - [`prompt`]: prompts as tokens (chat template or plain text, cut to fit);
//! - [`sequence`]: one sequence's state machine on plain logits (tested without a model);
//! - [`scheduler`]: one context's loop, which batches its sequences' decodes.
//!
//! One llama context holds its share of the `parallel` sequences, each with its own KV cache
//! stream (`kv_unified = false`, so a sequence's attention never sees another's cells and its
//! greedy output does not depend on its neighbours). With more than one context, each runs on its
//! own thread with the same loop, all fed from one queue: a worker takes a job only when it has a
//! free sequence. That is for small models on CPUs, where a token's cost is mostly attention and
//! cannot be shared by batching (ai-server/README.md has the measurements).

mod job;
mod prompt;
mod scheduler;
mod sequence;
mod settings;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::LlamaModel;

pub(crate) use job::{GenJob, Reply, Task};
pub use settings::{GenSettings, Layout, ModelShape, available_cores, embed_threads};

use super::LoadError;

const WORKER: &str = "generate";

/// llama.cpp's `LLAMA_FLASH_ATTN_TYPE_DISABLED`. Flash attention on the CPU picks its kernel by
/// the shape of the batch (tiled for many rows, split for one), which would make a sequence's
/// numbers depend on its neighbours.
pub(super) const FLASH_ATTN_DISABLED: i32 = 0;

/// What decides the layout in a loaded model.
pub(crate) fn model_shape(model: &LlamaModel) -> ModelShape {
    ModelShape {
        params: model.n_params(),
        layers: model.n_layer(),
        embd: u32::try_from(model.n_embd()).unwrap_or(0),
    }
}

/// Starts one worker thread per context of `layout` and waits until every context exists. The
/// workers share the returned queue; they stop once it is closed and empty and their sequences
/// have ended.
pub(super) fn spawn(
    backend: &'static LlamaBackend,
    model: Arc<LlamaModel>,
    settings: &GenSettings,
    layout: &Layout,
) -> Result<(Sender<GenJob>, Vec<JoinHandle<()>>), LoadError> {
    settings.validate(layout)?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let k = layout.sequences.len();
    let active: Arc<[AtomicUsize]> = (0..k).map(|_| AtomicUsize::new(0)).collect();
    let mut threads = Vec::new();
    for (c, &parallel) in layout.sequences.iter().enumerate() {
        let worker = Worker {
            index: c,
            parallel,
            threads: layout.threads,
            active: Arc::clone(&active),
        };
        let name = if k == 1 {
            WORKER.to_owned()
        } else {
            format!("{WORKER}-{c}")
        };
        let (model, settings) = (Arc::clone(&model), settings.clone());
        let started = super::spawn_worker(WORKER, name, rx.clone(), move |rx, ready| {
            run(backend, &model, &settings, &worker, rx, ready);
        });
        match started {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                super::stop_workers(tx, threads);
                return Err(e);
            }
        }
    }
    Ok((tx, threads))
}

/// Which of the contexts a worker runs, and what it shares with the others.
struct Worker {
    index: usize,
    /// Sequences of this context.
    parallel: u32,
    /// llama.cpp threads of this context.
    threads: i32,
    /// Running sequences of every context, for the gauge and for spreading the work.
    active: Arc<[AtomicUsize]>,
}

fn run(
    backend: &LlamaBackend,
    model: &LlamaModel,
    settings: &GenSettings,
    worker: &Worker,
    rx: Receiver<GenJob>,
    ready: std::sync::mpsc::Sender<Result<(), LoadError>>,
) {
    let n_ctx_seq = settings.n_ctx.min(model.n_ctx_train().max(64));
    let n_batch = settings.n_batch.max(1);
    // Two more sequences than this context's share: the shared prompt starts (one per task kind).
    let n_seq = worker.parallel + 2;
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx_seq * n_seq))
        .with_n_batch(n_batch)
        .with_n_ubatch(n_batch)
        .with_n_seq_max(n_seq)
        .with_kv_unified(false)
        .with_flash_attention_policy(FLASH_ATTN_DISABLED)
        .with_n_threads(worker.threads)
        .with_n_threads_batch(worker.threads);
    let ctx = match model.new_context(backend, params) {
        Ok(ctx) => ctx,
        Err(e) => {
            drop(ready.send(Err(LoadError::Context {
                worker: WORKER,
                reason: e.to_string(),
            })));
            return;
        }
    };
    let n_ctx_seq = (ctx.n_ctx() / n_seq).min(n_ctx_seq) as usize;
    let mut scheduler =
        scheduler::Scheduler::new(ctx, model, rx, worker, n_batch as usize, n_ctx_seq);
    tracing::info!(
        context = worker.index,
        parallel = worker.parallel,
        threads = worker.threads,
        n_ctx_seq,
        n_batch,
        chat_template = scheduler.chat_template(),
        "generative worker ready"
    );
    drop(ready.send(Ok(())));
    scheduler.run();
    tracing::info!(context = worker.index, "generative worker stopped");
}
