#!/usr/bin/env bash
# The REST API fuzzed by schemathesis from the checked-in api/openapi.json: installs schemathesis
# (pinned) into a venv under .local/, starts `mutr-api serve` on a free port over a fresh database
# on the real PostgreSQL and Redis (no AI server: nodes stay PENDING and /readyz answers 503
# `starting`, as documented), gets a guest token, and runs every phase with a time bound. Any 5xx,
# a response off its schema, an undocumented status or content type fails the check.
# Needs DATABASE_URL and REDIS_URL (hack/with-services.sh sets them).
#
# Knobs: MUTR_SCHEMATHESIS_MAX_TIME (seconds of fuzzing, default 60), MUTR_SCHEMATHESIS_EXAMPLES
# (cases per operation and phase, default 100), MUTR_SCHEMATHESIS_SEED (replay a run).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
cd "$ROOT"

: "${DATABASE_URL:?DATABASE_URL must be set (run through hack/with-services.sh)}"
: "${REDIS_URL:?REDIS_URL must be set (run through hack/with-services.sh)}"

SCHEMATHESIS_VERSION=4.32.5
venv="$LOCAL_DIR/schemathesis-$SCHEMATHESIS_VERSION"
if [ ! -x "$venv/bin/schemathesis" ]; then
    log "schemathesis: installing $SCHEMATHESIS_VERSION into ${venv#"$ROOT"/}"
    # Debian's python3 ships venv and ensurepip separately.
    python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3 python3-venv
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi

log "schemathesis: building mutr-api"
cargo build -q -p mutr-api --bin mutr-api
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mutr-api"

# A fresh database on the same server, dropped on exit.
db="mutr_schemathesis_$$"
db_url="$(scratch_db "$db")"

workdir="$(mktemp -d)"
api_pid=""
cleanup() {
    if [ -n "$api_pid" ]; then kill -TERM "$api_pid" 2>/dev/null || true; wait "$api_pid" 2>/dev/null || true; fi
    drop_db "$db"
    rm -rf "$workdir"
}
trap cleanup EXIT

DATABASE_URL="$db_url" "$BIN" migrate

# The AI server is a closed port: nodes stay PENDING. The write rate limit is off, or the fuzzer's
# one guest would spend the run on 429s. Google sign-in is configured against a closed port, so
# the sign-in routes answer their redirects (never followed, so the provider is never called).
port="$(free_port 18180)"
ai_port="$(free_port 18151)"
provider="http://127.0.0.1:$(free_port $((ai_port + 1)))"
MUTR_JWT_SECRET="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export MUTR_JWT_SECRET MUTR_OAUTH_GOOGLE_CLIENT_ID=schemathesis MUTR_OAUTH_GOOGLE_CLIENT_SECRET=unused \
    MUTR_OAUTH_GOOGLE_AUTH_URL="$provider/auth" MUTR_OAUTH_GOOGLE_TOKEN_URL="$provider/token" \
    MUTR_OAUTH_GOOGLE_USERINFO_URL="$provider/userinfo" MUTR_PUBLIC_URL="http://127.0.0.1:$port"
DATABASE_URL="$db_url" MUTR_HTTP_ADDR="127.0.0.1:$port" MUTR_SHUTDOWN_GRACE=0s RUST_LOG=warn \
    MUTR_AI_URL="http://127.0.0.1:$ai_port" MUTR_ANALYSIS_REDIS_PREFIX="mutr-schemathesis-$$:" \
    MUTR_REALTIME_REDIS_CHANNEL="mutr-schemathesis-$$" MUTR_WRITE_RATE_PER_SEC=0 \
    "$BIN" serve >"$workdir/api.log" 2>&1 &
api_pid=$!
base="http://127.0.0.1:$port"
wait_for 60 curl -fsS "$base/healthz" \
    || { tail -n 40 "$workdir/api.log" >&2; die "mutr-api did not start"; }

# The served document is the checked-in one (the Rust tests check the code against the file).
curl -fsS "$base/api/openapi.json" | cmp -s - api/openapi.json \
    || die "the served /api/openapi.json differs from api/openapi.json; run \`make openapi\`"

token="$(curl -fsS -X POST "$base/api/v1/auth/guest" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["data"]["guestToken"])')"

seed_flags=()
if [ -n "${MUTR_SCHEMATHESIS_SEED:-}" ]; then seed_flags=(--seed "$MUTR_SCHEMATHESIS_SEED"); fi
max_time="${MUTR_SCHEMATHESIS_MAX_TIME:-60}"
log "schemathesis: fuzzing $base for at most ${max_time}s"
started=$SECONDS
# Redirects are not followed: the 302s of the sign-in routes are the answers under test.
if ! (cd "$workdir" && "$venv/bin/schemathesis" --config-file "$ROOT/hack/checks/schemathesis.toml" \
    run "$ROOT/api/openapi.json" \
    --url "$base" \
    --header "X-Guest-Token: $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-examples "${MUTR_SCHEMATHESIS_EXAMPLES:-100}" \
    --max-time "$max_time" \
    --max-redirects 0 \
    --request-timeout 10 \
    --workers 2 \
    --generation-database none \
    --no-color \
    "${seed_flags[@]}"); then
    tail -n 40 "$workdir/api.log" >&2
    die "schemathesis found failures (above); replay one with MUTR_SCHEMATHESIS_SEED=<seed>"
fi
log "schemathesis: passed in $((SECONDS - started))s"
