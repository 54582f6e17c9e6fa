#!/usr/bin/env bash
# Browser test of the API's page at `/`: installs Chromium and Node when missing (Debian
# packages), `npm ci`s playwright-core (no browser download) in api/tests/browser, starts
# `mutr-ai-server serve` (tiny models) and `mutr-api serve` on free ports over a fresh database,
# and runs api/tests/browser/galaxy.test.mjs.
# Needs DATABASE_URL and REDIS_URL (hack/with-services.sh sets them).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
cd "$ROOT"

: "${DATABASE_URL:?DATABASE_URL must be set (run through hack/with-services.sh)}"
: "${REDIS_URL:?REDIS_URL must be set (run through hack/with-services.sh)}"

"$ROOT/hack/ensure-deps.sh" browser services

log "browser: npm ci (playwright-core, no browser download)"
(cd api/tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)

log "browser: building mutr-api and mutr-ai-server"
cargo build -q -p mutr-api --bin mutr-api -p mutr-ai-server --bin mutr-ai-server
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mutr-api"
AI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mutr-ai-server"

# A fresh database on the same server, dropped on exit.
db="mutr_browser_$$"
db_url="$(scratch_db "$db")"

workdir="$(mktemp -d)"
api_pid=""
ai_pid=""
cleanup() {
    for pid in $api_pid $ai_pid; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    drop_db "$db"
    rm -rf "$workdir"
}
trap cleanup EXIT

DATABASE_URL="$db_url" "$BIN" migrate

ai_port="$(free_port 18051)"
ai_metrics="$(free_port 18090)"
model_flags=()
if [ -n "${MUTR_MODEL_DIR:-}" ]; then model_flags=(--model-dir "$MUTR_MODEL_DIR"); fi
env -u REDIS_URL RUST_LOG=warn "$AI_BIN" serve --profile tiny "${model_flags[@]}" \
    --host 127.0.0.1 --port "$ai_port" --metrics-addr "127.0.0.1:$ai_metrics" \
    >"$workdir/ai.log" 2>&1 &
ai_pid=$!

port="$(free_port 18080)"
DATABASE_URL="$db_url" MUTR_HTTP_ADDR="127.0.0.1:$port" MUTR_SHUTDOWN_GRACE=0s RUST_LOG=warn \
    MUTR_AI_URL="http://127.0.0.1:$ai_port" MUTR_ANALYSIS_REDIS_PREFIX="mutr-browser-$$:" \
    MUTR_REALTIME_REDIS_CHANNEL="mutr-browser-$$" \
    "$BIN" serve >"$workdir/api.log" 2>&1 &
api_pid=$!
wait_for 120 curl -fsS "http://127.0.0.1:$port/readyz" \
    || { tail -n 40 "$workdir/ai.log" "$workdir/api.log" >&2; die "mutr-api did not become ready"; }

log "browser: headless Chromium against http://127.0.0.1:$port/"
if ! (cd api/tests/browser && MUTR_URL="http://127.0.0.1:$port" node galaxy.test.mjs); then
    tail -n 40 "$workdir/ai.log" "$workdir/api.log" >&2
    die "browser test failed"
fi
