#!/usr/bin/env bash
# Analysis pipeline bench (issue 12): a release `mutr-ai-server` (tiny models, no result cache) and
# a release `mutr-api` over a fresh database, driven by api/benches/pipeline.rs: analyses/s through
# the API against the same AI server called directly at the same concurrency, the pipeline's
# overhead per node at light load, a sweep with nothing to do on a galaxy of 1,000,000 nodes, and
# the recovery of 10,000 orphans by a fresh API process.
# Needs DATABASE_URL and REDIS_URL (hack/bench.sh provides them).
# Knobs: MUTR_BENCH_CONCURRENCY (8), MUTR_BENCH_PIPELINE_NODES (1000), MUTR_BENCH_PIPELINE_ROUNDS
# (3: the throughput ratio is the median round's), MUTR_BENCH_GALAXY (1000000),
# MUTR_BENCH_RECOVERY_NODES (10000), MUTR_BENCH_PHASES (throughput,overhead,sweep,recovery).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
cd "$ROOT"

: "${DATABASE_URL:?DATABASE_URL must be set}"
: "${REDIS_URL:?REDIS_URL must be set}"
concurrency="${MUTR_BENCH_CONCURRENCY:-8}"

cargo build -q --release -p mutr-api --bin mutr-api -p mutr-ai-server --bin mutr-ai-server
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
BENCH="$(cargo build -q --release -p mutr-api --bench pipeline --message-format=json 2>/dev/null \
    | sed -n 's/.*"name":"pipeline".*"executable":"\([^"]*\)".*/\1/p' | tail -n1)"
[ -x "$BENCH" ] || die "could not build the pipeline bench"

db="mutr_bench_pipeline_$$"
db_url="$(scratch_db "$db")"

workdir="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    drop_db "$db"
    rm -rf "$workdir"
}
trap cleanup EXIT

DATABASE_URL="$db_url" RUST_LOG=warn "$BIN/mutr-api" migrate

ai_port="$(free_port 18151)"
ai_metrics="$(free_port 18190)"
model_flags=()
if [ -n "${MUTR_MODEL_DIR:-}" ]; then model_flags=(--model-dir "$MUTR_MODEL_DIR"); fi
log "starting mutr-ai-server (release, tiny models, --parallel $concurrency, no result cache)"
env -u REDIS_URL RUST_LOG=warn "$BIN/mutr-ai-server" serve --profile tiny "${model_flags[@]}" \
    --parallel "$concurrency" --host 127.0.0.1 --port "$ai_port" --metrics-addr "127.0.0.1:$ai_metrics" \
    >"$workdir/ai.log" 2>&1 &
pids+=($!)

port="$(free_port 18180)"
log "starting mutr-api (release) on 127.0.0.1:$port, MUTR_ANALYSIS_CONCURRENCY=$concurrency"
DATABASE_URL="$db_url" MUTR_HTTP_ADDR="127.0.0.1:$port" MUTR_WRITE_RATE_PER_SEC=0 \
    MUTR_AI_URL="http://127.0.0.1:$ai_port" MUTR_ANALYSIS_CONCURRENCY="$concurrency" \
    MUTR_ANALYSIS_REDIS_PREFIX="mutr:bench:$$:" MUTR_REALTIME_REDIS_CHANNEL="mutr:bench:$$" \
    MUTR_SHUTDOWN_GRACE=0s RUST_LOG=warn \
    "$BIN/mutr-api" serve >"$workdir/api.log" 2>&1 &
pids+=($!)
wait_for 120 curl -fsS "http://127.0.0.1:$port/readyz" \
    || { tail -n 40 "$workdir/ai.log" "$workdir/api.log" >&2; die "mutr-api did not become ready"; }

"$BENCH" --api-url "http://127.0.0.1:$port" --ai-url "http://127.0.0.1:$ai_port" \
    --database-url "$db_url" --admin-database-url "$DATABASE_URL" --redis-url "$REDIS_URL" \
    --api-bin "$BIN/mutr-api" --ai-metrics-url "http://127.0.0.1:$ai_metrics/metrics" --concurrency "$concurrency" \
    --nodes "${MUTR_BENCH_PIPELINE_NODES:-1000}" --rounds "${MUTR_BENCH_PIPELINE_ROUNDS:-3}" --sweep-galaxy "${MUTR_BENCH_GALAXY:-1000000}" \
    --recovery-nodes "${MUTR_BENCH_RECOVERY_NODES:-10000}" \
    --phases "${MUTR_BENCH_PHASES:-throughput,overhead,sweep,recovery}"
