# GPU worker of the R1 pipeline: the project, torch and a Prefect worker that serves one work pool.
#
#   docker build -f docker/worker.Dockerfile -t r1-worker .                         # CUDA base, CUDA torch
#   docker run --gpus all --network host -e PREFECT_API_URL=http://127.0.0.1:4200/api -e R1_WORK_POOL=gpu r1-worker
#
# Our tests build it on a local Debian base with the CPU wheel (docker/build.sh, tests/docker/):
#   R1_TORCH_WHEELS=/opt/wheels docker/build.sh worker r1-worker:cpu --build-arg BASE_IMAGE=local/debian:bookworm \
#     --build-arg TORCH_VERSION=2.13.0+cpu --build-arg TORCH_INDEX_URL=https://pypi.org/simple
# transformers, trl, prefect, mlflow, ... come pinned from pyproject.toml, with its `kubernetes` extra (the GPU pool's
# worker); tests/docker checks the image against it.
# PREFECT_API_URL, MLFLOW_TRACKING_URI, R1_STORAGE_URI, R1_S3_ENDPOINT_URL and AWS_* are given at run time only.
ARG BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

FROM ${BASE_IMAGE} AS build
ARG DEBIAN_FRONTEND=noninteractive
# Versions come from the base image's release (Ubuntu 24.04 or Debian 12); pinning them would tie the file to one base.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc g++ \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The build machine's CA bundle and torch wheels, when docker/build.sh put them in the context: this stage only.
COPY docker/build-ca/ /tmp/build-ca/
COPY docker/wheels/ /tmp/wheels/
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# torch first and pinned (like the Makefile's TORCH_VERSION): CUDA wheels upstream, the CPU wheel in our tests.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
RUN if [ -f /tmp/build-ca/ca-certificates.crt ]; then export PIP_CERT=/tmp/build-ca/ca-certificates.crt; fi \
    && pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" --find-links /tmp/wheels "torch==${TORCH_VERSION}"

# The project's dependencies from pyproject.toml alone, so a change of code does not download them again.
COPY pyproject.toml /src/pyproject.toml
RUN if [ -f /tmp/build-ca/ca-certificates.crt ]; then export PIP_CERT=/tmp/build-ca/ca-certificates.crt; fi \
    && python -c "import tomllib; p = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['kubernetes']))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt "torch==${TORCH_VERSION}"

COPY README.md /src/README.md
COPY models /src/models
COPY tasks /src/tasks
COPY flows /src/flows
COPY infra /src/infra
# setuptools came with torch: the project builds without an index (no isolated build environment to download)
RUN pip install --no-cache-dir --no-deps --no-build-isolation /src && pip check

FROM ${BASE_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 --shell /bin/bash r1 \
    && mkdir -p /var/lib/r1 && chown r1:r1 /var/lib/r1
COPY --from=build /opt/venv /opt/venv
# the source tree too: deployments load their entrypoints from it (infra/prefect.yaml's pull step: /opt/r1)
COPY --from=build /src /opt/r1
COPY docker/worker-entrypoint.sh /usr/local/bin/r1-worker-entrypoint
ENV PATH=/opt/venv/bin:$PATH \
    R1_STATE_DIR=/var/lib/r1 \
    PREFECT_HOME=/var/lib/r1/prefect \
    HF_HOME=/var/lib/r1/hf \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PREFECT_WORKER_WEBSERVER_HOST=127.0.0.1 \
    PREFECT_WORKER_WEBSERVER_PORT=8080 \
    PYTHONUNBUFFERED=1
USER 10001
WORKDIR /var/lib/r1
VOLUME ["/var/lib/r1"]
# The worker's own health server (prefect worker start --with-healthcheck): fails when it stopped polling its pool.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ['PREFECT_WORKER_WEBSERVER_PORT'], timeout=5)"]
ENTRYPOINT ["r1-worker-entrypoint"]
