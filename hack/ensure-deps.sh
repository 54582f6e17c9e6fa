#!/usr/bin/env bash
# Installs the build and test needs that a fresh Debian machine with only the Rust toolchain lacks,
# and only those that are missing:
#   cmake, a C++ compiler, libclang (bindgen) -> building llama.cpp (llama-cpp-sys-2)
#   pkg-config                               -> -sys crates
#   PostgreSQL and Redis server binaries      -> only when no server answers (see hack/services.sh)
#   pgbench, psql (postgresql-client)         -> `make bench` baseline and scripts
# No system protoc is needed: proto/ compiles with protox (pure Rust).
# Usage: hack/ensure-deps.sh [build] [services] [bench] [browser]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

want=("$@"); [ ${#want[@]} -gt 0 ] || want=(build)
missing=()

has_libclang() {
    [ -n "${LIBCLANG_PATH:-}" ] && return 0
    local f
    # libclang-cpp.so (the C++ library some images carry) is not what bindgen loads.
    for f in /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* \
        /usr/lib/*-linux-gnu/libclang.so* /usr/lib/*-linux-gnu/libclang-[0-9]*.so*; do
        [ -e "$f" ] && return 0
    done
    return 1
}

for w in "${want[@]}"; do
    case "$w" in
    build)
        command -v cmake >/dev/null || missing+=(cmake)
        command -v c++ >/dev/null || missing+=(g++)
        command -v make >/dev/null || missing+=(make)
        command -v pkg-config >/dev/null || missing+=(pkg-config)
        command -v git >/dev/null || missing+=(git)
        command -v curl >/dev/null || missing+=(curl ca-certificates)
        has_libclang || missing+=(libclang-dev)
        ;;
    services)
        # Only the binaries; hack/services.sh decides whether to start them.
        [ -n "$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null)" ] || command -v initdb >/dev/null || missing+=(postgresql)
        command -v psql >/dev/null || missing+=(postgresql-client)
        command -v redis-server >/dev/null || missing+=(redis-server)
        ;;
    bench)
        command -v pgbench >/dev/null || [ -n "$(ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null)" ] || missing+=(postgresql-contrib)
        ;;
    browser)
        command -v chromium >/dev/null || missing+=(chromium)
        command -v node >/dev/null || missing+=(nodejs npm)
        ;;
    *) die "unknown need: $w" ;;
    esac
done

if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${missing[@]}"
else
    log "already installed: everything needed for ${want[*]}"
fi
