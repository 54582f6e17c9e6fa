#!/usr/bin/env bash
# API load bench (issue 5): the release `mutr-api serve` on loopback over a fresh database, driven
# by api/benches/load.rs: write-heavy (100 users posting nodes) and mixed (200 users, one write to
# four /viz reads), 30 s each, then /viz on a galaxy of 1,000,000 clustered nodes (replacing the
# nodes the write phases stored, so that figure does not depend on them). Baseline measured
# in the same run: pgbench's prepared single-row inserts into the same table as the API's (a copy
# of `nodes` with its columns, defaults, checks, indexes and foreign keys), with the client count
# (of 8 to 100, or what max_connections leaves beside the API) that inserts fastest on this
# machine, run by the load bench right before and right after its write phase (the figure
# compares with the mean of those two, so a machine whose speed drifts during the run skews both
# sides alike); beside it the same inserts into a copy without the foreign keys (`LIKE` copies
# none; this script sweeps that one's client counts); and, as the ceiling of any group commit,
# pgbench inserting 64 rows per statement into the copy without foreign keys at its fastest
# client count (of 1 to 8). Under the /viz figure, the load bench measures its own ceiling:
# pgbench running /viz's statement for the same cubes on the same galaxy with as many clients as
# readers (the database alone, without HTTP or JSON).
# Needs DATABASE_URL, REDIS_URL and pgbench (hack/bench.sh provides them).
# Knobs: MUTR_BENCH_DURATION (30s), MUTR_BENCH_GALAXY (1000000); for comparing two builds,
# MUTR_BENCH_API_BIN (a mutr-api binary to measure instead of this tree's release build) and
# MUTR_BENCH_LOAD_ARGS (more arguments for the load bench, for example --no-seed).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
cd "$ROOT"

: "${DATABASE_URL:?DATABASE_URL must be set}"
: "${REDIS_URL:?REDIS_URL must be set}"
command -v pgbench >/dev/null || die "pgbench not found (hack/ensure-deps.sh bench)"
duration="${MUTR_BENCH_DURATION:-30s}"
galaxy="${MUTR_BENCH_GALAXY:-1000000}"
write_users=100
mixed_users=200

if [ -n "${MUTR_BENCH_API_BIN:-}" ]; then
    BIN="$MUTR_BENCH_API_BIN"
    [ -x "$BIN" ] || die "MUTR_BENCH_API_BIN is not an executable: $BIN"
else
    cargo build -q --release -p mutr-api --bin mutr-api
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/mutr-api"
fi
# The bench binary itself, built with the same release profile (no second build by `cargo bench`).
LOAD="$(cargo build -q --release -p mutr-api --bench load --message-format=json 2>/dev/null \
    | sed -n 's/.*"name":"load".*"executable":"\([^"]*\)".*/\1/p' | tail -n1)"
[ -x "$LOAD" ] || die "could not build the load bench"

db="mutr_bench_$$"
db_url="$(scratch_db "$db")"

workdir="$(mktemp -d)"
api_pid=""
cleanup() {
    if [ -n "$api_pid" ]; then kill -TERM "$api_pid" 2>/dev/null || true; wait "$api_pid" 2>/dev/null || true; fi
    drop_db "$db"
    # No AI server analyses the bench's nodes, so the pipeline's Redis keys (one or two per node)
    # would stay until their TTL (1 h): hundreds of thousands of keys in a shared Redis.
    if command -v redis-cli >/dev/null; then
        redis-cli -u "$REDIS_URL" --scan --pattern "mutr:bench:$$:*" 2>/dev/null \
            | xargs -r -n 1000 redis-cli -u "$REDIS_URL" DEL >/dev/null 2>&1 || true
    fi
    rm -rf "$workdir"
}
trap cleanup EXIT

DATABASE_URL="$db_url" RUST_LOG=warn "$BIN" migrate

# pgbench needs one connection per client besides the API's: the load bench runs the baselines
# while the API is up, its pools (`MUTR_DB_MAX_CONNECTIONS`, and the node writer's
# `MUTR_NODE_BATCH_CONCURRENCY`) possibly full after the write phase, and keeps one of its own.
max_conn="$(psql -At "$db_url" -c 'SHOW max_connections')"
api_conns=$(( ${MUTR_DB_MAX_CONNECTIONS:-32} + ${MUTR_NODE_BATCH_CONCURRENCY:-2} ))
pg_clients=$write_users
if [ "$max_conn" -lt $((write_users + api_conns + 10)) ]; then
    pg_clients=$((max_conn - api_conns - 10))
    [ "$pg_clients" -ge 8 ] || die "max_connections is $max_conn: too few for pgbench beside the API's $api_conns"
    log "max_connections is $max_conn: pgbench runs at most $pg_clients clients instead of $write_users"
fi

psql -q -v ON_ERROR_STOP=1 "$db_url" -c "CREATE TABLE bench_nodes (LIKE nodes INCLUDING ALL)" >/dev/null
cat >"$workdir/insert.sql" <<'SQL'
\set x random(-2000, 2000)
\set y random(-2000, 2000)
\set z random(-2000, 2000)
INSERT INTO bench_nodes (content, author_id, parent_id, root_id, x, y, z)
VALUES ('오늘 하늘 구름 바다 기억 마음 바람 여행 커피 음악 친구 산책', 1, 1, 1, :x, :y, :z);
SQL
# pgbench at its best settings, never a handicapped one: prepared statements (about 16% faster than
# the simple protocol on the 2-core machine), and the client count that inserts fastest here,
# picked by a 10 s run of each (on 2 cores with fsync on, 32 clients beat 90 by about a fifth).
# Each run starts on an empty table, as the API's write phase starts on a nearly empty `nodes`.
# $1 clients, $2 seconds, $3 the script (insert.sql); prints "tps latency_ms".
pgbench_run() {
    psql -q -v ON_ERROR_STOP=1 "$db_url" -c "TRUNCATE bench_nodes" >/dev/null
    # Each run starts with no dirty pages of another's (as the load bench's runs do).
    psql -q "$db_url" -c "CHECKPOINT" >/dev/null 2>&1 || true
    pgbench -n -M prepared -c "$1" -j 2 -T "$2" -f "$workdir/${3:-insert.sql}" "$db_url" >"$workdir/pgbench.log" 2>&1 \
        || { cat "$workdir/pgbench.log" >&2; die "pgbench failed"; }
    local tps lat
    tps="$(sed -nE 's/^tps = ([0-9.]+).*/\1/p' "$workdir/pgbench.log" | tail -n1)"
    lat="$(sed -nE 's/^latency average = ([0-9.]+) ms.*/\1/p' "$workdir/pgbench.log" | tail -n1)"
    [ -n "$tps" ] || { cat "$workdir/pgbench.log" >&2; die "could not read pgbench's tps"; }
    echo "$tps ${lat:-0}"
}
# The client count of "$@" at which pgbench runs $1 (a script) fastest, 10 s each; logs each run
# as $2 (what it inserts). Prints the count and its rate.
fastest_clients() {
    local script=$1 what=$2 best=0 best_tps=0 c t
    shift 2
    for c in "$@"; do
        read -r t _ < <(pgbench_run "$c" 10 "$script") || return 1
        log "sweep: pgbench, $c clients, prepared $what: $t tps"
        if awk -v a="$t" -v b="$best_tps" 'BEGIN { exit !(a > b) }'; then best=$c; best_tps=$t; fi
    done
    echo "$best $best_tps"
}
sweep=()
for c in 8 16 32 64 "$pg_clients"; do
    if [ "$c" -le "$pg_clients" ]; then sweep+=("$c"); fi
done
# The inserts without foreign keys are run again by the load bench at this client count, right
# before and right after its write phase, beside the write figure's baseline (with them), whose
# client count the load bench sweeps itself (it sets up their keys and parents).
read -r best_clients tps < <(fastest_clients insert.sql "single-row inserts" "${sweep[@]}")
secs="$(( $(sed -E 's/s$//' <<<"$duration") ))"
# The floor under any write's latency: one client, one insert and its commit at a time.
log "baseline: pgbench, 1 client, single-row inserts for 10 s (the commit latency floor)"
read -r _ floor < <(pgbench_run 1 10)
# The ceiling of group commit: 64 rows per statement and commit (the API's most per batch), the
# same rows into the same table, at the client count (of 1 to 8) that stores rows fastest. No group
# commit of at most 64 nodes can store rows faster than this on this machine; the API's batches
# also check foreign keys (the author, and the parent and tree of a child) and look up parents and
# authors, which this table does not.
cat >"$workdir/insert64.sql" <<'SQL'
INSERT INTO bench_nodes (content, author_id, parent_id, root_id, x, y, z)
SELECT '오늘 하늘 구름 바다 기억 마음 바람 여행 커피 음악 친구 산책', 1, 1, 1,
       floor(random() * 4001) - 2000, floor(random() * 4001) - 2000, floor(random() * 4001) - 2000
FROM generate_series(1, 64);
SQL
read -r best64_clients _ < <(fastest_clients insert64.sql "64-row inserts" 1 2 4 8)
log "ceiling: pgbench, $best64_clients clients (the fastest), prepared 64-row inserts for $duration"
read -r tps64 _ < <(pgbench_run "$best64_clients" "$secs" insert64.sql)
rows64="$(awk -v t="$tps64" 'BEGIN { printf "%.1f", t * 64 }')"
psql -q "$db_url" -c "DROP TABLE bench_nodes" >/dev/null

port="$(free_port 18090)"
log "starting mutr-api (release) on 127.0.0.1:$port, per-user write limit off, no AI server"
DATABASE_URL="$db_url" MUTR_HTTP_ADDR="127.0.0.1:$port" MUTR_WRITE_RATE_PER_SEC=0 \
    MUTR_REALTIME_REDIS_CHANNEL="mutr:bench:$$" \
    MUTR_ANALYSIS_REDIS_PREFIX="mutr:bench:$$:analysis:" MUTR_SHUTDOWN_GRACE=0s RUST_LOG=warn \
    "$BIN" serve >"$workdir/api.log" 2>&1 &
api_pid=$!
# No AI server here: this bench measures the HTTP API alone (the AI server runs on nodes of its
# own in a cluster, and on these 2 cores it would take the CPU the API is measured with), so the
# pipeline waits for one and /readyz says "starting"; /healthz says the API serves.
wait_for 60 curl -fsS "http://127.0.0.1:$port/healthz" \
    || { tail -n 40 "$workdir/api.log" >&2; die "mutr-api did not become ready"; }

log "load: write-heavy, mixed, then /viz at $galaxy nodes"
DATABASE_URL="$db_url" "$LOAD" \
    --url "http://127.0.0.1:$port" --duration "$duration" \
    --write-users "$write_users" --mixed-users "$mixed_users" --galaxy-nodes "$galaxy" \
    --pgbench-tps "$tps" ${floor:+--commit-floor-ms "$floor"} --pgbench-rows-64 "$rows64" \
    --pgbench-clients "$best_clients" --pgbench-script "$workdir/insert.sql" \
    --pgbench-sweep "$(IFS=,; echo "${sweep[*]}")" \
    ${MUTR_BENCH_LOAD_ARGS:-}
log "pgbench's sweep: $best_clients clients fastest, prepared, $tps tps (10 s)"
log "group commit's ceiling: pgbench, $best64_clients clients, prepared 64-row inserts, $rows64 rows/s"
