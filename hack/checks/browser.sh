#!/usr/bin/env bash
# Browser test of the API's page at `/`: installs Chromium and Node when missing (Debian
# packages), `npm ci`s playwright-core (no browser download) in api/tests/browser, starts
# `mutr-api serve` on a free port over a fresh database, and runs api/tests/browser/galaxy.test.mjs.
# Needs DATABASE_URL and REDIS_URL (hack/with-services.sh sets them).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
cd "$ROOT"

: "${DATABASE_URL:?DATABASE_URL must be set (run through hack/with-services.sh)}"
: "${REDIS_URL:?REDIS_URL must be set (run through hack/with-services.sh)}"

"$ROOT/hack/ensure-deps.sh" browser services

log "browser: npm ci (playwright-core, no browser download)"
(cd api/tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)

log "browser: building mutr-api"
cargo build -q -p mutr-api --bin mutr-api
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mutr-api"

# A fresh database on the same server, dropped on exit.
db="mutr_browser_$$"
admin_url="$DATABASE_URL"
url_base="${DATABASE_URL%%\?*}"
url_query="${DATABASE_URL#"$url_base"}"
db_url="${url_base%/*}/$db$url_query"
psql -q -v ON_ERROR_STOP=1 "$admin_url" -c "CREATE DATABASE $db" >/dev/null

workdir="$(mktemp -d)"
api_pid=""
cleanup() {
    if [ -n "$api_pid" ]; then kill -TERM "$api_pid" 2>/dev/null || true; wait "$api_pid" 2>/dev/null || true; fi
    psql -q "$admin_url" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$workdir"
}
trap cleanup EXIT

DATABASE_URL="$db_url" "$BIN" migrate

port="$(free_port 18080)"
DATABASE_URL="$db_url" MUTR_HTTP_ADDR="127.0.0.1:$port" MUTR_SHUTDOWN_GRACE=0s RUST_LOG=warn \
    "$BIN" serve >"$workdir/api.log" 2>&1 &
api_pid=$!
wait_for 60 curl -fsS "http://127.0.0.1:$port/readyz" \
    || { tail -n 40 "$workdir/api.log" >&2; die "mutr-api did not become ready"; }

log "browser: headless Chromium against http://127.0.0.1:$port/"
if ! (cd api/tests/browser && MUTR_URL="http://127.0.0.1:$port" node galaxy.test.mjs); then
    tail -n 40 "$workdir/api.log" >&2
    die "browser test failed"
fi
