#!/usr/bin/env bash
# A reachable Docker engine and the local Debian base image, as our machines need them (no bridge, no registry).
#
#   docker/engine.sh start    # start dockerd (host network only) unless an engine answers; PID in $R1_DOCKERD_DIR
#   docker/engine.sh base     # build local/debian:bookworm with debootstrap once (skipped when the image exists)
#   docker/engine.sh stop     # stop the dockerd that `start` started (by its PID), nothing else
set -euo pipefail

DIR="${R1_DOCKERD_DIR:-/tmp/r1-dockerd}"
BASE="${R1_BASE_IMAGE:-local/debian:bookworm}"

engine_answers() { docker info >/dev/null 2>&1; }

start() {
    if engine_answers; then return 0; fi
    if ! command -v dockerd >/dev/null; then
        echo "engine error: no Docker engine answers and dockerd is not installed (apt-get install docker.io)" >&2
        exit 2
    fi
    mkdir -p "$DIR"
    nohup dockerd --bridge=none --iptables=false >"$DIR/dockerd.log" 2>&1 &
    echo $! >"$DIR/dockerd.pid"
    for _ in $(seq 60); do
        if engine_answers; then return 0; fi
        sleep 1
    done
    echo "engine error: dockerd did not answer within 60 s; see $DIR/dockerd.log" >&2
    exit 2
}

base() {
    if docker image inspect "$BASE" >/dev/null 2>&1; then return 0; fi
    if ! command -v debootstrap >/dev/null; then
        echo "engine error: $BASE is missing and debootstrap is not installed (apt-get install debootstrap)" >&2
        exit 2
    fi
    local rootfs
    rootfs="$(mktemp -d)"
    debootstrap --variant=minbase bookworm "$rootfs" >"${rootfs}.log" 2>&1 \
        || { echo "engine error: debootstrap failed; see ${rootfs}.log" >&2; exit 2; }
    tar -C "$rootfs" -c . | docker import - "$BASE" >/dev/null
    rm -rf "$rootfs" "${rootfs}.log"
}

stop() {
    [ -f "$DIR/dockerd.pid" ] || return 0
    local pid
    pid="$(cat "$DIR/dockerd.pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 30); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    rm -f "$DIR/dockerd.pid"
}

case "${1:-}" in
start | base | stop) "$1" ;;
*) echo "usage: docker/engine.sh start|base|stop" >&2; exit 2 ;;
esac
