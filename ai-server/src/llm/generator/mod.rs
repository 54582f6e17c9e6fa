//! The generative model's workers: continuous batching of topic generation and emotion scoring.
//!
//! One llama context holds up to `parallel` sequences, each with its own KV cache stream
//! (`kv_unified = false`, so a sequence's attention never sees another's cells and its greedy
//! output does not depend on its neighbours). Each loop turn admits waiting jobs into free
//! sequences, drops the ones that were cancelled or ran out of time, decodes the next prompt chunk
//! of every new sequence in one batch (each chunk exactly [`PREFILL_CHUNK`] positions, the last
//! one padded), then builds one batch holding exactly the next token of every decoding sequence,
//! decodes it once, and moves every sequence on from its logits. A sequence's KV cache is cleared
//! the moment it ends, so the next job can start on the next turn.
//!
//! `contexts` above 1 splits the sequences over that many contexts of the same loaded model, each
//! on its own thread with the same loop, all fed from one queue: a worker takes a job only when it
//! has a free sequence. That is for small models on CPUs, where a token's cost is mostly attention
//! over llama.cpp's 256-cell minimum window and cannot be shared by batching, and where llama.cpp's
//! threads are too fine-grained to help (ai-server/README.md has the measurements).

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::vocab::VocabType;
use tokio::sync::oneshot;

use super::LoadError;
use crate::analysis::emotion::log_prob;
use crate::analysis::prompt::Prompt;
use crate::engine::EngineError;
use crate::metrics as m;

/// Settings of the generative worker.
#[derive(Debug, Clone)]
pub struct GenSettings {
    /// Sequences decoded together (`--parallel`).
    pub parallel: u32,
    /// Context length of each sequence, in tokens (`n_ctx`).
    pub n_ctx: u32,
    /// Most tokens in one decode (`n_batch`).
    pub n_batch: u32,
    /// CPU threads for llama.cpp (`n_threads`), divided among the contexts (at least one each).
    pub n_threads: i32,
    /// llama contexts the sequences are spread over, each on its own thread (`--gen-contexts`);
    /// at most `parallel`.
    pub contexts: u32,
}

impl GenSettings {
    /// Checks what llama.cpp would otherwise abort on. A context holds two more sequences than
    /// its share of `parallel` (the shared prompt starts), llama.cpp allows 256 sequences, and it
    /// asserts that a batch has room for one output per sequence (`n_batch >= sequences`).
    pub fn validate(&self) -> Result<(), LoadError> {
        if self.parallel == 0 || self.parallel > 254 {
            return Err(LoadError::Settings(format!(
                "parallel must be in 1..=254, not {}",
                self.parallel
            )));
        }
        if self.n_ctx < 64 {
            return Err(LoadError::Settings(format!(
                "n_ctx must be at least 64, not {}",
                self.n_ctx
            )));
        }
        if self.contexts == 0 {
            return Err(LoadError::Settings(
                "gen-contexts must be at least 1".into(),
            ));
        }
        let most = self.sequences(0);
        if self.n_batch < most + 2 {
            return Err(LoadError::Settings(format!(
                "n_batch ({}) must be at least the sequences of one context + 2 ({})",
                self.n_batch,
                most + 2
            )));
        }
        Ok(())
    }

    /// Contexts actually made: at most one per sequence, so `--parallel 1` stays one at a time.
    pub fn contexts(&self) -> u32 {
        self.contexts.clamp(1, self.parallel.max(1))
    }

    /// Sequences of context `c`: `parallel` shared out as evenly as possible.
    pub fn sequences(&self, c: u32) -> u32 {
        let k = self.contexts();
        self.parallel / k + u32::from(c < self.parallel % k)
    }

    /// llama.cpp threads of each context.
    fn threads_per_context(&self) -> i32 {
        let k = i32::try_from(self.contexts()).unwrap_or(1);
        (self.n_threads / k).max(1)
    }

    /// Prompt positions each sequence gets in one prefill decode: [`PREFILL_CHUNK`], or less
    /// when `n_batch` is smaller.
    pub(super) fn prefill_chunk(&self) -> usize {
        PREFILL_CHUNK.min(self.n_batch as usize).max(1)
    }

    /// The settings that can change a result: a smaller context cuts prompts shorter, and the
    /// prefill chunk sets the shape the prompt is computed in (so its rounding).
    pub(super) fn cache_identity(&self) -> String {
        // Contexts of one sequence decode single tokens (no neighbour): another kernel shape.
        let single = if self.sequences(0) == 1 {
            ";single_steps"
        } else {
            ""
        };
        format!(
            "n_ctx={};prefill_chunk={}{single}",
            self.n_ctx,
            self.prefill_chunk()
        )
    }
}

/// What a job asks for.
pub(crate) enum Task {
    /// Greedy generation of at most `max_tokens` tokens, ending at a newline after some text.
    Generate { max_tokens: usize },
    /// Log-likelihood of each candidate as the continuation of the prompt.
    Score { candidates: &'static [&'static str] },
}

/// Where a job's result goes.
pub(crate) enum Reply {
    Text(oneshot::Sender<Result<String, EngineError>>),
    Scores(oneshot::Sender<Result<Vec<f64>, EngineError>>),
}

impl Reply {
    fn is_closed(&self) -> bool {
        match self {
            Reply::Text(tx) => tx.is_closed(),
            Reply::Scores(tx) => tx.is_closed(),
        }
    }

    fn fail(self, error: EngineError) {
        // A receiver that is gone has nobody to tell.
        match self {
            Reply::Text(tx) => drop(tx.send(Err(error))),
            Reply::Scores(tx) => drop(tx.send(Err(error))),
        }
    }
}

/// One unit of work for the generative model.
pub(crate) struct GenJob {
    prompt: Prompt,
    task: Task,
    deadline: Instant,
    reply: Reply,
}

impl GenJob {
    pub(crate) fn new(prompt: Prompt, task: Task, deadline: Instant, reply: Reply) -> Self {
        Self {
            prompt,
            task,
            deadline,
            reply,
        }
    }
}

const WORKER: &str = "generate";

/// Starts one worker thread per context and waits until every context exists. The workers share
/// the returned queue; they stop once it is closed and empty and their sequences have ended.
pub(super) fn spawn(
    backend: &'static LlamaBackend,
    model: Arc<LlamaModel>,
    settings: GenSettings,
) -> Result<(Sender<GenJob>, Vec<JoinHandle<()>>), LoadError> {
    settings.validate()?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let k = settings.contexts();
    let active: Arc<[AtomicUsize]> = (0..k).map(|_| AtomicUsize::new(0)).collect();
    let mut threads = Vec::new();
    for c in 0..k {
        let worker = Worker {
            index: c as usize,
            parallel: settings.sequences(c),
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
    /// Running sequences of every context, for the gauge.
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
    let threads = settings.threads_per_context();
    // Two more sequences than this context's share: the shared prompt starts (one per task kind).
    let n_seq = worker.parallel + 2;
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx_seq * n_seq))
        .with_n_batch(n_batch)
        .with_n_ubatch(n_batch)
        .with_n_seq_max(n_seq)
        .with_kv_unified(false)
        .with_flash_attention_policy(FLASH_ATTN_DISABLED)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
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
    let prompts = PromptBuilder::new(model);
    tracing::info!(
        context = worker.index,
        parallel = worker.parallel,
        threads,
        n_ctx_seq,
        n_batch,
        chat_template = prompts.template.is_some(),
        "generative worker ready"
    );
    drop(ready.send(Ok(())));
    let holder = |k: u32| Prefix {
        seq: i32::try_from(worker.parallel + k).unwrap_or(i32::MAX),
        tokens: Vec::new(),
    };
    let mut scheduler = Scheduler {
        ctx,
        model,
        prompts,
        rx,
        worker,
        waiting: VecDeque::new(),
        slots: (0..worker.parallel).map(|_| None).collect(),
        prefixes: [holder(0), holder(1)],
        batch: LlamaBatch::new(n_batch as usize, 1),
        n_batch: n_batch as usize,
        prefill_chunk: settings.prefill_chunk(),
        n_ctx_seq,
    };
    scheduler.run();
    tracing::info!(context = worker.index, "generative worker stopped");
}

/// Turns a [`Prompt`] into tokens that fit the context, through the model's chat template when
/// it has one that llama.cpp can apply, else as plain text.
struct PromptBuilder<'m> {
    model: &'m LlamaModel,
    template: Option<LlamaChatTemplate>,
    /// Candidates follow a space in a plain prompt (`감정: joy`); SentencePiece adds it itself.
    candidate_space: bool,
}

impl<'m> PromptBuilder<'m> {
    fn new(model: &'m LlamaModel) -> Self {
        let template = model.chat_template(None).ok().filter(|t| {
            let probe = [
                LlamaChatMessage::new("system".into(), "s".into()),
                LlamaChatMessage::new("user".into(), "u".into()),
            ];
            match probe.into_iter().collect::<Result<Vec<_>, _>>() {
                Ok(chat) => model.apply_chat_template(t, &chat, true).is_ok(),
                Err(_) => false,
            }
        });
        let spm = matches!(model.vocab().vocab_type(), VocabType::SPM);
        let candidate_space = template.is_none() && !spm;
        Self {
            model,
            template,
            candidate_space,
        }
    }

    fn render(&self, prompt: &Prompt, flow: &str) -> Result<(String, bool), EngineError> {
        let Some(template) = &self.template else {
            return Ok((prompt.render_plain(flow), false));
        };
        // Special-token text in user input must stay text: the rendered prompt is tokenized
        // with special parsing on, for the template's own markers.
        let flow = flow.replace("<|", "< |").replace("|>", "| >");
        let chat = [
            LlamaChatMessage::new("system".into(), prompt.system.clone()),
            LlamaChatMessage::new("user".into(), prompt.render_user(&flow)),
        ]
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| EngineError::Model(format!("chat message: {e}")))?;
        let text = self
            .model
            .apply_chat_template(template, &chat, true)
            .map_err(|e| EngineError::Model(format!("chat template: {e}")))?;
        Ok((text, true))
    }

    fn tokenize(&self, prompt: &Prompt, flow: &str) -> Result<Vec<LlamaToken>, EngineError> {
        let (text, special) = self.render(prompt, flow)?;
        let vocab = self.model.vocab();
        let mut tokens = vocab.tokenize(text.as_bytes(), true, special);
        // A template that writes its own BOS text gives two BOS tokens.
        if tokens.len() >= 2 && tokens[0] == vocab.bos() && tokens[1] == vocab.bos() {
            tokens.remove(0);
        }
        Ok(tokens)
    }

    /// Tokens of the prompt, cutting the flow from the front (the oldest text goes first) until
    /// it fits in `budget` tokens.
    fn fit(&self, prompt: &Prompt, budget: usize) -> Result<Vec<LlamaToken>, EngineError> {
        let mut flow: &str = &prompt.flow;
        for _ in 0..8 {
            let tokens = self.tokenize(prompt, flow)?;
            if tokens.len() <= budget {
                return Ok(tokens);
            }
            if flow.is_empty() {
                break;
            }
            let over = tokens.len() - budget;
            let flow_tokens = self
                .model
                .vocab()
                .tokenize(flow.as_bytes(), false, false)
                .len()
                .max(1);
            let chars = flow.chars().count();
            let keep_tokens = flow_tokens.saturating_sub(over);
            // 10% margin: tokens do not split evenly over characters.
            let keep_chars = (chars * keep_tokens / flow_tokens) * 9 / 10;
            let cut = flow
                .char_indices()
                .nth(chars - keep_chars)
                .map_or(flow.len(), |(i, _)| i);
            flow = &flow[cut..];
        }
        Err(EngineError::Model(format!(
            "the prompt does not fit in {budget} tokens even without the text; raise n_ctx"
        )))
    }

    fn candidate(&self, label: &str) -> Vec<LlamaToken> {
        let text = if self.candidate_space {
            format!(" {label}")
        } else {
            label.to_owned()
        };
        self.model.vocab().tokenize(text.as_bytes(), false, false)
    }
}

struct Slot {
    seq: i32,
    reply: Reply,
    deadline: Instant,
    /// The prompt; `fed` of them are in the KV cache.
    tokens: Vec<LlamaToken>,
    fed: usize,
    state: State,
}

enum State {
    /// Feeding the prompt; the task starts from the last prompt token's logits.
    Prefill { task: Task },
    /// Generating: `next` goes in at position `fed`.
    Generate {
        next: LlamaToken,
        out: Vec<u8>,
        produced: usize,
        max_tokens: usize,
    },
    /// Scoring: token `j` of candidate `current` goes in after the prompt, and the logits give
    /// the likelihood of token `j + 1`; a finished candidate leaves the cache again.
    Score {
        candidates: Vec<Vec<LlamaToken>>,
        scores: Vec<f64>,
        current: usize,
        j: usize,
    },
}

/// The shared start of one kind of prompt (system message and instructions), decoded once into
/// its own sequence and copied into each new sequence of that kind.
struct Prefix {
    seq: i32,
    tokens: Vec<LlamaToken>,
}

/// Prompt positions per sequence in one prefill decode (fewer when `n_batch` is smaller). With
/// `n_batch` 512, sixteen sequences' chunks fit one decode.
pub(crate) const PREFILL_CHUNK: usize = 32;

/// Shortest shared start worth copying.
const MIN_PREFIX: usize = 8;

/// llama.cpp's `LLAMA_FLASH_ATTN_TYPE_DISABLED`. Flash attention on the CPU picks its kernel by
/// the shape of the batch (tiled for many rows, split for one), which would make a sequence's
/// numbers depend on its neighbours.
pub(super) const FLASH_ATTN_DISABLED: i32 = 0;

struct Scheduler<'m> {
    ctx: LlamaContext<'m>,
    model: &'m LlamaModel,
    prompts: PromptBuilder<'m>,
    /// The queue shared by every context's worker.
    rx: Receiver<GenJob>,
    worker: &'m Worker,
    /// Jobs taken from the queue, admitted on this turn (never more than the free sequences).
    waiting: VecDeque<GenJob>,
    slots: Vec<Option<Slot>>,
    /// One per task kind: topic prompts, emotion prompts.
    prefixes: [Prefix; 2],
    batch: LlamaBatch<'static>,
    n_batch: usize,
    /// Prompt positions per sequence in one prefill decode.
    prefill_chunk: usize,
    n_ctx_seq: usize,
}

/// Why the schedule is shaped the way it is: llama.cpp's CPU kernels compute a token's numbers
/// the same way whatever else is in the batch only when the batch has the same shape per
/// sequence. So a prefill decode gives every sequence exactly `prefill_chunk` positions (its
/// chunks depend only on its prompt), and every decode step carries exactly one token per
/// sequence and at least two tokens in all (a throw-away token in the next sequence's stream when
/// only one sequence is decoding; see [`Scheduler::decode_step`]). Greedy output is then the same
/// alone or among any number of others, which a test checks.
impl Scheduler<'_> {
    fn run(&mut self) {
        loop {
            let idle = self.slots.iter().all(Option::is_none) && self.waiting.is_empty();
            if idle {
                self.worker.active[self.worker.index].store(0, Ordering::Relaxed);
                // Closed and empty: the server is stopping and nothing is left to do.
                match self.rx.recv() {
                    Ok(job) => self.waiting.push_back(job),
                    Err(_) => return,
                }
            }
            self.drop_abandoned();
            self.take_jobs();
            self.admit();
            let running = self.slots.iter().flatten().count();
            self.worker.active[self.worker.index].store(running, Ordering::Relaxed);
            m::queue_depth(WORKER, self.rx.len());
            m::active_sequences(
                WORKER,
                self.worker
                    .active
                    .iter()
                    .map(|a| a.load(Ordering::Relaxed))
                    .sum(),
            );
            self.prefill_step();
            self.decode_step();
        }
    }

    /// Takes jobs from the shared queue while this context has free sequences for them and no
    /// other context has fewer sequences (that one takes the job on its next turn, or at once
    /// when it was idle), so the work spreads over the contexts; a job whose caller is gone or
    /// whose deadline passed is dropped on the way.
    fn take_jobs(&mut self) {
        let running = self.slots.iter().flatten().count();
        let free = self.slots.len() - running;
        let now = Instant::now();
        while self.waiting.len() < free {
            let load = running + self.waiting.len();
            self.worker.active[self.worker.index].store(load, Ordering::Relaxed);
            let least_loaded =
                self.worker.active.iter().enumerate().all(|(c, other)| {
                    c == self.worker.index || load <= other.load(Ordering::Relaxed)
                });
            if !least_loaded {
                return;
            }
            let Ok(job) = self.rx.try_recv() else { return };
            if let Some(job) = keep_if_wanted(job, now) {
                self.waiting.push_back(job);
            }
        }
    }

    /// Drops taken jobs and running sequences whose caller is gone or whose deadline passed.
    fn drop_abandoned(&mut self) {
        let now = Instant::now();
        self.waiting = std::mem::take(&mut self.waiting)
            .into_iter()
            .filter_map(|job| keep_if_wanted(job, now))
            .collect();
        for i in 0..self.slots.len() {
            let Some(slot) = &self.slots[i] else { continue };
            if slot.reply.is_closed() {
                m::sequence_ended(WORKER, "cancelled");
                self.free(i);
            } else if now >= slot.deadline {
                m::sequence_ended(WORKER, "deadline");
                if let Some(slot) = self.free(i) {
                    slot.reply.fail(EngineError::DeadlineExceeded);
                }
            }
        }
    }

    fn admit(&mut self) {
        for i in 0..self.slots.len() {
            if self.slots[i].is_some() {
                continue;
            }
            let Some(job) = self.waiting.pop_front() else {
                return;
            };
            let reserve = match &job.task {
                Task::Generate { max_tokens } => *max_tokens + 1,
                Task::Score { candidates } => {
                    candidates
                        .iter()
                        .map(|c| self.prompts.candidate(c).len())
                        .max()
                        .unwrap_or(0)
                        + 1
                }
            };
            // The last prompt chunk is padded to full length: room for it after the prompt.
            let budget = self
                .n_ctx_seq
                .saturating_sub(reserve.max(self.prefill_chunk));
            let tokens = match self.prompts.fit(&job.prompt, budget) {
                Ok(tokens) if !tokens.is_empty() => tokens,
                Ok(_) => {
                    job.reply.fail(EngineError::Model("empty prompt".into()));
                    continue;
                }
                Err(e) => {
                    job.reply.fail(e);
                    continue;
                }
            };
            let seq = i32::try_from(i).unwrap_or(i32::MAX);
            let kind = match job.task {
                Task::Generate { .. } => 0,
                Task::Score { .. } => 1,
            };
            let fed = self.reuse_prefix(kind, &job.prompt, &tokens, seq);
            m::context_sequence(self.worker.index);
            tracing::debug!(
                context = self.worker.index,
                seq,
                prompt_tokens = tokens.len(),
                reused = fed,
                "sequence admitted"
            );
            self.slots[i] = Some(Slot {
                seq,
                reply: job.reply,
                deadline: job.deadline,
                tokens,
                fed,
                state: State::Prefill { task: job.task },
            });
        }
    }

    /// Copies the shared prompt start of this kind into `seq` (decoding it first if it is not
    /// there yet) and returns how many of `tokens` it covers.
    fn reuse_prefix(
        &mut self,
        kind: usize,
        prompt: &Prompt,
        tokens: &[LlamaToken],
        seq: i32,
    ) -> usize {
        if self.prefixes[kind].tokens.is_empty() {
            let Ok(skeleton) = self.prompts.tokenize(&prompt.skeleton(), "") else {
                return 0;
            };
            let shared = common_prefix(tokens, &skeleton);
            if shared < MIN_PREFIX {
                return 0;
            }
            let holder = self.prefixes[kind].seq;
            if self.decode_alone(holder, &tokens[..shared]).is_err() {
                self.clear(holder, None);
                return 0;
            }
            self.prefixes[kind].tokens = tokens[..shared].to_vec();
        }
        let prefix = &self.prefixes[kind];
        // At least one prompt token is decoded for the sequence itself: its logits start the task.
        let shared = common_prefix(tokens, &prefix.tokens).min(tokens.len() - 1);
        if shared < MIN_PREFIX {
            return 0;
        }
        if let Err(e) = self.ctx.copy_kv_cache_seq(prefix.seq, seq, None, None) {
            tracing::error!("copying a prompt prefix failed: {e}");
            return 0;
        }
        if shared < prefix.tokens.len() {
            self.clear(seq, u32::try_from(shared).ok());
        }
        shared
    }

    /// Decodes `tokens` of one sequence from position 0, alone, in chunks of `n_batch`, keeping
    /// no logits (the shared prompt starts).
    fn decode_alone(&mut self, seq: i32, tokens: &[LlamaToken]) -> Result<(), EngineError> {
        for (c, chunk) in tokens.chunks(self.n_batch).enumerate() {
            self.batch.clear();
            for (j, t) in chunk.iter().enumerate() {
                let p = i32::try_from(c * self.n_batch + j).unwrap_or(i32::MAX);
                self.batch
                    .add(*t, p, &[seq], false)
                    .map_err(|e| EngineError::Model(format!("batch: {e}")))?;
            }
            m::batch(WORKER, "prefill", 1, self.batch.n_tokens());
            self.ctx
                .decode(&mut self.batch)
                .map_err(|e| EngineError::Model(format!("decode: {e}")))?;
        }
        Ok(())
    }

    /// Clears `seq`'s cache from position `from` on (all of it with `None`).
    fn clear(&mut self, seq: i32, from: Option<u32>) {
        if let Err(e) = self
            .ctx
            .clear_kv_cache_seq(u32::try_from(seq).ok(), from, None)
        {
            tracing::error!(seq, "clearing a sequence's cache failed: {e}");
        }
    }

    /// Ends the sequence in slot `i` and clears its KV cache.
    fn free(&mut self, i: usize) -> Option<Slot> {
        let slot = self.slots[i].take()?;
        self.clear(slot.seq, None);
        Some(slot)
    }

    /// The next prompt chunk of every prefilling sequence, batched: as many sequences per decode
    /// as `n_batch` holds, each with exactly `prefill_chunk` positions. A sequence whose prompt
    /// ends inside its chunk fills the rest with throw-away tokens after the prompt's end (causal
    /// attention keeps them out of the prompt's numbers), which leave the cache right after the
    /// decode. So a sequence's part of every prefill batch has one shape, alone or among others.
    fn prefill_step(&mut self) {
        let chunk = self.prefill_chunk;
        let prefilling: Vec<usize> = (0..self.slots.len())
            .filter(|i| {
                matches!(
                    self.slots[*i],
                    Some(Slot {
                        state: State::Prefill { .. },
                        ..
                    })
                )
            })
            .collect();
        let per_decode = (self.n_batch / chunk).max(1);
        for group in prefilling.chunks(per_decode) {
            self.batch.clear();
            // (slot, batch index of the last real token, where the padding starts, if any)
            let mut planned: Vec<(usize, i32, Option<usize>)> = Vec::with_capacity(group.len());
            for &i in group {
                let Some(slot) = &self.slots[i] else { continue };
                let (seq, fed) = (slot.seq, slot.fed);
                let n = (slot.tokens.len() - fed).min(chunk);
                let last = fed + n == slot.tokens.len();
                let mut index = 0;
                let mut added = true;
                for j in 0..chunk {
                    // Token 0 exists in every vocabulary; a pad token's output is never read.
                    let (token, want) = if j < n {
                        (slot.tokens[fed + j], last && j + 1 == n)
                    } else {
                        (LlamaToken(0), false)
                    };
                    if j + 1 == n {
                        index = self.batch.n_tokens();
                    }
                    let pos = i32::try_from(fed + j).unwrap_or(i32::MAX);
                    if self.batch.add(token, pos, &[seq], want).is_err() {
                        added = false;
                        break;
                    }
                }
                if !added {
                    tracing::error!("a prompt chunk does not fit the batch; raise n_batch");
                    break;
                }
                planned.push((i, index, (n < chunk).then_some(fed + n)));
            }
            if planned.is_empty() {
                return;
            }
            m::batch(WORKER, "prefill", planned.len(), self.batch.n_tokens());
            let result = self.ctx.decode(&mut self.batch);
            for &(i, _, pad_from) in &planned {
                if let (Some(from), Some(slot)) = (pad_from, &self.slots[i]) {
                    let seq = slot.seq;
                    self.clear(seq, u32::try_from(from).ok());
                }
            }
            if let Err(e) = result {
                tracing::error!(sequences = planned.len(), "prompt decode failed: {e}");
                for (i, _, _) in planned {
                    if let Some(slot) = self.free(i) {
                        m::sequence_ended(WORKER, "error");
                        slot.reply.fail(EngineError::Model(format!("decode: {e}")));
                    }
                }
                continue;
            }
            for (i, index, _) in planned {
                self.advance(i, index);
            }
        }
    }

    /// One token for every decoding sequence, in one batch.
    ///
    /// llama.cpp's cache with one stream per sequence computes a batch as one unit only when its
    /// sequence ids are consecutive (it splits the rest into several computations, each with its
    /// own graph), and attends over every stream from the lowest id in the unit to the highest.
    /// So the gaps between decoding sequences (free slots, sequences still prefilling) get a
    /// throw-away token each, removed right after; and a lone sequence gets its next neighbour,
    /// so that no step is a single token (see the type's comment).
    fn decode_step(&mut self) {
        // (slot, token, position) of every decoding sequence, by sequence id.
        let mut wanted: Vec<(usize, LlamaToken, usize)> = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(slot) = slot else { continue };
            match &slot.state {
                State::Prefill { .. } => {}
                State::Generate { next, .. } => wanted.push((i, *next, slot.fed)),
                State::Score {
                    candidates,
                    current,
                    j,
                    ..
                } => wanted.push((i, candidates[*current][*j], slot.fed + j)),
            }
        }
        let (Some(&(lo, ..)), Some(&(last, ..))) = (wanted.first(), wanted.last()) else {
            return;
        };
        // A lone sequence gets a neighbour (the next sequence id: a slot or the first prefix
        // holder) only where it could have had real ones: a context with a single slot always
        // decodes one token per step, so its shape never changes, and a neighbour there would
        // only cost time (the --parallel 1 baseline ran 27% slower with it).
        let hi = if wanted.len() == 1 && self.slots.len() > 1 {
            last + 1
        } else {
            last
        };
        self.batch.clear();
        let mut planned: Vec<(usize, i32)> = Vec::with_capacity(wanted.len());
        let mut pads: Vec<(i32, usize)> = Vec::new();
        let mut next = wanted.iter().copied().peekable();
        for id in lo..=hi {
            let seq = i32::try_from(id).unwrap_or(i32::MAX);
            let index = self.batch.n_tokens();
            let added = match next.next_if(|w| w.0 == id) {
                Some((i, token, pos)) => {
                    let pos = i32::try_from(pos).unwrap_or(i32::MAX);
                    let ok = self.batch.add(token, pos, &[seq], true).is_ok();
                    if ok {
                        planned.push((i, index));
                    }
                    ok
                }
                None => {
                    // Token 0 exists in every vocabulary (BOS may be -1); its output is never read.
                    let pos = self.next_position(id);
                    let p = i32::try_from(pos).unwrap_or(i32::MAX);
                    let ok = self.batch.add(LlamaToken(0), p, &[seq], false).is_ok();
                    if ok {
                        pads.push((seq, pos));
                    }
                    ok
                }
            };
            if !added {
                tracing::error!("the batch has no room for a decode step; raise n_batch");
                break;
            }
        }
        m::batch(WORKER, "decode", planned.len(), self.batch.n_tokens());
        let result = self.ctx.decode(&mut self.batch);
        for (seq, pos) in pads {
            self.clear(seq, u32::try_from(pos).ok());
        }
        if let Err(e) = result {
            tracing::error!(sequences = planned.len(), "decode failed: {e}");
            for (i, _) in planned {
                if let Some(slot) = self.free(i) {
                    m::sequence_ended(WORKER, "error");
                    slot.reply.fail(EngineError::Model(format!("decode: {e}")));
                }
            }
            return;
        }
        for (i, index) in planned {
            self.advance(i, index);
        }
    }

    /// Where the next token of sequence `id` goes: after what its stream holds.
    fn next_position(&self, id: usize) -> usize {
        match self.slots.get(id) {
            Some(Some(slot)) => slot.fed,
            Some(None) => 0,
            None => self
                .prefixes
                .get(id - self.slots.len())
                .map_or(0, |p| p.tokens.len()),
        }
    }

    /// Moves slot `i` on from the logits at batch index `index` of the decode just done.
    fn advance(&mut self, i: usize, index: i32) {
        let Some(mut slot) = self.slots[i].take() else {
            return;
        };
        let placeholder = State::Prefill {
            task: Task::Generate { max_tokens: 0 },
        };
        let next_state = match std::mem::replace(&mut slot.state, placeholder) {
            State::Prefill { task } => {
                let n = (slot.tokens.len() - slot.fed).min(self.prefill_chunk);
                slot.fed += n;
                if slot.fed < slot.tokens.len() {
                    Some(State::Prefill { task })
                } else {
                    let logits = self.ctx.get_logits_ith(index);
                    match task {
                        Task::Generate { max_tokens } => {
                            let token = argmax(logits);
                            self.on_token(&mut slot, token, Vec::new(), 0, max_tokens)
                        }
                        Task::Score { candidates } => {
                            let candidates: Vec<Vec<LlamaToken>> = candidates
                                .iter()
                                .map(|c| self.prompts.candidate(c))
                                .collect();
                            let scores = candidates
                                .iter()
                                .map(|c| {
                                    c.first()
                                        .map_or(f64::NEG_INFINITY, |t| token_log_prob(logits, *t))
                                })
                                .collect();
                            next_candidate(&mut slot, candidates, scores, 0)
                        }
                    }
                }
            }
            State::Generate {
                next: _,
                out,
                produced,
                max_tokens,
            } => {
                slot.fed += 1;
                let token = argmax(self.ctx.get_logits_ith(index));
                self.on_token(&mut slot, token, out, produced, max_tokens)
            }
            State::Score {
                candidates,
                mut scores,
                current,
                j,
            } => {
                let c = &candidates[current];
                scores[current] += token_log_prob(self.ctx.get_logits_ith(index), c[j + 1]);
                if j + 2 < c.len() {
                    Some(State::Score {
                        candidates,
                        scores,
                        current,
                        j: j + 1,
                    })
                } else {
                    // The candidate's tokens leave the cache: the next one follows the prompt again.
                    self.clear(slot.seq, u32::try_from(slot.fed).ok());
                    next_candidate(&mut slot, candidates, scores, current + 1)
                }
            }
        };
        match next_state {
            Some(state) => {
                slot.state = state;
                self.slots[i] = Some(slot);
            }
            None => {
                // Finished: the reply was sent; the sequence is cleared for the next job.
                self.slots[i] = Some(slot);
                self.free(i);
                m::sequence_ended(WORKER, "done");
            }
        }
    }

    /// Takes the greedy token of a generating sequence; `None` when the generation is over (its
    /// reply is then sent).
    fn on_token(
        &self,
        slot: &mut Slot,
        token: LlamaToken,
        mut out: Vec<u8>,
        produced: usize,
        max_tokens: usize,
    ) -> Option<State> {
        let vocab = self.model.vocab();
        let mut done = vocab.is_eog(token);
        let produced = produced + 1;
        if !done {
            m::generated_tokens(1);
            out.extend_from_slice(&vocab.token_to_piece(token, false, None));
            // A newline ends the title once there is some text; leading newlines are skipped.
            if let Some(nl) = out.iter().position(|b| *b == b'\n')
                && out[..nl].iter().any(|b| !b.is_ascii_whitespace())
            {
                out.truncate(nl);
                done = true;
            }
        }
        if done || produced >= max_tokens || slot.fed + 1 >= self.n_ctx_seq {
            let text = String::from_utf8_lossy(&out)
                .trim_end_matches('\u{FFFD}')
                .to_owned();
            if let Reply::Text(tx) =
                std::mem::replace(&mut slot.reply, Reply::Scores(oneshot::channel().0))
            {
                drop(tx.send(Ok(text)));
            }
            return None;
        }
        Some(State::Generate {
            next: token,
            out,
            produced,
            max_tokens,
        })
    }
}

/// The next candidate that needs a decode (one of more than one token), or the reply when none is
/// left.
fn next_candidate(
    slot: &mut Slot,
    candidates: Vec<Vec<LlamaToken>>,
    scores: Vec<f64>,
    from: usize,
) -> Option<State> {
    match (from..candidates.len()).find(|i| candidates[*i].len() > 1) {
        Some(current) => Some(State::Score {
            candidates,
            scores,
            current,
            j: 0,
        }),
        None => {
            if let Reply::Scores(tx) =
                std::mem::replace(&mut slot.reply, Reply::Text(oneshot::channel().0))
            {
                drop(tx.send(Ok(scores)));
            }
            None
        }
    }
}

/// The job, unless its caller went away (cancelled, or the gRPC deadline passed) or its own
/// deadline passed; either way it is counted, and a job out of time is told so.
fn keep_if_wanted(job: GenJob, now: Instant) -> Option<GenJob> {
    if job.reply.is_closed() {
        m::sequence_ended(WORKER, "cancelled");
        None
    } else if now >= job.deadline {
        m::sequence_ended(WORKER, "deadline");
        job.reply.fail(EngineError::DeadlineExceeded);
        None
    } else {
        Some(job)
    }
}

fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Greedy choice; ties go to the lowest token id, so the choice is reproducible.
fn argmax(logits: &[f32]) -> LlamaToken {
    let mut best = 0usize;
    for (i, l) in logits.iter().enumerate() {
        if *l > logits[best] {
            best = i;
        }
    }
    LlamaToken(i32::try_from(best).unwrap_or(0))
}

fn token_log_prob(logits: &[f32], token: LlamaToken) -> f64 {
    usize::try_from(token.0).map_or(f64::NEG_INFINITY, |t| log_prob(logits, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(parallel: u32, contexts: u32, n_batch: u32) -> GenSettings {
        GenSettings {
            parallel,
            n_ctx: 512,
            n_batch,
            n_threads: 4,
            contexts,
        }
    }

    #[test]
    fn sequences_are_shared_out_over_the_contexts() {
        let s = settings(8, 2, 512);
        assert_eq!((s.contexts(), s.sequences(0), s.sequences(1)), (2, 4, 4));
        assert_eq!(s.threads_per_context(), 2);
        let s = settings(9, 2, 512);
        assert_eq!((s.sequences(0), s.sequences(1)), (5, 4));
        // More contexts than sequences: one sequence each; --parallel 1 stays one at a time.
        let s = settings(3, 8, 512);
        assert_eq!((s.contexts(), s.sequences(2)), (3, 1));
        assert_eq!(s.threads_per_context(), 1);
        assert_eq!(settings(1, 4, 512).contexts(), 1);
    }

    #[test]
    fn one_sequence_contexts_have_their_own_cache_identity() {
        // Spreading sequences over contexts does not change a result; single-token steps might.
        let batched = settings(8, 1, 512).cache_identity();
        assert_eq!(settings(8, 2, 512).cache_identity(), batched);
        assert_ne!(settings(1, 1, 512).cache_identity(), batched);
        assert_eq!(
            settings(8, 8, 512).cache_identity(),
            settings(1, 1, 512).cache_identity()
        );
    }

    #[test]
    fn n_batch_must_hold_one_context_s_sequences() {
        // 16 sequences over 4 contexts need 4 + 2 outputs per batch, not 16 + 2.
        assert!(settings(16, 4, 6).validate().is_ok());
        assert!(settings(16, 4, 5).validate().is_err());
        assert!(settings(16, 1, 17).validate().is_err());
        assert!(settings(8, 0, 512).validate().is_err());
    }
}
