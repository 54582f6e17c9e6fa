#!/usr/bin/env bash
# A/B of the API's write phase: two `mutr-api` binaries (or one binary under two environments),
# alternated round by round, each on a fresh database, through `benches/load.rs`'s closed-loop
# write-heavy phase (100 users, no think time). On a 2-core machine whose speed drifts by a third
# within minutes, only alternated short runs tell two builds apart; a whole `hack/benches/api.sh`
# run takes 15 minutes and compares with itself.
#
# For each run it prints the creation rate, p50 / p95, and the CPU each stored node cost per
# process (PostgreSQL's processes summed, the API, Redis, the load generator), read from
# /proc/<pid>/stat at the start and the end of the write phase. A PostgreSQL process that exits
# during the phase is not counted, and Redis is counted only when it runs on this machine.
#
# Usage: hack/bench-ab.sh A B [ROUNDS]
#   A, B: a mutr-api binary, optionally prefixed by environment settings in one word, for example
#         `target/release/mutr-api` or `MUTR_NODE_BATCH_CONCURRENCY=1:target/release/mutr-api`
#         (settings separated by commas: `K=V,K=V:binary`).
#   ROUNDS: how many times to alternate (default 3).
# It also prints how idle the machine was over the phase (idle and I/O wait from /proc/stat): on a
# fast machine the write phase can leave a fifth of the CPU idle, waiting on the commits' flushes.
#
# Knobs: MUTR_AB_DURATION (15s). MUTR_AB_WAITS=1 also samples pg_stat_activity every 10 ms over
# the phase and prints the share of the API's active statements waiting on the WAL (its flush or
# its lock) and on any other wait event; the sampler's own query and insert, 100 a second, take
# some of PostgreSQL's CPU, so leave it off when comparing with runs without it. (A run that
# stops early leaves no sampler behind: dropping the scratch database ends its session.)
#
# Needs DATABASE_URL and REDIS_URL (hack/with-services.sh provides them) and a release build of
# the load bench (`cargo build --release -p mutr-api --bench load`).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

[ $# -ge 2 ] || die "usage: hack/bench-ab.sh A B [ROUNDS]   (A, B: [K=V,K=V:]path/to/mutr-api)"
: "${DATABASE_URL:?DATABASE_URL must be set (run under hack/with-services.sh)}"
: "${REDIS_URL:?REDIS_URL must be set (run under hack/with-services.sh)}"
rounds="${3:-3}"
duration="${MUTR_AB_DURATION:-15s}"

LOAD="$(cargo build -q --release -p mutr-api --bench load --message-format=json 2>/dev/null \
    | sed -n 's/.*"name":"load".*"executable":"\([^"]*\)".*/\1/p' | tail -n1)"
[ -x "$LOAD" ] || die "could not build the load bench"

# "K=V,K=V:path" -> the environment words and the binary.
split_side() {
    local side=$1
    if [[ "$side" == *:* ]]; then
        env_words="${side%%:*}"
        bin="${side#*:}"
    else
        env_words=""
        bin="$side"
    fi
    [ -x "$bin" ] || die "not an executable: $bin"
}

# Clock ticks (user + system) of the processes in "$@".
ticks() {
    local total=0 pid fields
    for pid in "$@"; do
        # Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
        fields="$(sed -E 's/^.*\) //' "/proc/$pid/stat" 2>/dev/null)" || continue
        set -- $fields
        total=$((total + ${12} + ${13}))
    done
    echo "$total"
}
pg_pids() { pgrep -x postgres || true; }
redis_pids() { pgrep -x redis-server || true; }
# Idle (with I/O wait) and all ticks of the machine, from the first line of /proc/stat.
cpu_ticks() {
    awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print $5 + $6, t; exit }' /proc/stat
}

hz="$(getconf CLK_TCK)"
workdir="$(mktemp -d)"
db=""
api_pid=""
stop_api() {
    if [ -n "$api_pid" ]; then kill -TERM "$api_pid" 2>/dev/null || true; wait "$api_pid" 2>/dev/null || true; fi
    api_pid=""
}
cleanup() {
    stop_api
    [ -z "$db" ] || drop_db "$db"
    redis-cli -u "$REDIS_URL" --scan --pattern "mutr:ab:$$:*" 2>/dev/null \
        | xargs -r -n 1000 redis-cli -u "$REDIS_URL" DEL >/dev/null 2>&1 || true
    rm -rf "$workdir"
}
trap cleanup EXIT

# One write phase of side $1 ("A" or "B") in round $2; appends a line to the results.
run_side() {
    local name=$1 round=$2 side=$3
    split_side "$side"
    db="mutr_ab_$$_${round}_${name,,}"
    local db_url port
    db_url="$(scratch_db "$db")"
    DATABASE_URL="$db_url" RUST_LOG=warn "$bin" migrate
    port="$(free_port 18290)"
    # shellcheck disable=SC2086 # the environment words are split on commas on purpose
    env DATABASE_URL="$db_url" MUTR_HTTP_ADDR="127.0.0.1:$port" MUTR_WRITE_RATE_PER_SEC=0 \
        MUTR_REALTIME_REDIS_CHANNEL="mutr:ab:$$" MUTR_ANALYSIS_REDIS_PREFIX="mutr:ab:$$:analysis:" \
        MUTR_SHUTDOWN_GRACE=0s RUST_LOG=warn ${env_words//,/ } "$bin" serve >"$workdir/api.log" 2>&1 &
    api_pid=$!
    wait_for 60 curl -fsS "http://127.0.0.1:$port/healthz" \
        || { tail -n 20 "$workdir/api.log" >&2; die "mutr-api ($name) did not start"; }
    psql -q "$db_url" -c CHECKPOINT >/dev/null 2>&1 || true
    local sampler_pid=""
    if [ "${MUTR_AB_WAITS:-0}" = 1 ]; then
        # What the API's active statements wait on, 100 times a second, into a table of the
        # scratch database (committed sample by sample, so stopping the loop loses nothing).
        psql -q "$db_url" -c "CREATE UNLOGGED TABLE ab_waits (t timestamptz, wait text)" >/dev/null
        psql -q "$db_url" -c "DO \$\$ BEGIN LOOP
            PERFORM pg_stat_clear_snapshot();
            INSERT INTO ab_waits
              SELECT clock_timestamp(), coalesce(wait_event_type || ':' || wait_event, 'CPU')
              FROM pg_stat_activity WHERE datname = current_database() AND state = 'active'
                AND backend_type = 'client backend' AND pid <> pg_backend_pid();
            COMMIT; PERFORM pg_sleep(0.01); END LOOP; END \$\$" >/dev/null 2>&1 &
        sampler_pid=$!
    fi

    # The load bench announces each phase on stderr; the CPU is read when the write phase starts
    # and when the next one is announced. The later phases are kept as short as they go.
    local load_pid start=() end=() line
    exec 3< <(DATABASE_URL="$db_url" "$LOAD" --url "http://127.0.0.1:$port" --duration "$duration" \
        --write-users 100 --mixed-users 1 --galaxy-nodes 20000 --viz-duration 1s \
        --no-seed --no-viz-ceiling 2>&1 >"$workdir/load.out")
    load_pid=$!
    while IFS= read -r line <&3; do
        case "$line" in
            "saturation, write-heavy"*)
                start=("$(ticks $(pg_pids))" "$(ticks "$api_pid")" "$(ticks $(redis_pids))" "$(ticks "$load_pid")" "$(date +%s%N)" $(cpu_ticks)) ;;
            "mixed:"*)
                end=("$(ticks $(pg_pids))" "$(ticks "$api_pid")" "$(ticks $(redis_pids))" "$(ticks "$load_pid")" "$(date +%s%N)" $(cpu_ticks)) ;;
        esac
        printf '%s\n' "$line" >>"$workdir/load.err"
    done
    exec 3<&-
    wait "$load_pid" 2>/dev/null || { tail -n 20 "$workdir/load.err" >&2; die "the load bench failed ($name)"; }
    [ ${#start[@]} -eq 7 ] && [ ${#end[@]} -eq 7 ] || die "the load bench did not announce its phases"
    local waits="-"
    if [ -n "$sampler_pid" ]; then
        psql -q "$db_url" -c "SELECT pg_cancel_backend(pid) FROM pg_stat_activity
            WHERE datname = current_database() AND query LIKE 'DO %ab_waits%'" \
            >/dev/null 2>&1 || true
        wait "$sampler_pid" 2>/dev/null || true
        # The samples of the write phase: share waiting on the WAL, then on anything else.
        waits="$(psql -qAt -F ' ' "$db_url" -c "SELECT
              round(100.0 * count(*) FILTER (WHERE wait LIKE '%:WAL%') / greatest(count(*), 1)),
              round(100.0 * count(*) FILTER (WHERE wait <> 'CPU' AND wait NOT LIKE '%:WAL%')
                / greatest(count(*), 1))
            FROM ab_waits
            WHERE t BETWEEN to_timestamp(${start[4]} / 1e9) AND to_timestamp(${end[4]} / 1e9)" \
            | awk '{ printf "%s/%s", $1, $2 }')"
    fi
    stop_api
    drop_db "$db"; db=""

    local rowline rate p50 p95 nodes
    rowline="$(grep -m1 '^write-heavy (100 users)' "$workdir/load.out")" || die "no write-heavy row"
    read -r rate p50 p95 <<<"$(awk '{ print $4, $5, $6 }' <<<"$rowline")"
    nodes="$(awk '{ print $NF }' <<<"$rowline")"
    awk -v name="$name" -v round="$round" -v rate="$rate" -v p50="$p50" -v p95="$p95" -v n="$nodes" -v hz="$hz" \
        -v pg="$((end[0] - start[0]))" -v api="$((end[1] - start[1]))" -v rd="$((end[2] - start[2]))" -v ld="$((end[3] - start[3]))" \
        -v idle="$((end[5] - start[5]))" -v all="$((end[6] - start[6]))" -v waits="$waits" \
        'BEGIN { us = 1e6 / hz / n; printf "%-5s %5s %10s %8s %8s %10.1f %10.1f %10.1f %10.1f %7.0f %9s\n", round, name, rate, p50, p95, pg * us, api * us, rd * us, ld * us, 100 * idle / (all > 0 ? all : 1), waits }' \
        >>"$workdir/results"
}

log "A: $1"
log "B: $2"
log "$rounds rounds of A then B, write phase $duration each"
for round in $(seq 1 "$rounds"); do
    for name in A B; do
        if [ "$name" = A ]; then side=$1; else side=$2; fi
        log "round $round, $name"
        run_side "$name" "$round" "$side"
        tail -n1 "$workdir/results" >&2
    done
done
echo
printf '%-5s %5s %10s %8s %8s %10s %10s %10s %10s %7s %9s\n' round side "nodes/s" "p50 ms" "p95 ms" "pg us/node" "api us" "redis us" "load us" "idle %" "wal/oth %"
cat "$workdir/results"
