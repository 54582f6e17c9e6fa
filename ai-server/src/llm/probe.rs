//! What llama.cpp itself achieves, measured with the same library and contexts set up as the
//! scheduler sets up its own (a KV-cache stream per sequence, flash attention off), with no
//! scheduler around it:
//!
//! - [`decode_cost`]: one decode by batch shape (`benches/step_cost.rs` prints it). Batching
//!   pays only where a token's cost falls as more sequences share a decode.
//! - [`ceiling`]: the requests per second llama.cpp reaches for the same work as the server (the
//!   same prompt tokens, decode steps and embedded texts per request, the same layout of
//!   contexts, threads and sequences in flight), decoded back to back as `llama-batched-bench`
//!   does: every sequence's prompt in one decode, then every step with every sequence. The
//!   throughput bench prints it beside the server's figure; the gap is the scheduler's own cost.

use std::num::NonZeroU32;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;

use super::generator::FLASH_ATTN_DISABLED;
use super::{LoadError, LoadedModel, backend};

/// One batch shape: `sequences` sequences, `tokens` tokens each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Sequences in the decode, each in its own cache stream.
    pub sequences: usize,
    /// Tokens per sequence.
    pub tokens: usize,
}

/// Mean wall time of one decode of each shape over `iterations` decodes, with `threads` llama.cpp
/// threads. Each sequence's stream first holds a `history`-token prompt (llama.cpp attends over
/// it rounded up to a multiple of 256 cells); the timed tokens are removed again after every
/// decode, so every decode sees the same cache.
pub fn decode_cost(
    model: &LoadedModel,
    shapes: &[Shape],
    history: usize,
    iterations: usize,
    threads: i32,
) -> Result<Vec<Duration>, LoadError> {
    let context_error = |reason: String| LoadError::Context {
        worker: "probe",
        reason,
    };
    let n_seq = shapes.iter().map(|s| s.sequences).max().unwrap_or(1).max(1);
    let most_tokens = shapes
        .iter()
        .map(|s| s.sequences * s.tokens)
        .max()
        .unwrap_or(1)
        .max(history);
    let n_seq_u32 = u32::try_from(n_seq).map_err(|e| context_error(e.to_string()))?;
    let n_batch = u32::try_from(most_tokens).map_err(|e| context_error(e.to_string()))?;
    let n_ctx_seq =
        u32::try_from(history + most_tokens + 256).map_err(|e| context_error(e.to_string()))?;
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx_seq * n_seq_u32))
        .with_n_batch(n_batch)
        .with_n_ubatch(n_batch)
        .with_n_seq_max(n_seq_u32)
        .with_kv_unified(false)
        .with_flash_attention_policy(FLASH_ATTN_DISABLED)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = model
        .model
        .new_context(backend()?, params)
        .map_err(|e| context_error(e.to_string()))?;
    let mut batch = LlamaBatch::new(most_tokens, 1);
    let decode_error = |e: &dyn std::fmt::Display| context_error(format!("decode: {e}"));
    // Token ids below 100 exist in every vocabulary; the text does not matter for the cost.
    let token = |i: usize| LlamaToken(i32::try_from(10 + i % 50).unwrap_or(10));
    for seq in 0..n_seq {
        for start in (0..history).step_by(most_tokens) {
            batch.clear();
            for p in start..(start + most_tokens).min(history) {
                batch
                    .add(token(p), pos(p), &[pos(seq)], false)
                    .map_err(|e| decode_error(&e))?;
            }
            ctx.decode(&mut batch).map_err(|e| decode_error(&e))?;
        }
    }
    let mut costs = Vec::with_capacity(shapes.len());
    for shape in shapes {
        let mut total = Duration::ZERO;
        for _ in 0..iterations {
            batch.clear();
            for seq in 0..shape.sequences {
                for j in 0..shape.tokens {
                    // Logits of the last token only, as the scheduler asks for.
                    let last = j + 1 == shape.tokens;
                    batch
                        .add(token(j), pos(history + j), &[pos(seq)], last)
                        .map_err(|e| decode_error(&e))?;
                }
            }
            let started = Instant::now();
            ctx.decode(&mut batch).map_err(|e| decode_error(&e))?;
            total += started.elapsed();
            for seq in 0..shape.sequences {
                ctx.clear_kv_cache_seq(u32::try_from(seq).ok(), u32::try_from(history).ok(), None)
                    .map_err(|e| decode_error(&e))?;
            }
        }
        costs.push(total / u32::try_from(iterations.max(1)).unwrap_or(u32::MAX));
    }
    Ok(costs)
}

fn pos(i: usize) -> i32 {
    i32::try_from(i).unwrap_or(i32::MAX)
}

/// The work of one request, on average, as the server did it (read from its metrics).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestWork {
    /// Generative sequences per request (topic and emotion: 2).
    pub sequences: f64,
    /// Prompt tokens decoded per sequence (after the shared start, which is copied).
    pub prompt: f64,
    /// Decode steps per sequence.
    pub steps: f64,
    /// Tokens in a sequence's cache before its prompt (the shared start).
    pub history: f64,
    /// Texts embedded per request.
    pub texts: f64,
    /// Tokens per embedded text.
    pub text_tokens: f64,
}

/// Where the work runs, as in the server: generative contexts with `threads` llama.cpp threads
/// and `in_flight[c]` sequences decoded together in context `c`, and an embedding context with
/// `embed_threads` threads and at most `embed_in_flight` texts per decode.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeLayout {
    /// llama.cpp threads of each generative context.
    pub threads: i32,
    /// Sequences decoded together, per generative context.
    pub in_flight: Vec<usize>,
    /// llama.cpp threads of the embedding context.
    pub embed_threads: i32,
    /// Texts per embedding decode.
    pub embed_in_flight: usize,
}

/// How long llama.cpp takes for `requests` requests of `work` on `layout`, every context on its
/// own thread as in the server, all started together; no scheduler, no padding, no throw-away
/// tokens, logits only where the server reads them. `requests / time` is the ceiling of a server
/// with that layout.
pub fn ceiling(
    generate: &LoadedModel,
    embed: &LoadedModel,
    layout: &ProbeLayout,
    work: RequestWork,
    requests: usize,
) -> Result<Duration, LoadError> {
    let total_seqs = (requests as f64 * work.sequences).round() as usize;
    let slots: usize = layout.in_flight.iter().sum::<usize>().max(1);
    let texts = (requests as f64 * work.texts).round() as usize;
    let round = |x: f64| (x.round() as usize).max(1);
    let (prompt, steps, history, text_tokens) = (
        round(work.prompt),
        round(work.steps),
        work.history.round() as usize,
        round(work.text_tokens),
    );
    let start = Barrier::new(layout.in_flight.len() + 2);
    let (started, finished) = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for &in_flight in &layout.in_flight {
            // This context's share of the sequences, in proportion to what it holds.
            let share = total_seqs * in_flight / slots;
            let start = &start;
            handles.push(scope.spawn(move || {
                let shape = GenShape {
                    in_flight: in_flight.max(1),
                    prompt,
                    steps,
                    history,
                    threads: layout.threads,
                };
                replay_generate(generate, shape, share, start)
            }));
        }
        let start_embed = &start;
        handles.push(scope.spawn(move || {
            replay_embed(
                embed,
                layout.embed_threads,
                layout.embed_in_flight.max(1),
                text_tokens,
                texts,
                start_embed,
            )
        }));
        start.wait();
        let started = Instant::now();
        let mut result = Ok(started);
        for h in handles {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(_) => {
                    result = Err(LoadError::Context {
                        worker: "probe",
                        reason: "a probe thread panicked".into(),
                    })
                }
            }
        }
        (started, result.map(|_| Instant::now()))
    });
    Ok(finished? - started)
}

#[derive(Debug, Clone, Copy)]
struct GenShape {
    in_flight: usize,
    prompt: usize,
    steps: usize,
    history: usize,
    threads: i32,
}

/// `sequences` sequences of `shape` on one context, `in_flight` at a time: each group's prompts in
/// one decode (logits for each prompt's last token), then `steps` decodes of one token each
/// (logits for all), then the group's tokens leave the cache.
fn replay_generate(
    model: &LoadedModel,
    shape: GenShape,
    sequences: usize,
    start: &Barrier,
) -> Result<(), LoadError> {
    let setup = (|| {
        let n = shape.in_flight;
        let n_seq = u32::try_from(n).map_err(probe_error)?;
        let most = (n * shape.prompt).max(shape.history).max(n);
        let per_seq = shape.history + shape.prompt + shape.steps + 8;
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(
                u32::try_from(per_seq).map_err(probe_error)? * n_seq,
            ))
            .with_n_batch(u32::try_from(most).map_err(probe_error)?)
            .with_n_ubatch(u32::try_from(most).map_err(probe_error)?)
            .with_n_seq_max(n_seq)
            .with_kv_unified(false)
            .with_flash_attention_policy(FLASH_ATTN_DISABLED)
            .with_n_threads(shape.threads)
            .with_n_threads_batch(shape.threads);
        let mut ctx = model
            .model
            .new_context(backend()?, params)
            .map_err(probe_error)?;
        let mut batch = LlamaBatch::new(most, 1);
        for seq in 0..n {
            if shape.history == 0 {
                break;
            }
            batch.clear();
            for p in 0..shape.history {
                batch
                    .add(token(p), pos(p), &[pos(seq)], false)
                    .map_err(probe_error)?;
            }
            ctx.decode(&mut batch).map_err(probe_error)?;
        }
        Ok::<_, LoadError>((ctx, batch))
    })();
    start.wait();
    let (mut ctx, mut batch) = setup?;
    let mut left = sequences;
    while left > 0 {
        let group = left.min(shape.in_flight);
        left -= group;
        batch.clear();
        for seq in 0..group {
            for j in 0..shape.prompt {
                let last = j + 1 == shape.prompt;
                batch
                    .add(token(j), pos(shape.history + j), &[pos(seq)], last)
                    .map_err(probe_error)?;
            }
        }
        ctx.decode(&mut batch).map_err(probe_error)?;
        for step in 0..shape.steps {
            batch.clear();
            for seq in 0..group {
                let at = shape.history + shape.prompt + step;
                batch
                    .add(token(step), pos(at), &[pos(seq)], true)
                    .map_err(probe_error)?;
            }
            ctx.decode(&mut batch).map_err(probe_error)?;
        }
        for seq in 0..group {
            ctx.clear_kv_cache_seq(
                u32::try_from(seq).ok(),
                u32::try_from(shape.history).ok(),
                None,
            )
            .map_err(probe_error)?;
        }
    }
    Ok(())
}

/// `texts` texts of `text_tokens` tokens on an embedding context, `in_flight` per decode.
fn replay_embed(
    model: &LoadedModel,
    threads: i32,
    in_flight: usize,
    text_tokens: usize,
    texts: usize,
    start: &Barrier,
) -> Result<(), LoadError> {
    let setup = (|| {
        // llama.cpp aborts unless n_ubatch is a multiple of n_seq_max with MEAN pooling.
        let n_seq = in_flight.next_power_of_two();
        let n_batch = u32::try_from(n_seq * text_tokens).map_err(probe_error)?;
        let params = LlamaContextParams::default()
            .with_embeddings(true)
            .with_flash_attention_policy(FLASH_ATTN_DISABLED)
            .with_n_ctx(NonZeroU32::new(n_batch))
            .with_n_batch(n_batch)
            .with_n_ubatch(n_batch)
            .with_n_seq_max(u32::try_from(n_seq).map_err(probe_error)?)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let ctx = model
            .model
            .new_context(backend()?, params)
            .map_err(probe_error)?;
        Ok::<_, LoadError>((ctx, LlamaBatch::new(n_seq * text_tokens, 1)))
    })();
    start.wait();
    let (mut ctx, mut batch) = setup?;
    let tokens: Vec<LlamaToken> = (0..text_tokens).map(token).collect();
    let mut left = texts;
    while left > 0 {
        let group = left.min(in_flight);
        left -= group;
        batch.clear();
        for seq in 0..group {
            batch
                .add_sequence(&tokens, i32::try_from(seq).unwrap_or(0), false)
                .map_err(probe_error)?;
        }
        ctx.clear_kv_cache();
        ctx.decode(&mut batch).map_err(probe_error)?;
    }
    Ok(())
}

fn probe_error(e: impl std::fmt::Display) -> LoadError {
    LoadError::Context {
        worker: "probe",
        reason: e.to_string(),
    }
}

/// Token ids below 100 exist in every vocabulary; the text does not matter for the cost.
fn token(i: usize) -> LlamaToken {
    LlamaToken(i32::try_from(10 + i % 50).unwrap_or(10))
}
