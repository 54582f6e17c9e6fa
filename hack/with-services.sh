#!/usr/bin/env bash
# Runs a command with PostgreSQL and Redis available, exporting DATABASE_URL and REDIS_URL to it.
#
# For each service, in order:
#   1. the URL already in the environment (DATABASE_URL, REDIS_URL) is used as it is;
#   2. else a server on the standard local port (127.0.0.1:5432 as user postgres, 127.0.0.1:6379);
#   3. else a private throwaway instance on a free port under .local/ (git-ignored), installing the
#      Debian packages first if needed. It is stopped and deleted when the command ends.
#
# Usage: hack/with-services.sh COMMAND [ARGS...]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

[ $# -gt 0 ] || die "usage: $0 COMMAND [ARGS...]"

started_pg=""
started_redis=""
cleanup() {
    local rc=$?
    if [ -n "$started_redis" ]; then
        log "stopping private Redis ($started_redis)"
        kill "$(cat "$started_redis/redis.pid" 2>/dev/null)" 2>/dev/null || true
        rm -rf "$started_redis"
    fi
    if [ -n "$started_pg" ]; then
        log "stopping private PostgreSQL ($started_pg)"
        as_pg_user "$PG_BIN/pg_ctl" -D "$started_pg/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$started_pg"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

pg_bin_dir() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
    if [ -z "$d" ] && command -v initdb >/dev/null; then d=$(dirname "$(command -v initdb)"); fi
    echo "$d"
}

# PostgreSQL refuses to run as root: run it as the `postgres` user Debian's package creates.
PG_USER=""
as_pg_user() {
    if [ -n "$PG_USER" ]; then runuser -u "$PG_USER" -- "$@"; else "$@"; fi
}

private_dir() {
    # A folder under .local/ that the service user can reach; /tmp when a parent is closed to it.
    local name=$1 dir
    mkdir -p "$LOCAL_DIR"
    dir=$(mktemp -d "$LOCAL_DIR/$name.XXXXXX")
    if [ -n "$PG_USER" ] && [ "$name" = pg ]; then
        chown "$PG_USER" "$dir"
        if ! runuser -u "$PG_USER" -- test -w "$dir"; then
            rm -rf "$dir"
            dir=$(mktemp -d "${TMPDIR:-/tmp}/mutr-$name.XXXXXX")
            chown "$PG_USER" "$dir"
        fi
    fi
    echo "$dir"
}

start_postgres() {
    "$(dirname "$0")/ensure-deps.sh" services
    PG_BIN=$(pg_bin_dir)
    [ -x "$PG_BIN/initdb" ] || die "PostgreSQL server binaries not found after install"
    if [ "$(id -u)" -eq 0 ]; then
        PG_USER=postgres
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    fi
    local dir port
    dir=$(private_dir pg)
    port=$(free_port 15432)
    log "starting a private PostgreSQL on 127.0.0.1:$port (data in $dir)"
    as_pg_user "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    as_pg_user "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
        >/dev/null || { cat "$dir/postgres.log" >&2; die "PostgreSQL did not start"; }
    started_pg=$dir
    export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
    export MUTR_PG_BIN="$PG_BIN"
}

start_redis() {
    "$(dirname "$0")/ensure-deps.sh" services
    local dir port
    dir=$(private_dir redis)
    port=$(free_port 16379)
    log "starting a private Redis on 127.0.0.1:$port (in $dir)"
    redis-server --bind 127.0.0.1 --port "$port" --daemonize yes --save "" --appendonly no \
        --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null \
        || die "redis-server did not start"
    wait_for 20 port_open 127.0.0.1 "$port" || { cat "$dir/redis.log" >&2; die "Redis did not answer"; }
    started_redis=$dir
    export REDIS_URL="redis://127.0.0.1:$port"
}

# Tells hack/run.sh whether it may pick its own database on the server found or started here.
export MUTR_DATABASE_URL_GIVEN=0
if [ -n "${DATABASE_URL:-}" ]; then
    MUTR_DATABASE_URL_GIVEN=1
    log "PostgreSQL: using DATABASE_URL from the environment"
elif port_open 127.0.0.1 5432; then
    export DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres"
    log "PostgreSQL: using the server on 127.0.0.1:5432"
else
    start_postgres
fi

if [ -n "${REDIS_URL:-}" ]; then
    log "Redis: using REDIS_URL from the environment"
elif port_open 127.0.0.1 6379; then
    export REDIS_URL="redis://127.0.0.1:6379"
    log "Redis: using the server on 127.0.0.1:6379"
else
    start_redis
fi

# Not `exec`: the trap above must stop the private instances when the command ends.
"$@"
