"""What the end-to-end tests share: the stack command as users run it, the small recipe of the test deployments,
a running stack's clients and waits, and where screenshots are kept."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.local_stack import REPO, Stack

TRAIN = "r1-pipeline/train"
SCHEDULED = "r1-pipeline/retrain-scheduled"
# A few steps of every stage on the tiny model (about a minute of training on 2 idle cores), as `overrides`.
SMALL = [
    "data.eval_size=16",
    "data.validation_size=8",
    "data.cold_start_size=200",
    "data.rl_pool_size=32",
    "evaluation.num_samples=2",
    "reasoning_rl.trl.max_steps=4",
    "reasoning_rl.trl.num_generations=8",
    "reasoning_rl.trl.per_device_train_batch_size=16",
    "reasoning_rl.trl.logging_steps=1",
    "reasoning_rl.alarms.check_every=2",
    "rejection_sampling.num_prompts=16",
    "final_rl.trl.max_steps=4",
    "final_rl.trl.num_generations=8",
    "final_rl.trl.per_device_train_batch_size=16",
    "final_rl.trl.logging_steps=1",
    "final_rl.general_reward.last_steps=2",
    "final_rl.alarms.check_every=2",
]
# Faster polling than a user's stack needs: the worker asks for work every 2 s, the scheduler plans every 2 s.
FAST_POLLING = {"PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2"}
FLOW_RUN_TIMEOUT_S = 1500


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stack_command(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    """`python -m infra.local_stack ...` as a user runs it, with no other servers named in the environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    ports = ("--state", str(stack.state), "--prefect-port", str(stack.prefect_port))
    return subprocess.run(
        [sys.executable, "-m", "infra.local_stack", *args, *ports, "--mlflow-port", str(stack.mlflow_port)],
        cwd=REPO,
        env={**env, **FAST_POLLING},
        capture_output=True,
        text=True,
        timeout=900,
    )


def small_recipe(*overrides: str) -> dict:
    """The SMALL recipe with `overrides`, as the JSON the deployment's `recipe` parameter takes."""
    from models.recipe import load_recipe

    return load_recipe(None, [*SMALL, *overrides]).model_dump(mode="json")


@dataclass(frozen=True)
class LiveStack:
    """A running stack and what the tests read through it."""

    stack: Stack
    took_s: float  # how long `up` took

    def prefect(self):
        from prefect.client.orchestration import get_client

        return get_client(sync_client=True)

    def mlflow(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.stack.mlflow_url, registry_uri=self.stack.mlflow_url)

    def wait_final(self, flow_run_id, timeout_s: float = FLOW_RUN_TIMEOUT_S):
        """The flow run once it is in a final state; fails the test (with the worker log's tail) on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.prefect() as client:
                flow_run = client.read_flow_run(flow_run_id)
            if flow_run.state and flow_run.state.is_final():
                return flow_run
            time.sleep(3)
        pytest.fail(f"flow run {flow_run_id} not finished after {timeout_s:.0f} s; worker log:\n{self.worker_log()}")

    def worker_log(self, lines: int = 40) -> str:
        return "\n".join((self.stack.folder / "worker.log").read_text().splitlines()[-lines:])


CHROMIUM = Path("/usr/bin/chromium")
# Debian's chromium, headless, with nothing that reaches out of the machine and a fresh profile each time.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium_page(profile: Path):
    """A Playwright page in Debian's headless Chromium (never a downloaded browser), skipped when it is absent; a
    failure leaves the page's screenshot as ui/failure.png among the test artifacts."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 900},
        )
        page = context.new_page()
        try:
            yield page
        except Exception:
            page.screenshot(path=artifacts_dir("ui") / "failure.png")  # what the browser showed when it failed
            raise
        finally:
            context.close()


def artifacts_dir(name: str) -> Path:
    """Where a test keeps its screenshots: $R1_TEST_ARTIFACTS, else tests/e2e/artifacts/ (git-ignored)."""
    folder = Path(os.environ.get("R1_TEST_ARTIFACTS") or Path(__file__).parent / "artifacts") / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def keep(path: Path, name: str) -> Path:
    """Copy a test's file (in its pytest tmp dir) into the artifacts folder; the copy's path."""
    return Path(shutil.copy2(path, artifacts_dir(name) / path.name))
