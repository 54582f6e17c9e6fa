#!/usr/bin/env bash
# AI server throughput: the same AnalyzeNode requests at 1, 4, 8 and 16 concurrent clients against
# a server with --parallel 1 (the old one-at-a-time server, the baseline) and one with
# --parallel 8 (the default layout for this machine and model), in one run, and beside each what
# llama.cpp itself achieves for the same work on the same layout (the ceiling). For the tiny
# models, and for the small profile (Gemma 3 270M) when it has been fetched
# (`mutr-ai-server fetch-model --profile small`, or MUTR_BENCH_FETCH_SMALL=1 here). Then the cost
# of one decode by batch shape (what bounds batching). MUTR_BENCH_REQUESTS sets the requests per
# level (default 48 tiny, 24 small).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
cd "$ROOT"
if [ -z "${MUTR_MODEL_DIR:-}" ] && [ -d "$ROOT/../shared/models" ]; then
    export MUTR_MODEL_DIR="$ROOT/../shared/models"
fi
# OpenMP threads that spin between decodes steal the CPU from the other model worker (and from
# anything else on a shared machine); both servers run with the same policy.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
if [ "${MUTR_BENCH_FETCH_SMALL:-0}" = 1 ]; then
    cargo run -q --release -p mutr-ai-server -- fetch-model --profile small --no-progress
fi
cargo bench -q -p mutr-ai-server --bench throughput
cargo bench -q -p mutr-ai-server --bench step_cost
