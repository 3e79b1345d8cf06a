# MLflow tracking server of the R1 stack: runs and the registry in Postgres, artifacts proxied to S3 (or MinIO).
#
#   docker build -f docker/mlflow.Dockerfile -t r1-mlflow .
#   docker run --network host \
#     -e MLFLOW_BACKEND_STORE_URI=postgresql://mlflow:...@127.0.0.1:5432/mlflow \
#     -e MLFLOW_ARTIFACTS_DESTINATION=s3://r1/mlflow -e MLFLOW_S3_ENDPOINT_URL=http://127.0.0.1:9000 \
#     -e AWS_ACCESS_KEY_ID=... -e AWS_SECRET_ACCESS_KEY=... r1-mlflow
#
# Our tests build it on local/debian:bookworm (docker/build.sh mlflow ... --build-arg BASE_IMAGE=...).
# The URIs and credentials are given at run time only; mlflow and boto3 are the versions pyproject.toml pins.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG DEBIAN_FRONTEND=noninteractive
# A minbase Debian has no python3: install it when the base lacks it (python:*-slim has its own).
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The build machine's CA bundle, when docker/build.sh put one in the context: used by pip in this stage only.
COPY docker/build-ca/ /tmp/build-ca/
ARG MLFLOW_VERSION=3.17.2
ARG BOTO3_VERSION=1.44.8
ARG PSYCOPG2_VERSION=2.9.13
RUN if [ -f /tmp/build-ca/ca-certificates.crt ]; then export PIP_CERT=/tmp/build-ca/ca-certificates.crt; fi \
    && pip install --no-cache-dir "mlflow==${MLFLOW_VERSION}" "boto3==${BOTO3_VERSION}" \
        "psycopg2-binary==${PSYCOPG2_VERSION}" \
    && pip check

FROM ${BASE_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && useradd --create-home --uid 10001 --shell /bin/sh mlflow
COPY --from=build /opt/venv /opt/venv
COPY docker/mlflow-entrypoint.sh /usr/local/bin/r1-mlflow-entrypoint
ENV PATH=/opt/venv/bin:$PATH \
    MLFLOW_HOST=127.0.0.1 \
    MLFLOW_PORT=5000 \
    MLFLOW_WORKERS=2 \
    PYTHONUNBUFFERED=1
USER 10001
WORKDIR /home/mlflow
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=5 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ['MLFLOW_PORT'], timeout=4)"]
ENTRYPOINT ["r1-mlflow-entrypoint"]
