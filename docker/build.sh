#!/usr/bin/env bash
# Build one of the project's images from the files git knows (tracked, or untracked and not ignored), so .venv,
# .state, .git and caches never reach the engine; the build machine's CA bundle rides along for pip (build
# stage only, never in the final image). Legacy builder: it works with any CLI (no buildx needed).
#
#   docker/build.sh worker r1-worker:dev [--build-arg BASE_IMAGE=local/debian:bookworm ...]
#   docker/build.sh mlflow r1-mlflow:dev
#   R1_TORCH_WHEELS=/opt/wheels docker/build.sh worker ...   # serve a folder of torch wheels to the build on 127.0.0.1
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
server_pid=""
cleanup() {
    [ -z "$server_pid" ] || kill "$server_pid" 2>/dev/null || true
    rm -rf "$context"
}
trap cleanup EXIT

# files deleted but not yet committed are still in git's index: tar skips them
(cd "$root" && git ls-files -z --cached --others --exclude-standard | tar --null -T - --ignore-failed-read -c 2>/dev/null) \
    | tar -x -C "$context"
ca="${R1_BUILD_CA-/etc/ssl/certs/ca-certificates.crt}"
if [ -n "$ca" ] && [ -f "$ca" ]; then cp "$ca" "$context/docker/build-ca/ca-certificates.crt"; fi

args=()
if [ -n "${R1_TORCH_WHEELS:-}" ]; then
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    python3 -m http.server --bind 127.0.0.1 --directory "$R1_TORCH_WHEELS" "$port" >/dev/null 2>&1 &
    server_pid=$!
    args+=(--build-arg "TORCH_FIND_LINKS=http://127.0.0.1:${port}/")
fi
DOCKER_BUILDKIT=0 docker build --network host -f "$context/$dockerfile" -t "$tag" "${args[@]}" "$@" "$context"
