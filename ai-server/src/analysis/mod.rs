//! Domain rules of an analysis, as plain functions over plain types: the prompts, the cleanup of a
//! generated title, the emotion labels and their scoring, and the mutation-score calibration.
//! Nothing here touches a model, a socket or a clock.

pub mod emotion;
pub mod mutation;
pub mod prompt;
pub mod topic;
