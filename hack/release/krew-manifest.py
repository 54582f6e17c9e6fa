#!/usr/bin/env python3
"""Writes the krew plugin manifest (mutr.yaml) for a release from its kubectl-mutr archives.

    hack/release/krew-manifest.py VERSION DIR [--base-url URL] > mutr.yaml

DIR holds kubectl-mutr-<VERSION>-<os>-<arch>.tar.gz and their .sha256 files (hack/release/plugin-archive.sh).
Each archive becomes a platform of the manifest; the download URL is <base-url>/<archive>, by default the
GitHub release of the tag v<VERSION>. Install with:

    kubectl krew install --manifest=mutr.yaml          (or --manifest-url=<the release's mutr.yaml>)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = "https://github.com/mutr/mutr-k8s"
ARCHIVE = re.compile(r"^kubectl-mutr-(?P<version>[^-]+(?:-[^-]+)*)-(?P<os>linux|darwin|windows)-(?P<arch>amd64|arm64)\.tar\.gz$")


def manifest(version: str, archives: Path, base_url: str) -> str:
    platforms = []
    for path in sorted(archives.glob(f"kubectl-mutr-{version}-*.tar.gz")):
        m = ARCHIVE.match(path.name)
        if not m or m.group("version") != version:
            continue
        digest_file = path.with_name(path.name + ".sha256")
        digest = digest_file.read_text().split()[0]
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise SystemExit(f"{digest_file}: not a sha256")
        binary = "kubectl-mutr.exe" if m.group("os") == "windows" else "kubectl-mutr"
        platforms.append(
            f"""  - selector:
      matchLabels:
        os: {m.group("os")}
        arch: {m.group("arch")}
    uri: {base_url}/{path.name}
    sha256: "{digest}"
    bin: {binary}
    files:
      - from: "*"
        to: "."
"""
        )
    if not platforms:
        raise SystemExit(f"no kubectl-mutr-{version}-<os>-<arch>.tar.gz in {archives}")
    return f"""apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: mutr
spec:
  version: v{version}
  homepage: {REPO}
  shortDescription: Drive MutrDeployment blue/green rollouts
  description: |
    Status, promote, abort and wait for MutrDeployments (mutr.io/v1alpha1), the
    blue/green rollouts of the MUTR operator: `kubectl mutr status`, `promote`,
    `abort`, and `wait --for=preview-ready|promoted` for CI pipelines.
  platforms:
{"".join(platforms)}"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version", help="version without the leading v, e.g. 1.5.0")
    parser.add_argument("dir", type=Path, help="folder with the archives and their .sha256 files")
    parser.add_argument("--base-url", help="where the archives are downloaded from")
    args = parser.parse_args()
    base = args.base_url or f"{REPO}/releases/download/v{args.version}"
    sys.stdout.write(manifest(args.version, args.dir, base.rstrip("/")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
