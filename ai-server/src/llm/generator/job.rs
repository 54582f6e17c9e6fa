//! What the service sends the generative workers: a prompt, what to do with it, a deadline, and
//! where the result goes.

use std::time::Instant;

use tokio::sync::oneshot;

use super::WORKER;
use super::sequence::Answer;
use crate::analysis::prompt::Prompt;
use crate::engine::EngineError;
use crate::metrics as m;

/// What a job asks for.
pub(crate) enum Task {
    /// Greedy generation of at most `max_tokens` tokens, ending at a newline after some text.
    Generate { max_tokens: usize },
    /// Log-likelihood of each candidate as the continuation of the prompt.
    Score { candidates: &'static [&'static str] },
}

impl Task {
    /// Which shared prompt start this kind of job uses (topic prompts, emotion prompts).
    pub(crate) fn kind(&self) -> usize {
        match self {
            Task::Generate { .. } => 0,
            Task::Score { .. } => 1,
        }
    }
}

/// Where a job's result goes.
pub(crate) enum Reply {
    Text(oneshot::Sender<Result<String, EngineError>>),
    Scores(oneshot::Sender<Result<Vec<f64>, EngineError>>),
}

impl Reply {
    /// Whether the caller went away (cancelled, or its gRPC deadline passed).
    pub(crate) fn is_closed(&self) -> bool {
        match self {
            Reply::Text(tx) => tx.is_closed(),
            Reply::Scores(tx) => tx.is_closed(),
        }
    }

    pub(crate) fn fail(self, error: EngineError) {
        // A receiver that is gone has nobody to tell.
        match self {
            Reply::Text(tx) => drop(tx.send(Err(error))),
            Reply::Scores(tx) => drop(tx.send(Err(error))),
        }
    }

    pub(crate) fn answer(self, answer: Answer) {
        match (self, answer) {
            (Reply::Text(tx), Answer::Text(text)) => drop(tx.send(Ok(text))),
            (Reply::Scores(tx), Answer::Scores(scores)) => drop(tx.send(Ok(scores))),
            (reply, _) => reply.fail(EngineError::Model("the answer has the wrong kind".into())),
        }
    }
}

/// One unit of work for the generative model.
pub(crate) struct GenJob {
    pub(crate) prompt: Prompt,
    pub(crate) task: Task,
    pub(crate) deadline: Instant,
    pub(crate) reply: Reply,
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

/// The job, unless its caller went away (cancelled, or the gRPC deadline passed) or its own
/// deadline passed; either way it is counted, and a job out of time is told so.
pub(crate) fn keep_if_wanted(job: GenJob, now: Instant) -> Option<GenJob> {
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
