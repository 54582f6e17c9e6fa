//! What one decode of the generative model costs by batch shape: the bound on what continuous
//! batching can gain with a given model and machine. The baseline is one sequence decoding one
//! token (what `--parallel 1` does at every step); batching pays only where the time per token
//! falls as more sequences share a decode. Prompt chunks (many tokens of one sequence) are shown
//! for comparison.
//!
//! Models as for the throughput bench (`MUTR_GEN_MODEL`, else the tiny profile); `n_threads`
//! sets llama.cpp's threads (default: the server's, half the cores); `n_gpu_layers` offloads
//! layers on a `cuda` build.

mod common;

use common::model_files;
use mutr_ai_server::llm::LoadedModel;
use mutr_ai_server::llm::probe::{Shape, decode_cost};
use mutr_ai_server::models;

const ITERATIONS: usize = 200;

fn main() {
    let threads = common::threads();
    let (path, _) = model_files();
    let model = LoadedModel::load(
        &path,
        common::gpu_layers(),
        models::fingerprint(&path).unwrap(),
    )
    .unwrap();
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
         {ITERATIONS} decodes each",
        model.path().file_name().unwrap().to_string_lossy()
    );
    // 100 cells: llama.cpp attends over its minimum of 256. 300 cells (512 attended): the
    // server's topic prompts with the tiny model, whose byte-level vocabulary makes the Korean
    // instructions about 270 tokens long.
    for history in [100, 300] {
        let costs =
            decode_cost(&model, &shapes, history, ITERATIONS, threads).expect("probe context");
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
