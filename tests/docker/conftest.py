"""Fixtures of the Docker tests: a reachable engine (docker/engine.sh starts dockerd when it is installed but not
running, and builds local/debian:bookworm once), the worker image built for real on that base with the CPU torch
wheel, and a real `prefect server start` on a free loopback port.

    python -m pytest -q -m docker tests/docker
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "local/debian:bookworm"
WORKER_TAG = "r1-worker:test"
TORCH_CPU = "2.13.0+cpu"  # the Makefile's TORCH_VERSION, as the CPU wheel
TORCH_WHEELS = os.environ.get("R1_TORCH_WHEELS", "/opt/wheels")  # a folder holding that wheel, served to the build


def run(*cmd: str, timeout: float = 600, check: bool = True, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise AssertionError(f"{' '.join(cmd[:4])} ... exited {done.returncode}:\n{tail}")
    return done


def docker(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    return run("docker", *args, timeout=timeout, check=check)


@pytest.fixture(scope="session")
def docker_engine():
    """A Docker engine that answers: the running one, or dockerd started by docker/engine.sh (stopped again at the
    end of the session). Skips only when none can be reached: no docker CLI, or no engine and no dockerd."""
    if shutil.which("docker") is None:
        pytest.skip("no Docker engine: the docker CLI is not installed (bash docker/ci-engine.sh installs it)")
    answers = run("docker", "info", check=False, timeout=60).returncode == 0
    if not answers and shutil.which("dockerd") is None:
        pytest.skip("no Docker engine: none answers and dockerd is not installed (bash docker/ci-engine.sh)")
    run("bash", str(ROOT / "docker/engine.sh"), "start", timeout=120)
    run("bash", str(ROOT / "docker/engine.sh"), "base", timeout=900)
    yield
    if not answers:
        run("bash", str(ROOT / "docker/engine.sh"), "stop", timeout=60)


def torch_build_args() -> tuple[list[str], dict[str, str]]:
    """The CPU torch wheel for the build: from TORCH_WHEELS when it holds it, else PyTorch's CPU index."""
    if list(Path(TORCH_WHEELS).glob(f"torch-{TORCH_CPU}-*.whl")):
        return ["--build-arg", "TORCH_INDEX_URL=https://pypi.org/simple"], {"R1_TORCH_WHEELS": TORCH_WHEELS}
    return ["--build-arg", "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu"], {}


@pytest.fixture(scope="session")
def worker_image(docker_engine) -> str:
    """docker/worker.Dockerfile built for real on the local Debian base with the CPU torch wheel."""
    args, env = torch_build_args()
    build = [*args, "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "--build-arg", f"TORCH_VERSION={TORCH_CPU}"]
    run("bash", str(ROOT / "docker/build.sh"), "worker", WORKER_TAG, *build, timeout=1800, env={**os.environ, **env})
    return WORKER_TAG


def pip_list(image: str) -> dict[str, str]:
    """{normalized name: version} of what pip sees installed in the image."""
    from packaging.utils import canonicalize_name

    listed = json.loads(docker("run", "--rm", "--network", "host", image, "pip", "list", "--format", "json").stdout)
    return {canonicalize_name(item["name"]): item["version"] for item in listed}


@pytest.fixture(scope="session")
def mlflow_image(docker_engine) -> str:
    """docker/mlflow.Dockerfile built for real on the local Debian base."""
    tag = "r1-mlflow:test"
    run("bash", str(ROOT / "docker/build.sh"), "mlflow", tag, "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", timeout=1800)
    return tag
