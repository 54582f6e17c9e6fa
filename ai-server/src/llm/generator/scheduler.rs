//! One generative context's loop: continuous batching of its sequences.
//!
//! Each turn drops what was cancelled or ran out of time, takes jobs from the shared queue while
//! the context has free sequences, admits them (the shared prompt start is copied, not decoded
//! again), feeds each new sequence's prompt in a decode of its own, then decodes one batch
//! holding the next token of every decoding sequence and moves each on from its logits.
//!
//! Why the batches have the shapes they have: llama.cpp's CPU kernels may choose their algorithm
//! by the shape of a batch, and different algorithms round differently. A sequence's numbers are
//! the same alone or among others when its part of every batch has the same shape whatever its
//! neighbours: its prompt is decoded alone, in chunks that depend only on its own length, with
//! logits only for its last token; and every decode step carries exactly one token per sequence
//! and at least two tokens in all (a throw-away token in the next sequence's stream when only one
//! sequence of a multi-sequence context is decoding). llama.cpp's cache with one stream per
//! sequence computes a batch as one unit only while its sequence ids are consecutive (it splits
//! the batch at every gap, and attends over every stream from the lowest id in a unit to the
//! highest), so the gaps between decoding sequences get a throw-away token each, removed right
//! after; new sequences take the lowest free ids, so gaps are rare under load.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::Receiver;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use super::job::{GenJob, Reply, Task, keep_if_wanted};
use super::prompt::PromptBuilder;
use super::sequence::{Sequence, Step, Vocab, Work};
use super::{WORKER, Worker};
use crate::analysis::prompt::Prompt;
use crate::engine::EngineError;
use crate::metrics as m;

/// Shortest shared start worth copying.
const MIN_PREFIX: usize = 8;

/// The model's vocabulary, as a [`Sequence`] needs it.
struct ModelVocab<'m>(&'m LlamaModel);

impl Vocab for ModelVocab<'_> {
    fn is_eog(&self, token: LlamaToken) -> bool {
        self.0.vocab().is_eog(token)
    }
    fn piece(&self, token: LlamaToken) -> Vec<u8> {
        self.0.vocab().token_to_piece(token, false, None)
    }
}

/// A running sequence and where its answer goes.
struct Slot {
    seq: i32,
    reply: Reply,
    deadline: Instant,
    sequence: Sequence,
}

/// The shared start of one kind of prompt (system message and instructions), decoded once into
/// its own sequence and copied into each new sequence of that kind.
struct Prefix {
    seq: i32,
    tokens: Vec<LlamaToken>,
}

pub(super) struct Scheduler<'m> {
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
    n_ctx_seq: usize,
}

impl<'m> Scheduler<'m> {
    pub(super) fn new(
        ctx: LlamaContext<'m>,
        model: &'m LlamaModel,
        rx: Receiver<GenJob>,
        worker: &'m Worker,
        n_batch: usize,
        n_ctx_seq: usize,
    ) -> Self {
        let holder = |k: u32| Prefix {
            seq: i32::try_from(worker.parallel + k).unwrap_or(i32::MAX),
            tokens: Vec::new(),
        };
        Self {
            ctx,
            model,
            prompts: PromptBuilder::new(model),
            rx,
            worker,
            waiting: VecDeque::new(),
            slots: (0..worker.parallel).map(|_| None).collect(),
            prefixes: [holder(0), holder(1)],
            batch: LlamaBatch::new(n_batch, 1),
            n_batch,
            n_ctx_seq,
        }
    }

    /// Whether the model has a chat template the prompts go through.
    pub(super) fn chat_template(&self) -> bool {
        self.prompts.template.is_some()
    }

    /// Runs until the queue is closed and empty and every sequence has ended.
    pub(super) fn run(&mut self) {
        loop {
            let idle = self.slots.iter().all(Option::is_none) && self.waiting.is_empty();
            if idle {
                self.worker.active[self.worker.index].store(0, Ordering::Relaxed);
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

    /// Puts waiting jobs into the lowest free sequences: tokenizes the prompt (cut to fit the
    /// context with room for the answer) and copies the shared prompt start into the sequence.
    fn admit(&mut self) {
        for i in 0..self.slots.len() {
            if self.slots[i].is_some() {
                continue;
            }
            let Some(job) = self.waiting.pop_front() else {
                return;
            };
            let work = match job.task {
                Task::Generate { max_tokens } => Work::Generate { max_tokens },
                Task::Score { candidates } => Work::Score {
                    candidates: candidates
                        .iter()
                        .map(|c| self.prompts.candidate(c))
                        .collect(),
                },
            };
            let reserve = match &work {
                Work::Generate { max_tokens } => *max_tokens + 1,
                Work::Score { candidates } => {
                    candidates.iter().map(Vec::len).max().unwrap_or(0) + 1
                }
            };
            let budget = self.n_ctx_seq.saturating_sub(reserve);
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
            let reused = self.reuse_prefix(job.task.kind(), &job.prompt, &tokens, seq);
            m::context_sequence(self.worker.index);
            tracing::debug!(
                context = self.worker.index,
                seq,
                prompt_tokens = tokens.len(),
                reused,
                "sequence admitted"
            );
            self.slots[i] = Some(Slot {
                seq,
                reply: job.reply,
                deadline: job.deadline,
                sequence: Sequence::new(tokens, reused, work, self.n_ctx_seq),
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
            m::shared_prompt(kind, shared);
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

    /// Ends slot `i` with a decode error.
    fn fail(&mut self, i: usize, e: &dyn std::fmt::Display) {
        if let Some(slot) = self.free(i) {
            m::sequence_ended(WORKER, "error");
            slot.reply.fail(EngineError::Model(format!("decode: {e}")));
        }
    }

    /// The next prompt chunk (up to `n_batch` tokens) of every sequence still being fed, each in
    /// a decode of its own, with logits for a prompt's last token only. A sequence's chunks
    /// depend on its own prompt alone, so their shapes never depend on its neighbours, and no
    /// position is spent on padding.
    fn prefill_step(&mut self) {
        for i in 0..self.slots.len() {
            let Some(slot) = &self.slots[i] else { continue };
            let Some(chunk) = slot.sequence.prompt_chunk(self.n_batch) else {
                continue;
            };
            let (seq, fed, n) = (slot.seq, slot.sequence.fed(), chunk.len());
            let last = n == slot.sequence.prompt_left();
            self.batch.clear();
            let mut added = Ok(());
            for (j, token) in chunk.iter().enumerate() {
                let pos = i32::try_from(fed + j).unwrap_or(i32::MAX);
                added =
                    added.and_then(|()| self.batch.add(*token, pos, &[seq], last && j + 1 == n));
            }
            if let Err(e) = added {
                self.fail(i, &e);
                continue;
            }
            m::batch(WORKER, "prefill", 1, self.batch.n_tokens());
            m::sequence_tokens("prompt", n);
            if let Err(e) = self.ctx.decode(&mut self.batch) {
                tracing::error!(seq, "prompt decode failed: {e}");
                self.fail(i, &e);
                continue;
            }
            let logits = last.then(|| self.ctx.get_logits_ith(self.batch.n_tokens() - 1));
            let vocab = ModelVocab(self.model);
            let Some(slot) = &mut self.slots[i] else {
                continue;
            };
            let step = slot.sequence.prompt_fed(n, logits, &vocab);
            self.after(i, step);
        }
    }

    /// One token for every decoding sequence, in one batch (see the module's comment for the
    /// throw-away tokens in gaps and beside a lone sequence).
    fn decode_step(&mut self) {
        // (slot, token, position) of every decoding sequence, by sequence id.
        let wanted: Vec<(usize, LlamaToken, usize)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let (token, pos) = s.as_ref()?.sequence.next_token()?;
                Some((i, token, pos))
            })
            .collect();
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
        m::sequence_tokens("step", planned.len());
        m::filler_tokens(pads.len());
        let result = self.ctx.decode(&mut self.batch);
        for (seq, pos) in pads {
            self.clear(seq, u32::try_from(pos).ok());
        }
        if let Err(e) = result {
            tracing::error!(sequences = planned.len(), "decode failed: {e}");
            for (i, _) in planned {
                self.fail(i, &e);
            }
            return;
        }
        let vocab = ModelVocab(self.model);
        for (i, index) in planned {
            let logits = self.ctx.get_logits_ith(index);
            let Some(slot) = &mut self.slots[i] else {
                continue;
            };
            let step = slot.sequence.stepped(logits, &vocab);
            self.after(i, step);
        }
    }

    /// Acts on what a sequence's step asked for.
    fn after(&mut self, i: usize, step: Step) {
        match step {
            Step::Running => {}
            Step::ClearFrom(pos) => {
                if let Some(seq) = self.slots[i].as_ref().map(|s| s.seq) {
                    self.clear(seq, u32::try_from(pos).ok());
                }
            }
            Step::Done(answer) => {
                if let Some(slot) = self.free(i) {
                    m::sequence_ended(WORKER, "done");
                    slot.reply.answer(answer);
                }
            }
        }
    }

    /// Where the next token of sequence `id` goes: after what its stream holds.
    fn next_position(&self, id: usize) -> usize {
        match self.slots.get(id) {
            Some(Some(slot)) => slot.sequence.fed(),
            Some(None) => 0,
            None => self
                .prefixes
                .get(id - self.slots.len())
                .map_or(0, |p| p.tokens.len()),
        }
    }
}

fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
