#!/usr/bin/env bash
# `make run`: the whole system on this machine, once PostgreSQL and Redis are available
# (hack/with-services.sh). Builds the binaries, runs the migrations, starts the AI server and the
# API, waits until both are healthy, and prints where they are. Ctrl-C stops everything.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

: "${MUTR_HTTP_ADDR:=127.0.0.1:8080}"
: "${AI_SERVER_PORT:=50051}"
: "${MUTR_AI_METRICS_ADDR:=127.0.0.1:9090}"
export MUTR_HTTP_ADDR AI_SERVER_PORT
export MUTR_AI_URL="${MUTR_AI_URL:-http://127.0.0.1:$AI_SERVER_PORT}"
export MUTR_PUBLIC_URL="${MUTR_PUBLIC_URL:-http://$MUTR_HTTP_ADDR}"
export RUST_LOG="${RUST_LOG:-info}"

for addr in "$MUTR_HTTP_ADDR" "127.0.0.1:$AI_SERVER_PORT" "$MUTR_AI_METRICS_ADDR"; do
    port_open "${addr%:*}" "${addr##*:}" && die "$addr is already in use; set MUTR_HTTP_ADDR, AI_SERVER_PORT or MUTR_AI_METRICS_ADDR"
done

log "building mutr-api and mutr-ai-server"
cargo build -q --bin mutr-api --bin mutr-ai-server
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug"

mkdir -p "$LOCAL_DIR/logs"
pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# PROFILE=small (make run PROFILE=small) serves Gemma 3 270M instead of the tiny story model:
# fetched into the cache on first use (about 250 MB), with the files already in MUTR_MODEL_DIR
# used as they are.
if [ -n "${PROFILE:-}" ]; then
    export MUTR_MODEL_PROFILE="$PROFILE"
    log "models: profile $PROFILE (fetching what is missing into the cache)"
    "$BIN/mutr-ai-server" fetch-model --profile "$PROFILE"
elif [ -n "${MUTR_MODEL_DIR:-}" ]; then
    log "models: $MUTR_MODEL_DIR"
else
    log "models: none local; fetching the tiny profile into the cache"
    "$BIN/mutr-ai-server" fetch-model --profile tiny
fi

# On a server this script found or started (not a DATABASE_URL the user gave), keep MUTR's tables in
# a database of their own rather than in `postgres`.
if [ "${MUTR_DATABASE_URL_GIVEN:-1}" = 0 ] && command -v psql >/dev/null 2>&1; then
    if ! psql "$DATABASE_URL" -Atqc "SELECT 1 FROM pg_database WHERE datname = 'mutr'" | grep -q 1; then
        log "creating the database mutr"
        psql "$DATABASE_URL" -qc "CREATE DATABASE mutr" >/dev/null
    fi
    export DATABASE_URL="${DATABASE_URL%/*}/mutr"
fi

log "migrating the database"
"$BIN/mutr-api" migrate

log "starting the AI server on 127.0.0.1:$AI_SERVER_PORT (log: .local/logs/ai-server.log)"
"$BIN/mutr-ai-server" serve --metrics-addr "$MUTR_AI_METRICS_ADDR" \
    >"$LOCAL_DIR/logs/ai-server.log" 2>&1 &
pids+=($!)
wait_for 120 curl -fsS "http://$MUTR_AI_METRICS_ADDR/readyz" \
    || { tail -n 30 "$LOCAL_DIR/logs/ai-server.log" >&2; die "the AI server did not become SERVING"; }

log "starting the API on $MUTR_HTTP_ADDR (log: .local/logs/api.log)"
"$BIN/mutr-api" serve >"$LOCAL_DIR/logs/api.log" 2>&1 &
pids+=($!)
wait_for 60 curl -fsS "http://$MUTR_HTTP_ADDR/readyz" \
    || { tail -n 30 "$LOCAL_DIR/logs/api.log" >&2; die "the API did not become ready"; }

cat >&2 <<MSG

  MUTR is running.
    open            http://$MUTR_HTTP_ADDR/
    API             http://$MUTR_HTTP_ADDR/api/v1/nodes/viz?x=0&y=0&z=0
    API metrics     http://$MUTR_HTTP_ADDR/metrics
    AI server       grpc://127.0.0.1:$AI_SERVER_PORT   (metrics http://$MUTR_AI_METRICS_ADDR/metrics)
    logs            .local/logs/
  Ctrl-C stops it all.

MSG
# Exit when either process dies, taking the other with it.
wait -n "${pids[@]}"
die "a process exited; see .local/logs/"
