#!/bin/sh
# Entry point of the worker image: a Prefect worker on $R1_WORK_POOL against $PREFECT_API_URL, or, given a
# command, that command (docker run r1-worker python -m flows.cli --check --recipe ...).
#
#   R1_WORK_POOL=r1-cpu PREFECT_API_URL=http://127.0.0.1:4200/api r1-worker-entrypoint [--limit 1]
set -eu
case "${1:-}" in
"" | -*) ;;
*) exec "$@" ;;
esac
if [ -z "${PREFECT_API_URL:-}" ]; then
    echo "worker error: set PREFECT_API_URL to the Prefect server's API (e.g. http://127.0.0.1:4200/api)" >&2
    exit 2
fi
if [ -z "${R1_WORK_POOL:-}" ]; then
    echo "worker error: set R1_WORK_POOL to the Prefect work pool this worker serves" >&2
    exit 2
fi
exec prefect worker start --pool "$R1_WORK_POOL" --type "${R1_WORKER_TYPE:-process}" --with-healthcheck "$@"
