#!/usr/bin/env bash
# What CI (and a fresh machine) needs for the Docker tests: Debian's Docker engine, debootstrap and docker-compose,
# installed when missing. The tests themselves start dockerd (docker/engine.sh start, host network only), build
# local/debian:bookworm once, and stop the dockerd they started.
#
#   bash docker/ci-engine.sh && make test
set -euo pipefail

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v docker-compose >/dev/null || missing+=(docker-compose)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
