//! What one decode of the generative model costs by batch shape, measured on a context set up as
//! the scheduler sets up its own (a KV-cache stream per sequence, flash attention off). It is what
//! bounds continuous batching: batching pays only where a token's cost falls as more sequences
//! share a decode. `benches/step_cost.rs` prints it.

use std::num::NonZeroU32;
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
