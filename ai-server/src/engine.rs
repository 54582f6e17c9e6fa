//! The seam between the gRPC service and the models: what the service asks of them, and the
//! errors it can get back. The llama.cpp implementation lives in [`crate::llm`].

use std::future::Future;
use std::time::Instant;

use crate::analysis::prompt::Prompt;

/// What the analysis needs from its models. Every call carries the request's deadline; the
/// implementation stops working on the request (and frees what it held) when the deadline passes
/// or when the returned future is dropped.
pub trait Models: Send + Sync + 'static {
    /// Greedy continuation of `prompt`, at most `max_tokens` tokens, ending at the first newline
    /// after some text or at the end of generation.
    fn generate(
        &self,
        prompt: Prompt,
        max_tokens: usize,
        deadline: Instant,
    ) -> impl Future<Output = Result<String, EngineError>> + Send;

    /// Log-likelihood (natural log) of each candidate as the answer to `prompt`, in order.
    fn score(
        &self,
        prompt: Prompt,
        candidates: &'static [&'static str],
        deadline: Instant,
    ) -> impl Future<Output = Result<Vec<f64>, EngineError>> + Send;

    /// L2-normalised sentence embeddings of `texts`, in order.
    fn embed(
        &self,
        texts: Vec<String>,
        deadline: Instant,
    ) -> impl Future<Output = Result<Vec<Vec<f32>>, EngineError>> + Send;

    /// A string that changes whenever the models or settings that shape a result change; part of
    /// the result cache key.
    fn identity(&self) -> &str;
}

/// Why a model call produced no result.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request's deadline passed before its result was ready.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// The model worker has stopped (shutting down, or it failed).
    #[error("model worker stopped")]
    Stopped,
    /// llama.cpp refused the work (a failed decode, a prompt that cannot fit).
    #[error("model error: {0}")]
    Model(String),
}
