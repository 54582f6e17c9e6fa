#!/usr/bin/env bash
# `make bench`: runs every hack/benches/*.sh, once PostgreSQL and Redis are available. Each bench
# measures its baseline in the same run and prints a table: figure, baseline, ratio.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
cargo build -q --release --workspace --bins --benches
export PATH="${MUTR_PG_BIN:+$MUTR_PG_BIN:}$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1):$PATH"
for bench in hack/benches/*.sh; do
    [ -e "$bench" ] || continue
    log "bench: $bench"
    bash "$bench"
done
