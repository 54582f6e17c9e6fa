#!/usr/bin/env bash
# AI server throughput: the same AnalyzeNode requests at 1, 4, 8 and 16 concurrent clients against
# a server with --parallel 1 (the old one-at-a-time server, the baseline), one with --parallel 8
# and one with --parallel 8 --gen-contexts 2, in one run, with the tiny models. Prints requests/s,
# p50/p95 and the ratios. Then the cost of one decode by batch shape (what bounds batching).
# MUTR_BENCH_REQUESTS sets the requests per concurrency level (default 48).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
cd "$ROOT"
if [ -z "${MUTR_MODEL_DIR:-}" ] && [ -d "$ROOT/../shared/models" ]; then
    export MUTR_MODEL_DIR="$ROOT/../shared/models"
fi
# OpenMP threads that spin between decodes steal the CPU from the other model worker (and from
# anything else on a shared machine); both servers run with the same policy.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
cargo bench -q -p mutr-ai-server --bench throughput
cargo bench -q -p mutr-ai-server --bench step_cost
