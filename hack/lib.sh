# Shared helpers for the hack/ scripts. Sourced, not run.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL_DIR="${MUTR_LOCAL_DIR:-$ROOT/.local}"

log() { printf '\033[1m[mutr]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[mutr] error:\033[0m %s\n' "$*" >&2; exit 1; }

# Run apt-get as root (or through sudo), with `apt-get update` done once per process tree.
apt_install() {
    local pkgs=("$@")
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to install: ${pkgs[*]}"
        sudo=(sudo)
    fi
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install these yourself: ${pkgs[*]}"
    if [ -z "${MUTR_APT_UPDATED:-}" ]; then
        log "apt-get update"
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 \
            || die "apt-get update failed (no network to the Debian mirror?)"
        export MUTR_APT_UPDATED=1
    fi
    log "installing Debian packages: ${pkgs[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2 \
        || die "apt-get install ${pkgs[*]} failed"
}

# Creates database $1 on the server of $DATABASE_URL and prints its URL (same user, host and
# query options). Drop it with drop_db.
scratch_db() {
    local base="${DATABASE_URL%%\?*}"
    local query="${DATABASE_URL#"$base"}"
    psql -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "CREATE DATABASE $1" >/dev/null
    echo "${base%/*}/$1$query"
}

# Drops database $1 from the server of $DATABASE_URL, connections and all; never fails.
drop_db() {
    psql -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null 2>&1 || true
}

# True when something accepts TCP connections on host:port.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# First port from $1 upwards on which nothing listens on 127.0.0.1.
free_port() {
    local port=$1
    while port_open 127.0.0.1 "$port"; do port=$((port + 1)); done
    echo "$port"
}

# Wait until a command succeeds, up to $1 seconds.
wait_for() {
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}
