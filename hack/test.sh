#!/usr/bin/env bash
# What `make test` and CI run, once PostgreSQL and Redis are available (hack/with-services.sh).
# Order matters for time on a 2-core machine: clippy first, then the tests, both over one target
# folder and one profile, so llama.cpp is compiled once per run.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

log "models: ${MUTR_MODEL_DIR:-<none: tests that need models will download the tiny profile>}"

log "lint: cargo fmt --check"
cargo fmt --all -- --check

log "lint: cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

log "tests: cargo nextest against the real PostgreSQL and Redis, and real models"
if command -v cargo-nextest >/dev/null 2>&1; then
    # nextest does not run doc tests; run them first so the test summary is the last word.
    cargo test --workspace --doc --quiet
    cargo nextest run --workspace --no-fail-fast
else
    cargo test --workspace --no-fail-fast
fi

for check in "$ROOT"/hack/checks/*.sh; do
    [ -e "$check" ] || continue
    log "check: ${check#"$ROOT"/}"
    bash "$check"
done
log "make test: all passed"
