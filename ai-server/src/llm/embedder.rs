//! The embedding model's worker: packs the texts of concurrent requests into one decode (up to
//! `parallel` sequences and `n_batch` tokens), reads each sequence's pooled embedding and
//! L2-normalises it.
//!
//! llama.cpp aborts the process in `new_context` when MEAN pooling meets an `n_ubatch` that is not
//! a multiple of `n_seq_max` (ggml-org/llama.cpp#27175), so the settings are checked here first:
//! `parallel` must be a power of two that divides `n_batch`. A BERT-style model also needs each
//! text inside one ubatch, so texts are cut to `n_batch` tokens (and to the model's training
//! length).

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::{mpsc, oneshot};

use super::LoadError;
use crate::analysis::mutation::l2_normalize;
use crate::engine::EngineError;
use crate::metrics as m;

/// Settings of the embedding worker.
#[derive(Debug, Clone)]
pub struct EmbedSettings {
    /// Texts embedded in one decode; a power of two.
    pub parallel: u32,
    /// Most tokens in one decode, and the longest text in tokens; a multiple of `parallel`.
    pub n_batch: u32,
    /// CPU threads for llama.cpp.
    pub n_threads: i32,
    /// Put before every text (e5 models expect `query: `).
    pub text_prefix: String,
}

impl EmbedSettings {
    /// The settings that can change a result: the cut of long texts.
    pub(super) fn cache_identity(&self) -> String {
        format!(
            "embed_n_batch={};embed_prefix={:?}",
            self.n_batch, self.text_prefix
        )
    }

    /// Checks what llama.cpp would otherwise abort on.
    pub fn validate(&self) -> Result<(), LoadError> {
        if !self.parallel.is_power_of_two() || self.parallel > 256 {
            return Err(LoadError::Settings(format!(
                "the embedding parallelism must be a power of two up to 256, not {}",
                self.parallel
            )));
        }
        if self.n_batch < 8 || !self.n_batch.is_multiple_of(self.parallel) {
            return Err(LoadError::Settings(format!(
                "the embedding batch ({}) must be a multiple of the embedding parallelism ({})",
                self.n_batch, self.parallel
            )));
        }
        Ok(())
    }
}

/// The default number of texts embedded in one decode: the generative parallelism rounded up to a
/// power of two on the CPU, one on a GPU (`n_gpu_layers > 0`).
///
/// On the CPU llama.cpp computes each row of a matrix product and each sequence's attention in an
/// order that does not depend on the other rows, so a text's embedding is the same alone or
/// packed with others. Its CUDA kernels are picked by batch shape and reduce in a shape-dependent
/// order (llama.cpp issue 3014), so a packed text's embedding, and the mutation score computed
/// from it, changed with the other requests in flight (0.3232 alone, 0.3172 among eight others on
/// an H200). One text per decode makes it depend on that text alone.
pub fn default_parallel(gen_parallel: u32, n_gpu_layers: u32) -> u32 {
    if n_gpu_layers > 0 {
        1
    } else {
        gen_parallel.next_power_of_two()
    }
}

/// Texts to embed for one request.
pub(crate) struct EmbedJob {
    texts: Vec<String>,
    deadline: Instant,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>, EngineError>>,
}

impl EmbedJob {
    pub(crate) fn new(
        texts: Vec<String>,
        deadline: Instant,
        reply: oneshot::Sender<Result<Vec<Vec<f32>>, EngineError>>,
    ) -> Self {
        Self {
            texts,
            deadline,
            reply,
        }
    }
}

const WORKER: &str = "embed";

/// Starts the worker thread and waits until its context exists.
pub(super) fn spawn(
    backend: &'static LlamaBackend,
    model: Arc<LlamaModel>,
    settings: EmbedSettings,
) -> Result<(mpsc::UnboundedSender<EmbedJob>, JoinHandle<()>), LoadError> {
    settings.validate()?;
    let (tx, rx) = mpsc::unbounded_channel();
    let thread = super::spawn_worker(WORKER, WORKER.to_owned(), rx, move |rx, ready| {
        run(backend, &model, &settings, rx, ready)
    })?;
    Ok((tx, thread))
}

fn run(
    backend: &LlamaBackend,
    model: &LlamaModel,
    settings: &EmbedSettings,
    rx: mpsc::UnboundedReceiver<EmbedJob>,
    ready: std::sync::mpsc::Sender<Result<(), LoadError>>,
) {
    let n_batch = settings.n_batch;
    let params = LlamaContextParams::default()
        .with_embeddings(true)
        .with_flash_attention_policy(super::generator::FLASH_ATTN_DISABLED)
        .with_n_ctx(NonZeroU32::new(n_batch))
        .with_n_batch(n_batch)
        .with_n_ubatch(n_batch)
        .with_n_seq_max(settings.parallel)
        .with_n_threads(settings.n_threads)
        .with_n_threads_batch(settings.n_threads);
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
    let max_tokens = (n_batch as usize).min(model.n_ctx_train() as usize).max(2);
    tracing::info!(
        parallel = settings.parallel,
        n_batch,
        max_tokens,
        "embedding worker ready"
    );
    drop(ready.send(Ok(())));
    let mut worker = Worker {
        ctx,
        model,
        rx,
        jobs: VecDeque::new(),
        batch: LlamaBatch::new(n_batch as usize, 1),
        n_batch: n_batch as usize,
        parallel: settings.parallel as usize,
        max_tokens,
        text_prefix: settings.text_prefix.clone(),
    };
    worker.run();
    tracing::info!("embedding worker stopped");
}

struct Pending {
    tokens: Vec<Vec<LlamaToken>>,
    done: Vec<Vec<f32>>,
    deadline: Instant,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>, EngineError>>,
}

struct Worker<'m> {
    ctx: LlamaContext<'m>,
    model: &'m LlamaModel,
    rx: mpsc::UnboundedReceiver<EmbedJob>,
    /// Jobs in arrival order; texts are embedded in that order.
    jobs: VecDeque<Pending>,
    batch: LlamaBatch<'static>,
    n_batch: usize,
    parallel: usize,
    max_tokens: usize,
    text_prefix: String,
}

impl Worker<'_> {
    fn run(&mut self) {
        loop {
            if self.jobs.is_empty() {
                match self.rx.blocking_recv() {
                    Some(job) => self.accept(job),
                    None => return,
                }
            }
            while let Ok(job) = self.rx.try_recv() {
                self.accept(job);
            }
            let now = Instant::now();
            self.jobs.retain_mut(|job| {
                if job.reply.is_closed() {
                    m::sequence_ended(WORKER, "cancelled");
                    false
                } else if now >= job.deadline {
                    m::sequence_ended(WORKER, "deadline");
                    false
                } else {
                    true
                }
            });
            m::queue_depth(
                WORKER,
                self.jobs
                    .iter()
                    .map(|j| j.tokens.len() - j.done.len())
                    .sum(),
            );
            if !self.jobs.is_empty() {
                self.step();
            }
        }
    }

    fn accept(&mut self, job: EmbedJob) {
        let tokens = job.texts.iter().map(|t| self.tokenize(t)).collect();
        self.jobs.push_back(Pending {
            tokens,
            done: Vec::with_capacity(job.texts.len()),
            deadline: job.deadline,
            reply: job.reply,
        });
    }

    /// Tokens of a text with the model's special tokens ([CLS] ... [SEP]), cut to fit one ubatch
    /// with the closing token kept.
    fn tokenize(&self, text: &str) -> Vec<LlamaToken> {
        let text = format!("{}{text}", self.text_prefix);
        let mut tokens = self.model.vocab().tokenize(text.as_bytes(), true, false);
        if tokens.len() > self.max_tokens {
            let last = tokens[tokens.len() - 1];
            tokens.truncate(self.max_tokens - 1);
            tokens.push(last);
        }
        tokens
    }

    fn step(&mut self) {
        // Pack the next texts in arrival order: (job index, text index).
        let mut packed: Vec<(usize, usize)> = Vec::new();
        let mut used = 0;
        'jobs: for (j, job) in self.jobs.iter().enumerate() {
            for t in job.done.len()..job.tokens.len() {
                let n = job.tokens[t].len();
                if packed.len() == self.parallel || used + n > self.n_batch {
                    break 'jobs;
                }
                used += n;
                packed.push((j, t));
            }
        }
        self.batch.clear();
        for (seq, (j, t)) in packed.iter().enumerate() {
            let seq = i32::try_from(seq).unwrap_or(0);
            if let Err(e) = self
                .batch
                .add_sequence(&self.jobs[*j].tokens[*t], seq, false)
            {
                tracing::error!("embedding batch: {e}");
            }
        }
        m::batch(WORKER, "prefill", packed.len(), self.batch.n_tokens());
        self.ctx.clear_kv_cache();
        let decoded = self.ctx.decode(&mut self.batch);
        let mut failed = std::collections::HashSet::new();
        for (seq, (j, _)) in packed.iter().enumerate() {
            let embedding = match &decoded {
                Err(e) => Err(EngineError::Model(format!("embedding decode: {e}"))),
                Ok(()) => self
                    .ctx
                    .embeddings_seq_ith(i32::try_from(seq).unwrap_or(0))
                    .map(<[f32]>::to_vec)
                    .map_err(|_| {
                        EngineError::Model("the embedding model gave no pooled output".into())
                    }),
            };
            match embedding {
                Ok(mut v) => {
                    l2_normalize(&mut v);
                    self.jobs[*j].done.push(v);
                }
                Err(e) => {
                    if failed.insert(*j) {
                        tracing::error!("{e}");
                    }
                }
            }
        }
        // Reply to the jobs that are complete or failed; keep the rest (in order).
        let mut kept = VecDeque::with_capacity(self.jobs.len());
        for (j, job) in std::mem::take(&mut self.jobs).into_iter().enumerate() {
            if failed.contains(&j) {
                m::sequence_ended(WORKER, "error");
                drop(
                    job.reply
                        .send(Err(EngineError::Model("embedding failed".into()))),
                );
            } else if job.done.len() == job.tokens.len() {
                m::sequence_ended(WORKER, "done");
                drop(job.reply.send(Ok(job.done)));
            } else {
                kept.push_back(job);
            }
        }
        self.jobs = kept;
    }
}
