//! What one decode of the generative model costs by batch shape: the bound on what continuous
//! batching can gain with a given model and machine. The baseline is one sequence decoding one
//! token (what `--parallel 1` does at every step); batching pays only where the time per token
//! falls as more sequences share a decode. Prompt chunks (many tokens of one sequence) are shown
//! for comparison.
//!
//! Models as for the throughput bench (`MUTR_GEN_MODEL`, else the tiny profile and the small one
//! when fetched); `n_threads` sets llama.cpp's threads (default: what the server's layout gives
//! one context for `--parallel 8`); `n_gpu_layers` offloads layers on a `cuda` build.

mod common;

use mutr_ai_server::llm::probe::{Shape, decode_cost};
use mutr_ai_server::llm::{GenSettings, LoadedModel, available_cores};
use mutr_ai_server::models;

/// Decodes timed per shape: fewer for a model whose decodes are slow.
fn iterations(model: &LoadedModel) -> usize {
    if model.shape().weights_bound() {
        20
    } else {
        200
    }
}

fn main() {
    for pair in common::model_pairs() {
        let model = LoadedModel::load(
            &pair.generate,
            common::gpu_layers(),
            models::fingerprint(&pair.generate).unwrap(),
        )
        .unwrap();
        let threads = common::threads().unwrap_or_else(|| {
            let settings = GenSettings {
                parallel: 8,
                n_ctx: 1024,
                n_batch: 512,
                n_threads: None,
                contexts: None,
            };
            settings.layout(available_cores(), model.shape()).threads
        });
        println!();
        println!(
            "profile {} (its embedding model {} is not used here)",
            pair.name,
            pair.embed.display()
        );
        print_costs(&model, threads);
    }
}

fn print_costs(model: &LoadedModel, threads: i32) {
    let iterations = iterations(model);
    let shape = |sequences, tokens| Shape { sequences, tokens };
    let shapes = [
        shape(1, 1),
        shape(2, 1),
        shape(4, 1),
        shape(8, 1),
        shape(16, 1),
        shape(1, 32),
        shape(8, 32),
    ];
    println!();
    println!(
        "generative model {}: one decode by batch shape, {threads} llama.cpp threads, \
         {iterations} decodes each",
        model.path().file_name().unwrap().to_string_lossy()
    );
    // 100 cells: llama.cpp attends over its minimum of 256. 300 cells (512 attended): the
    // server's topic prompts with the tiny model, whose byte-level vocabulary makes the Korean
    // instructions about 270 tokens long.
    for history in [100, 300] {
        let costs =
            decode_cost(model, &shapes, history, iterations, threads).expect("probe context");
        let per_token = |i: usize| {
            costs[i].as_secs_f64() * 1000.0 / (shapes[i].sequences * shapes[i].tokens) as f64
        };
        let base = per_token(0);
        println!();
        println!("{history} tokens already in each sequence's cache:");
        println!(
            "| sequences x tokens | ms per decode | ms per token | per token vs 1 x 1 (baseline) |"
        );
        println!("|---|---|---|---|");
        for (i, s) in shapes.iter().enumerate() {
            println!(
                "| {} x {} | {:.3} | {:.3} | {:.2}x |",
                s.sequences,
                s.tokens,
                costs[i].as_secs_f64() * 1000.0,
                per_token(i),
                per_token(i) / base
            );
        }
    }
}
