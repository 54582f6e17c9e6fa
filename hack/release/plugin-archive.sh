#!/usr/bin/env bash
# Packs a built kubectl-mutr into the release archive kubectl-mutr-<version>-<os>-<arch>.tar.gz (with
# the licence and a README) and writes its .sha256 beside it; the krew manifest
# (hack/release/krew-manifest.py) points at these archives.
#
#   hack/release/plugin-archive.sh VERSION OS ARCH BINARY OUTDIR
set -euo pipefail
version="${1:?version}"; os="${2:?os}"; arch="${3:?arch}"; binary="${4:?binary}"; out="${5:?outdir}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
install -m 0755 "$binary" "$stage/kubectl-mutr"
cat > "$stage/README.md" <<README
kubectl-mutr $version: status, promote, abort and wait for MutrDeployments (mutr.io/v1alpha1).
Put kubectl-mutr on your PATH, then: kubectl mutr --help
README
if [ -f "$root/LICENSE" ]; then cp "$root/LICENSE" "$stage/LICENSE"; fi
mkdir -p "$out"
archive="$out/kubectl-mutr-$version-$os-$arch.tar.gz"
tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner --mtime='1970-01-01' -czf "$archive" .
(cd "$out" && sha256sum "$(basename "$archive")" > "$(basename "$archive").sha256")
echo "$archive"
