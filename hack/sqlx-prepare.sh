#!/usr/bin/env bash
# `make sqlx-prepare`: regenerates .sqlx/ (the offline data of sqlx's compile-checked queries)
# without sqlx-cli. Applies api/migrations to a scratch database, deletes the old query files,
# and recompiles every target of mutr-api with the macros online, which writes one file per query.
# Needs DATABASE_URL (any database on the server; hack/with-services.sh sets it) and psql.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

: "${DATABASE_URL:?DATABASE_URL must be set}"
command -v psql >/dev/null || "$ROOT/hack/ensure-deps.sh" services

db="mutr_sqlx_prepare_$$"
url_base="${DATABASE_URL%%\?*}"
url_query="${DATABASE_URL#"$url_base"}"
db_url="${url_base%/*}/$db$url_query"
psql -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "CREATE DATABASE $db" >/dev/null
trap 'psql -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true' EXIT

for migration in api/migrations/*.sql; do
    psql -q -v ON_ERROR_STOP=1 "$db_url" -f "$migration" >/dev/null
done

mkdir -p .sqlx
rm -f .sqlx/query-*.json
# Touch the crate root so every target (lib, its unit tests, integration tests, benches) recompiles
# and every query macro runs again.
touch api/src/lib.rs
SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$ROOT/.sqlx" DATABASE_URL="$db_url" \
    cargo check -q -p mutr-api --all-targets
log "sqlx-prepare: $(ls .sqlx/query-*.json | wc -l) queries in .sqlx/"
