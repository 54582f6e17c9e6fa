#!/usr/bin/env bash
# End-to-end check of the operator on a real kind cluster: install, deploy, promote, abort.
# Out of CI (needs Docker, kind, kubectl and helm, and a few minutes); run it by hand:
#
#   operator/e2e/kind.sh            # create (or reuse) the kind cluster "mutr-e2e" and run everything
#   KEEP=1 operator/e2e/kind.sh     # leave the cluster up afterwards for poking around
#   SKIP_BUILD=1 operator/e2e/kind.sh   # reuse the images already loaded into the cluster
#
# Needs Kubernetes 1.30 or later in the kind node (the operator's pods use the preStop sleep action):
# KIND_NODE_IMAGE picks the node image (default: kind's own). HTTP_PORT (default 80) is the host port
# that kind maps to ingress-nginx; MUTR then answers at http://mutr.localhost[:HTTP_PORT]/.
#
# Steps (each fails the script with the operator's status and Events printed):
#   1. build the api, ai-server and operator images (`make images`: Docker or Podman) and load them
#      into kind; create the cluster with the ingress port mapping and install ingress-nginx;
#   2. helm install charts/mutr with values-kind.yaml (operator, CRD, RBAC, PostgreSQL, Redis,
#      MutrDeployment "mutr", Ingress); wait until blue serves (`kubectl mutr wait --for=promoted`);
#      `helm test` (/readyz through the stable Service); /readyz through the Ingress; the operator's
#      PodDisruptionBudgets, AI NetworkPolicy and metrics Service exist; the models landed in the
#      AI pod's /models volume; `mutr-operator render` of the live resource passes a server-side
#      dry-run apply (the real API server validates what the operator builds);
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

for tool in kind kubectl helm cargo curl; do
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

# The plugin and `mutr-operator render`, built from this checkout, on PATH.
cargo build -q --release -p mutr-operator --bins --manifest-path "$ROOT/Cargo.toml"
export PATH="${CARGO_TARGET_DIR:-$ROOT/target}/release:$PATH"
# The plugin uses the kubeconfig's current context, which is switched to the kind cluster below.
MUTR=(kubectl-mutr -n "$NS")
HTTP_PORT="${HTTP_PORT:-80}"
INGRESS_NGINX_VERSION="${INGRESS_NGINX_VERSION:-controller-v1.12.1}"

if ! kind get clusters | grep -qx "$CLUSTER"; then
  # Ports 80/443 of the node go to ingress-nginx (its kind manifest binds them on the node labelled
  # ingress-ready).
  kind create cluster --name "$CLUSTER" --wait 120s ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} --config - <<KIND
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
    labels:
      ingress-ready: "true"
    extraPortMappings:
      - { containerPort: 80, hostPort: ${HTTP_PORT}, protocol: TCP }
KIND
fi
kubectl config use-context "$CTX" >/dev/null
minor="$(kubectl version -o json | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["serverVersion"]["minor"].rstrip("+")))')"
(( minor >= 30 )) || { echo "e2e: Kubernetes 1.$minor; the chart needs 1.30 or later (KIND_NODE_IMAGE)" >&2; exit 2; }

if [[ -z "${SKIP_BUILD:-}" ]]; then
  (cd "$ROOT" && TAG=dev hack/release/images.sh)
  for image in api ai-server operator; do
    if command -v docker >/dev/null 2>&1; then
      kind load docker-image --name "$CLUSTER" "mutr-${image}:dev"
    else
      podman save "localhost/mutr-${image}:dev" -o "/tmp/mutr-${image}.tar"
      kind load image-archive --name "$CLUSTER" "/tmp/mutr-${image}.tar"
    fi
  done
fi

echo "== ingress-nginx ($INGRESS_NGINX_VERSION)"
kubectl apply -f "https://raw.githubusercontent.com/kubernetes/ingress-nginx/${INGRESS_NGINX_VERSION}/deploy/static/provider/kind/deploy.yaml"
kubectl -n ingress-nginx wait --for=condition=Available deployment/ingress-nginx-controller --timeout 5m

echo "== install"
helm upgrade --install mutr "$ROOT/charts/mutr" --kube-context "$CTX" -n "$NS" --create-namespace \
  -f "$ROOT/charts/mutr/values-kind.yaml" --wait --timeout 10m
"${K[@]}" get crd mutrdeployments.mutr.io >/dev/null
"${MUTR[@]}" wait mutr --for=promoted --timeout "$TIMEOUT"
[[ "$("${K[@]}" get svc mutr-api -o jsonpath='{.spec.selector.mutr\.io/color}')" == blue ]]

echo "== the way in, and what the operator built around the pods"
helm test mutr --kube-context "$CTX" -n "$NS" --timeout 5m
for _ in $(seq 1 60); do
  curl -fsS --max-time 5 -H 'Host: mutr.localhost' "http://127.0.0.1:${HTTP_PORT}/readyz" >/dev/null && break
  sleep 2
done
curl -fsS --max-time 5 -H 'Host: mutr.localhost' "http://127.0.0.1:${HTTP_PORT}/readyz"
"${K[@]}" get pdb mutr-api-blue mutr-ai-blue >/dev/null
"${K[@]}" get networkpolicy mutr-ai-blue >/dev/null
"${K[@]}" get service mutr-ai-metrics >/dev/null
[[ "$("${K[@]}" get svc mutr-api -o jsonpath='{.spec.sessionAffinity}')" == ClientIP ]]
# The init container fetched into the volume (not $HOME/.cache), and the server found the files there.
"${K[@]}" exec deploy/mutr-ai-blue -c ai-server -- ls -l /models | grep -q '\.gguf'
# What the operator builds, rendered from the live resource, passes the real API server's validation.
"${K[@]}" get mutrdeployment mutr -o yaml > /tmp/mutr-e2e-md.yaml
mutr-operator render -f /tmp/mutr-e2e-md.yaml --all \
  | "${K[@]}" apply --server-side --dry-run=server --force-conflicts --field-manager=e2e-render -f - >/dev/null

rollout() { # a new revision: an extra env var on the API
  "${K[@]}" patch mutrdeployment mutr --type merge -p \
    "{\"spec\":{\"api\":{\"env\":[{\"name\":\"MUTR_PUBLIC_URL\",\"value\":\"http://mutr.localhost\"},{\"name\":\"E2E_ROLLOUT\",\"value\":\"$1\"}]}}}"
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

echo "e2e: install, ingress, deploy, promote and abort passed"
