#!/usr/bin/env bash
# Realtime push fan-out: STOMP subscribers over loopback WebSockets receiving node events, against
# a bare WebSocket broadcast server (the baseline) in the same run. Prints deliveries/s and
# publish-to-receive latency. MUTR_BENCH_SUBSCRIBERS (default 500) and MUTR_BENCH_EVENTS
# (default 200) size the run.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
cd "$ROOT"
# Many sockets in one process.
ulimit -n 65536 2>/dev/null || true
cargo bench -q -p mutr-api --bench realtime_fanout
