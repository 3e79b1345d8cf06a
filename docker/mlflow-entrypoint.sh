#!/bin/sh
# Entry point of the MLflow image: `mlflow server` with the backend and artifact destination given at run time,
# or, given a command, that command (docker run r1-mlflow pip list).
#
#   MLFLOW_BACKEND_STORE_URI=postgresql://... MLFLOW_ARTIFACTS_DESTINATION=s3://r1/mlflow r1-mlflow-entrypoint
set -eu
case "${1:-}" in
"" | -*) ;;
*) exec "$@" ;;
esac
if [ -z "${MLFLOW_BACKEND_STORE_URI:-}" ]; then
    echo "mlflow error: set MLFLOW_BACKEND_STORE_URI (e.g. postgresql://mlflow:PASSWORD@127.0.0.1:5432/mlflow)" >&2
    exit 2
fi
if [ -z "${MLFLOW_ARTIFACTS_DESTINATION:-}" ]; then
    echo "mlflow error: set MLFLOW_ARTIFACTS_DESTINATION (e.g. s3://r1/mlflow; MLFLOW_S3_ENDPOINT_URL for MinIO)" >&2
    exit 2
fi
exec mlflow server --host "$MLFLOW_HOST" --port "$MLFLOW_PORT" --workers "$MLFLOW_WORKERS" \
    --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
    --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" --serve-artifacts "$@"
