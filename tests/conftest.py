"""Shared fixtures: a real (temporary) Prefect API server for the flow tests, a real S3-speaking server (moto's
server mode on loopback), the small stage settings the stage tests train with, a weight comparison and a tiny
Qwen2."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# Credentials of the test S3 server: only ever set by the `s3` fixture, for one test.
S3_TEST_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(autouse=True)
def prefect_console_on_current_stderr():
    """Prefect's console log handlers write to the stderr of this test: one bound to an earlier test's captured
    stream (closed since) would fail on every record and loop through logging.handleError."""
    import logging
    import sys

    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values() if hasattr(v, "handlers"))]
    for handler in (h for lg in loggers for h in lg.handlers if type(h).__name__ == "PrefectConsoleHandler"):
        if getattr(handler, "console", None) is not None:
            handler.console.file = sys.stderr
    yield


@pytest.fixture(scope="session", autouse=True)
def isolated_state(tmp_path_factory):
    """No test writes into the checkout's .state/: the default state folder of the session is a temporary one
    (a test that needs its own sets R1_STATE_DIR itself)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("R1_STATE_DIR", str(tmp_path_factory.mktemp("state")))
        yield


@pytest.fixture(scope="session")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PREFECT_STARTUP_TIMEOUT_S = 180  # healthy in 10-20 s on an idle machine; much slower when the cores are shared


def wait_until_healthy(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + PREFECT_STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"prefect server exited with {server.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"prefect server not healthy after {PREFECT_STARTUP_TIMEOUT_S} s:\n{log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory) -> str:
    """`prefect server start` on 127.0.0.1 and a free port (the work pool and docker tests): the API URL of a fresh
    Prefect server (SQLite in a temporary PREFECT_HOME), stopped after the session."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    log = home / "server.log"
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("w") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_until_healthy(url, server, log)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


@dataclass
class S3Server:
    """moto's S3 server on 127.0.0.1: its endpoint, the test credentials, and fresh buckets on demand."""

    endpoint_url: str
    env: dict[str, str] = field(default_factory=lambda: dict(S3_TEST_ENV))
    _names: itertools.count = field(default_factory=itertools.count)

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def new_bucket(self) -> str:
        name = f"r1-test-{next(self._names)}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-speaking HTTP server (moto's ThreadedMotoServer) on a free loopback port, for the session."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield S3Server(endpoint_url=f"http://127.0.0.1:{port}")
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch, tmp_path):
    """A fresh bucket on the test server with the test credentials (and a fresh state folder) for this test only;
    any AWS profile or endpoint of the machine is hidden. Yields (server, bucket)."""
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "R1_STORAGE_URI",
        "R1_S3_ENDPOINT_URL",
        "MLFLOW_S3_ENDPOINT_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("R1_STATE_DIR", str(tmp_path / "state"))
    return s3_server, s3_server.new_bucket()


# A few steps of every stage on the tiny model: enough for GRPO to see reward variance after the cold start.
SMALL_STAGES = [
    "data.eval_size=12",
    "data.cold_start_size=200",
    "data.rl_pool_size=32",
    "evaluation.num_samples=2",
    "reasoning_rl.trl.max_steps=3",
    "reasoning_rl.trl.num_generations=8",
    "reasoning_rl.trl.per_device_train_batch_size=16",
    "rejection_sampling.num_prompts=12",
    "final_rl.trl.max_steps=3",
    "final_rl.trl.num_generations=8",
    "final_rl.trl.per_device_train_batch_size=16",
    "final_rl.general_reward.last_steps=1",
]


@pytest.fixture(scope="session")
def small_stages() -> list[str]:
    """Recipe overrides for a few steps of every stage."""
    return list(SMALL_STAGES)


def _state_dict(uri: str) -> dict:
    from models.factory import load_model

    model, _ = load_model(uri)
    return {k: v.detach().float().cpu() for k, v in model.state_dict().items()}


@pytest.fixture(scope="session")
def weights_of():
    """uri -> the model's weights as float CPU tensors."""
    return _state_dict


@pytest.fixture(scope="session")
def weights_changed():
    """(before uri, after uri) -> whether any weight differs."""
    import torch

    def changed(before: str, after: str) -> bool:
        a, b = _state_dict(before), _state_dict(after)
        return any(not torch.equal(a[k], b[k]) for k in a)

    return changed


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> str:
    """A tiny random Qwen2 folder (the tiny base model's tokenizer): its backbone takes a mask mapping."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from models.factory import load_tokenizer

    tokenizer = load_tokenizer("builtin:tiny_base")
    shape = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("qwen2")
    Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), **shape)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
