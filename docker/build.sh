#!/usr/bin/env bash
# Build one of the project's images from the files git knows (tracked, or untracked and not ignored), so .venv,
# .state, .git and caches never reach the engine; the build machine's CA bundle rides along for pip (build
# stage only, never in the final image). Legacy builder: it works with any CLI (no buildx needed).
#
#   docker/build.sh worker r1-worker:dev [--build-arg BASE_IMAGE=local/debian:bookworm ...]
#   docker/build.sh mlflow r1-mlflow:dev
#   R1_TORCH_WHEELS=/opt/wheels docker/build.sh worker ...   # torch wheels of that folder go in as --find-links
#
# R1_BUILD_CA: the CA bundle to add (default: the system one when present; set it empty to add none).
set -euo pipefail

[ $# -ge 2 ] || { echo "usage: docker/build.sh worker|mlflow TAG [docker build args...]" >&2; exit 2; }
image="$1" tag="$2"
shift 2
root="$(cd "$(dirname "$0")/.." && pwd)"
dockerfile="docker/${image}.Dockerfile"
[ -f "$root/$dockerfile" ] || { echo "build error: no $dockerfile; choose worker or mlflow" >&2; exit 2; }

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT

# files deleted but not yet committed are still in git's index: tar skips them
(cd "$root" && git ls-files -z --cached --others --exclude-standard | tar --null -T - --ignore-failed-read -c 2>/dev/null) \
    | tar -x -C "$context"
ca="${R1_BUILD_CA-/etc/ssl/certs/ca-certificates.crt}"
if [ -n "$ca" ] && [ -f "$ca" ]; then cp "$ca" "$context/docker/build-ca/ca-certificates.crt"; fi

if [ -n "${R1_TORCH_WHEELS:-}" ]; then
    cp "$R1_TORCH_WHEELS"/torch-*.whl "$context/docker/wheels/" \
        || { echo "build error: no torch-*.whl in R1_TORCH_WHEELS=$R1_TORCH_WHEELS" >&2; exit 2; }
fi
DOCKER_BUILDKIT=0 docker build --network host -f "$context/$dockerfile" -t "$tag" "$@" "$context"
