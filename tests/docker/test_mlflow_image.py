"""The MLflow image, built for real on the local Debian base: a container of it serves /health, refuses to start
without its backend in one line, and proxies artifacts into S3 (moto's server on loopback stands in for MinIO;
SQLite in a mounted folder stands in for Postgres, whose driver the image carries).

    python -m pytest -q -m docker tests/docker/test_mlflow_image.py
"""

from __future__ import annotations

import subprocess
import time
import urllib.request

import pytest

from tests.conftest import S3_TEST_ENV, free_port
from tests.docker.conftest import docker, pip_list

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_image_carries_the_pinned_server_and_drivers(mlflow_image):
    installed = pip_list(mlflow_image)
    assert installed["mlflow"] == "3.17.2" and installed["boto3"] == "1.44.8"
    assert "psycopg2-binary" in installed
    assert docker("run", "--rm", mlflow_image, "id", "-u").stdout.strip() == "10001"


def test_server_without_a_backend_says_what_to_set(mlflow_image):
    refused = docker("run", "--rm", mlflow_image, check=False)
    assert refused.returncode == 2 and "set MLFLOW_BACKEND_STORE_URI" in refused.stderr


def wait_for(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"{url} did not answer within {seconds:.0f} s")


@pytest.fixture
def mlflow_server(mlflow_image, s3_server, tmp_path):
    """A container of the image on a free loopback port: SQLite in tmp_path, artifacts to a fresh bucket."""
    bucket, port = s3_server.new_bucket(), free_port()
    tmp_path.chmod(0o777)  # the server runs as user 10001
    env = {
        **S3_TEST_ENV,
        "MLFLOW_BACKEND_STORE_URI": "sqlite:////data/mlflow.db",
        "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{bucket}/mlflow",
        "MLFLOW_S3_ENDPOINT_URL": s3_server.endpoint_url,
        "MLFLOW_PORT": str(port),
    }
    flags = [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")]
    volume = f"{tmp_path}:/data"
    container = docker("run", "-d", "--network", "host", "-v", volume, *flags, mlflow_image).stdout.strip()
    try:
        wait_for(f"http://127.0.0.1:{port}/health", 180)
        yield f"http://127.0.0.1:{port}", bucket, container
    finally:
        docker("rm", "-f", container, check=False)


def test_artifacts_go_through_the_server_into_the_bucket(mlflow_server, s3_server, monkeypatch):
    import mlflow

    url, bucket, container = mlflow_server
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client = mlflow.MlflowClient(tracking_uri=url)
    experiment_id = client.create_experiment("docker-image-test")
    run = client.create_run(experiment_id)
    client.log_text(run.info.run_id, "stage output", "notes/stage.txt")
    keys = [item["Key"] for item in s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert any(key.endswith("notes/stage.txt") for key in keys), keys
    status = subprocess.run(
        ["docker", "inspect", "--format", "{{.State.Health.Status}}", container], capture_output=True, text=True
    ).stdout.strip()
    assert status in {"starting", "healthy"}, status
