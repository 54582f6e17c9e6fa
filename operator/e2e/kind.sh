#!/usr/bin/env bash
# End-to-end check of the operator on a real kind cluster: install, deploy, promote, abort.
# Out of CI (needs Docker, kind, kubectl and helm, and a few minutes); run it by hand:
#
#   operator/e2e/kind.sh            # create (or reuse) the kind cluster "mutr-e2e" and run everything
#   KEEP=1 operator/e2e/kind.sh     # leave the cluster up afterwards for poking around
#   SKIP_BUILD=1 operator/e2e/kind.sh   # reuse the images already loaded into the cluster
#
# Steps (each fails the script with the operator's status and Events printed):
#   1. build the api, ai-server and operator images (docker/*.Dockerfile) and load them into kind;
#   2. helm install charts/mutr with values-kind.yaml (operator, CRD, RBAC, PostgreSQL, Redis,
#      MutrDeployment "mutr"); wait until blue serves (`kubectl mutr wait --for=promoted`);
#   3. roll out a new revision (an annotation-free env change), wait for preview-ready, check that the
#      stable Service still selects blue, promote, wait for promoted, check that it selects green,
#      that status.lastSwitchover names blue -> green with a recovery summary, and that blue is at 0;
#   4. roll out another revision, wait for preview-ready, abort, check that the phase is Aborted,
#      the preview scaled to zero and the stable Service unchanged.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CLUSTER="${CLUSTER:-mutr-e2e}"
NS="${NS:-mutr}"
TIMEOUT="${TIMEOUT:-15m}"
CTX="kind-${CLUSTER}"
K=(kubectl --context "$CTX" -n "$NS")

for tool in docker kind kubectl helm cargo; do
  command -v "$tool" >/dev/null || { echo "e2e: $tool is required" >&2; exit 2; }
done

dump() {
  echo "---- e2e failed; state of ${NS}/mutr ----" >&2
  "${K[@]}" get mutrdeployment,deploy,svc,jobs,pods -o wide >&2 || true
  "${K[@]}" describe mutrdeployment mutr >&2 || true
  "${K[@]}" logs -l app.kubernetes.io/component=operator --tail=200 >&2 || true
}
trap dump ERR

cleanup() {
  if [[ -z "${KEEP:-}" ]]; then kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

# The plugin, built from this checkout, on PATH as kubectl-mutr.
cargo build -q --release -p mutr-operator --bin kubectl-mutr --manifest-path "$ROOT/Cargo.toml"
export PATH="${CARGO_TARGET_DIR:-$ROOT/target}/release:$PATH"
# The plugin uses the kubeconfig's current context, which is switched to the kind cluster below.
MUTR=(kubectl-mutr -n "$NS")

kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 120s
kubectl config use-context "$CTX" >/dev/null

if [[ -z "${SKIP_BUILD:-}" ]]; then
  for image in api ai-server operator; do
    docker build -f "$ROOT/docker/${image}.Dockerfile" -t "mutr-${image}:dev" "$ROOT"
    kind load docker-image --name "$CLUSTER" "mutr-${image}:dev"
  done
fi

echo "== install"
helm upgrade --install mutr "$ROOT/charts/mutr" --kube-context "$CTX" -n "$NS" --create-namespace \
  -f "$ROOT/charts/mutr/values-kind.yaml" --wait --timeout 10m
"${K[@]}" get crd mutrdeployments.mutr.io >/dev/null
"${MUTR[@]}" wait mutr --for=promoted --timeout "$TIMEOUT"
[[ "$("${K[@]}" get svc mutr-api -o jsonpath='{.spec.selector.mutr\.io/color}')" == blue ]]

rollout() { # a new revision: an extra env var on the API
  "${K[@]}" patch mutrdeployment mutr --type merge -p \
    "{\"spec\":{\"api\":{\"env\":[{\"name\":\"MUTR_PUBLIC_URL\",\"value\":\"http://127.0.0.1:8080\"},{\"name\":\"E2E_ROLLOUT\",\"value\":\"$1\"}]}}}"
}

echo "== deploy a new revision and promote it"
rollout 1
"${MUTR[@]}" wait mutr --for=preview-ready --timeout "$TIMEOUT"
[[ "$("${K[@]}" get svc mutr-api -o jsonpath='{.spec.selector.mutr\.io/color}')" == blue ]]
"${MUTR[@]}" promote mutr
"${MUTR[@]}" wait mutr --for=promoted --timeout "$TIMEOUT"
[[ "$("${K[@]}" get svc mutr-api -o jsonpath='{.spec.selector.mutr\.io/color}')" == green ]]
"${MUTR[@]}" status mutr -o json > /tmp/mutr-e2e-status.json
python3 - /tmp/mutr-e2e-status.json <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["status"]
last = s["lastSwitchover"]
assert (last["from"], last["to"]) == ("blue", "green"), last
assert "recovery" in last and last["recovery"]["fromColor"] == "blue", last
PY
[[ "$("${K[@]}" get deploy mutr-api-blue -o jsonpath='{.spec.replicas}')" == 0 ]]

echo "== deploy another revision and abort it"
rollout 2
"${MUTR[@]}" wait mutr --for=preview-ready --timeout "$TIMEOUT"
"${MUTR[@]}" abort mutr
for _ in $(seq 1 60); do
  phase="$("${K[@]}" get mutrdeployment mutr -o jsonpath='{.status.phase}')"
  [[ "$phase" == Aborted ]] && break
  sleep 2
done
[[ "$phase" == Aborted ]]
[[ "$("${K[@]}" get svc mutr-api -o jsonpath='{.spec.selector.mutr\.io/color}')" == green ]]
[[ "$("${K[@]}" get deploy mutr-api-blue -o jsonpath='{.spec.replicas}')" == 0 ]]
if "${MUTR[@]}" wait mutr --for=promoted --timeout 10s; then
  echo "e2e: wait --for=promoted must fail on an aborted rollout" >&2; exit 1
fi

echo "e2e: install, deploy, promote and abort passed"
