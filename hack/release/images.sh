#!/usr/bin/env bash
# Builds the MUTR images (api, ai-server, operator; --cuda adds the CUDA ai-server) with Docker
# (BuildKit through buildx) or Podman, whichever is installed, and with --push pushes them.
#
#   hack/release/images.sh                     # local images mutr-api:dev, mutr-ai-server:dev, mutr-operator:dev
#   REGISTRY=REGION-docker.pkg.dev/PROJECT/mutr TAG=1.5.0 hack/release/images.sh --push --cuda
#
# Environment:
#   REGISTRY  prefix of the image names (empty: local names)
#   TAG       image tag (default: dev)
#   CACHE     registry cache: each image reads and writes <REGISTRY>/<image>:buildcache (default:
#             on when REGISTRY is set and --push is given; CACHE=0 turns it off)
#   ENGINE    docker or podman (default: the first one found)
#   IMAGES    which images (default: "api ai-server operator"; empty with --cuda: the CUDA one alone)
# Labels: org.opencontainers.image.{version,revision,created} come from TAG and git.
set -euo pipefail
cd "$(dirname "$0")/../.."

push=0
cuda=0
for arg in "$@"; do
    case "$arg" in
        --push) push=1 ;;
        --cuda) cuda=1 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "images.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

engine="${ENGINE:-}"
if [ -z "$engine" ]; then
    for candidate in docker podman; do
        if command -v "$candidate" >/dev/null 2>&1; then engine="$candidate"; break; fi
    done
fi
[ -n "$engine" ] || { echo "images.sh: neither docker nor podman is installed" >&2; exit 1; }

registry="${REGISTRY:-}"
tag="${TAG:-dev}"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
created="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
cache="${CACHE:-$([ -n "$registry" ] && [ "$push" = 1 ] && echo 1 || echo 0)}"
read -r -a images <<< "${IMAGES-api ai-server operator}"
[ "$cuda" = 1 ] && images+=(ai-server.cuda)

for image in "${images[@]}"; do
    name="mutr-${image%.cuda}"
    suffix=""
    [ "$image" = ai-server.cuda ] && suffix="-cuda"
    ref="${registry:+$registry/}$name:$tag$suffix"
    args=(--file "docker/$image.Dockerfile" --tag "$ref"
          --build-arg "VERSION=$tag" --build-arg "REVISION=$revision" --build-arg "CREATED=$created")
    if [ "$cache" = 1 ]; then
        cache_ref="$registry/$name:buildcache$suffix"
        if [ "$engine" = docker ]; then
            args+=(--cache-from "type=registry,ref=$cache_ref" --cache-to "type=registry,ref=$cache_ref,mode=max")
        else
            args+=(--layers --cache-from "$registry/$name-cache$suffix" --cache-to "$registry/$name-cache$suffix")
        fi
    fi
    echo "== $ref ($engine)"
    if [ "$engine" = docker ]; then
        if [ "$push" = 1 ]; then args+=(--push); else args+=(--load); fi
        docker buildx build "${args[@]}" .
    else
        podman build "${args[@]}" .
        if [ "$push" = 1 ]; then podman push "$ref"; fi
    fi
done
