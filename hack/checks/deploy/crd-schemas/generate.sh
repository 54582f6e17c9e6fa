#!/usr/bin/env bash
# Regenerates the checked-in JSON schemas of the third-party custom resources that the chart, the
# overlays and the operator may create (GKE Ingress objects, cert-manager, KEDA, prometheus-operator).
#
# Source: the @kubernetes-models/* npm packages pinned in package.json (MIT; their type declarations
# are generated from the upstream CRDs' openAPIV3Schema). ts-json-schema-generator turns each
# resource's TypeScript interface into a JSON schema that closes every object
# (additionalProperties: false), so an unknown or misspelt field fails as `kubectl apply` would make
# it fail against the CRD. Run by hand after changing a version (needs npm); `make test` only reads
# the JSON files.
set -euo pipefail
cd "$(dirname "$0")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp package.json "$work/"
(cd "$work" && npm install --silent --no-audit --no-fund --ignore-scripts >/dev/null)
echo '{ "compilerOptions": { "strict": true, "skipLibCheck": true, "moduleResolution": "node" } }' > "$work/tsconfig.json"

# package  path-inside-the-package  interface  output (group_version_kind)
while read -r pkg path type out; do
    [ -n "$pkg" ] || continue
    "$work/node_modules/.bin/ts-json-schema-generator" --tsconfig "$work/tsconfig.json" --no-type-check \
        --jsDoc none --path "$work/node_modules/@kubernetes-models/$pkg/$path" --type "$type" -o "$out.json"
    echo "wrote $out.json"
done <<'LIST'
gke                 networking.gke.io/v1/ManagedCertificate.d.ts      IManagedCertificate  networking.gke.io_v1_ManagedCertificate
gke                 cloud.google.com/v1/BackendConfig.d.ts            IBackendConfig       cloud.google.com_v1_BackendConfig
gke                 networking.gke.io/v1beta1/FrontendConfig.d.ts     IFrontendConfig      networking.gke.io_v1beta1_FrontendConfig
cert-manager        cert-manager.io/v1/Certificate.d.ts               ICertificate         cert-manager.io_v1_Certificate
cert-manager        cert-manager.io/v1/ClusterIssuer.d.ts             IClusterIssuer       cert-manager.io_v1_ClusterIssuer
cert-manager        cert-manager.io/v1/Issuer.d.ts                    IIssuer              cert-manager.io_v1_Issuer
keda                keda.sh/v1alpha1/ScaledObject.d.ts                IScaledObject        keda.sh_v1alpha1_ScaledObject
prometheus-operator monitoring.coreos.com/v1/ServiceMonitor.d.ts      IServiceMonitor      monitoring.coreos.com_v1_ServiceMonitor
LIST
(cd "$work" && npm ls --depth=0 2>/dev/null | tail -n +2) > SOURCES.txt
echo "sources recorded in SOURCES.txt"
