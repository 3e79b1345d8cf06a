"""docker/compose.yaml: `docker-compose config` accepts it, it validates against the Compose Specification's JSON
schema (the one the installed docker-compose ships), and the stack holds together: host network only, distinct
loopback ports, health checks behind every `service_healthy`, the worker's GPU reservation.

    python -m pytest -q tests/docker/test_compose.py
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "compose.yaml"

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def compose_cli() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (bash docker/ci-engine.sh installs it)")
    return binary


@pytest.fixture(scope="module")
def compose_spec_schema(compose_cli) -> dict:
    """The Compose Specification schema (compose-spec/compose-spec, schema/compose-spec.json) as docker-compose
    ships it in its package: compose/config/compose_spec.json beside the Python that runs docker-compose."""
    interpreter = Path(compose_cli).read_text(errors="replace").splitlines()[0].removeprefix("#!").split()
    where = "import compose.config as c, pathlib; print(pathlib.Path(c.__file__).with_name('compose_spec.json'))"
    path = subprocess.run([*interpreter, "-c", where], capture_output=True, text=True, check=True).stdout.strip()
    return json.loads(Path(path).read_text())


@pytest.fixture(scope="module")
def stack() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_docker_compose_config_accepts_it(compose_cli):
    checked = subprocess.run([compose_cli, "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def schema_errors(schema: dict, document: dict) -> list[str]:
    import jsonschema

    return [error.message for error in jsonschema.Draft7Validator(schema).iter_errors(document)]


def test_it_validates_against_the_compose_spec_schema(compose_spec_schema, stack):
    assert schema_errors(compose_spec_schema, stack) == []


def test_the_schema_refuses_a_misspelt_key(compose_spec_schema, stack):
    worker = {**stack["services"]["worker"], "network_mod": "host"}
    broken = {**stack, "services": {**stack["services"], "worker": worker}}
    assert any("network_mod" in message for message in schema_errors(compose_spec_schema, broken))


def test_every_service_uses_the_host_network_and_no_network_is_declared(stack):
    assert {name: s.get("network_mode") for name, s in stack["services"].items()} == dict.fromkeys(
        stack["services"], "host"
    )
    assert "networks" not in stack


def test_every_listening_address_is_loopback_and_ports_are_distinct(stack):
    text = COMPOSE.read_text()
    addresses = re.findall(r"(\d+\.\d+\.\d+\.\d+):(\d+)", text)
    assert {host for host, _ in addresses} == {"127.0.0.1"}
    servers = {"postgres": "5432", "prefect-server": "4200", "minio": "9000", "mlflow": "5000"}
    ports = [*servers.values(), "9001", stack["services"]["worker"]["environment"]["PREFECT_WORKER_WEBSERVER_PORT"]]
    assert len(set(ports)) == len(ports)
    assert {port for _, port in addresses} <= set(ports)


def has_healthcheck(service: dict) -> bool:
    """A healthcheck in compose, or a HEALTHCHECK in the Dockerfile the service builds."""
    if "healthcheck" in service:
        return True
    dockerfile = service.get("build", {}).get("dockerfile")
    return bool(dockerfile) and "\nHEALTHCHECK " in (ROOT / dockerfile).read_text()


def test_every_awaited_service_reports_its_health_or_completion(stack):
    services = stack["services"]
    for name, service in services.items():
        for needed, how in service.get("depends_on", {}).items():
            assert needed in services, f"{name} depends on unknown {needed}"
            if how["condition"] == "service_healthy":
                assert has_healthcheck(services[needed]), f"{name} waits for {needed}, which has no health check"
            else:
                assert how["condition"] == "service_completed_successfully", (name, needed)
                assert "healthcheck" not in services[needed], f"{needed} is a one-shot"


def test_the_worker_reserves_nvidia_gpus_and_gets_its_endpoints_at_run_time(stack):
    worker = stack["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "R1_STORAGE_URI", "R1_S3_ENDPOINT_URL", "R1_WORK_POOL"):
        assert name in worker["environment"], name


def test_prefect_and_mlflow_keep_their_state_in_postgres(stack):
    services = stack["services"]
    prefect_db = services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert prefect_db.startswith("postgresql+asyncpg://") and prefect_db.endswith("/prefect")
    assert services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert services["mlflow"]["environment"]["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    init = (ROOT / "docker" / "postgres-init.sql").read_text()
    assert "CREATE DATABASE prefect" in init and "CREATE DATABASE mlflow" in init
