//! MUTR's AI server: `mutr.AnalysisService` over gRPC, answering each node with a topic, an
//! emotion with its probability and a mutation score, from GGUF models run by llama.cpp with
//! continuous batching. See the crate README for the design.

#![forbid(unsafe_code)]

pub mod analysis;
pub mod cache;
pub mod cli;
pub mod config;
pub mod engine;
pub mod fetch;
pub mod llm;
pub mod metrics;
pub mod models;
pub mod server;
pub mod service;
