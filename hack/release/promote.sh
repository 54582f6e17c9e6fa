#!/usr/bin/env bash
# Ships a version to a cluster through the operator's blue/green switchover, and aborts the rollout
# on any failure (the old colour keeps serving): set the new images on the MutrDeployment, wait until
# the preview is ready (migration ran, pods ready, AI server SERVING), smoke-test the preview Service,
# promote, wait until promoted (traffic switched, old colour drained, its claims recovered).
#
#   hack/release/promote.sh VERSION
#
# Environment: NAMESPACE (mutr), NAME (mutr: the MutrDeployment), REGISTRY (image prefix, required),
# AI_TAG_SUFFIX (-cuda for the GPU image, the default; empty for the CPU one), TIMEOUT (20m).
# Needs kubectl with a context on the cluster and kubectl-mutr on PATH.
set -euo pipefail

version="${1:?usage: promote.sh VERSION}"
ns="${NAMESPACE:-mutr}"
name="${NAME:-mutr}"
registry="${REGISTRY:?REGISTRY is required (e.g. REGION-docker.pkg.dev/PROJECT/mutr)}"
ai_suffix="${AI_TAG_SUFFIX--cuda}"
timeout="${TIMEOUT:-20m}"

abort() {
    echo "promote: failed; aborting the rollout of $version (the serving colour keeps serving)" >&2
    kubectl mutr -n "$ns" abort "$name" || true
    kubectl mutr -n "$ns" status "$name" || true
    exit 1
}
trap abort ERR INT TERM

echo "== set $version on mutrdeployment/$name"
kubectl -n "$ns" patch mutrdeployment "$name" --type merge -p "$(printf \
    '{"spec":{"api":{"image":"%s/mutr-api:%s"},"aiServer":{"image":"%s/mutr-ai-server:%s%s"}}}' \
    "$registry" "$version" "$registry" "$version" "$ai_suffix")"

echo "== wait for the preview"
kubectl mutr -n "$ns" wait "$name" --for=preview-ready --timeout "$timeout"

echo "== smoke test through the preview Service"
service="$(kubectl -n "$ns" get mutrdeployment "$name" -o jsonpath='{.spec.service.name}')"
kubectl -n "$ns" run "mutr-smoke-$RANDOM" --rm -i --restart=Never --quiet \
    --image=docker.io/curlimages/curl:8.11.1 \
    --overrides='{"spec":{"securityContext":{"runAsNonRoot":true,"runAsUser":65532,"seccompProfile":{"type":"RuntimeDefault"}},"automountServiceAccountToken":false}}' \
    -- --fail-with-body --silent --show-error --max-time 10 --retry 5 --retry-all-errors \
    "http://${service:-mutr-api}-preview.$ns.svc/readyz"

echo "== promote"
kubectl mutr -n "$ns" promote "$name"
kubectl mutr -n "$ns" wait "$name" --for=promoted --timeout "$timeout"
trap - ERR INT TERM
kubectl mutr -n "$ns" status "$name"
echo "promote: $version serves"
