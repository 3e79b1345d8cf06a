"""Security: no secret planted in the environment appears in anything the pipeline writes, no recipe value writes
outside the state folder or bucket prefix, models load from safetensors only, and the worker image runs as non-root.

The end-to-end case runs the smallest pipeline through `flows.cli` (real Prefect API, MLflow on SQLite, moto's S3
server as the store) with secrets in AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, HF_TOKEN, MLFLOW_TRACKING_PASSWORD
and a password in PREFECT_API_URL's user:pass@ form (the API answers it), then reads back every MLflow run (params,
tags, metric names, every artifact), the MLflow database file, every Prefect flow run, task run, log and artifact,
every file of the state folder, every object of the bucket and the command's stdout/stderr.

    .venv/bin/python -m pytest tests/test_security.py -q
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from models.recipe import RecipeError, load_recipe

SECURITY = pytest.mark.reliability("security")
ROOT = Path(__file__).parents[1]
SMALL = [
    "name=sec-e2e",
    "model.registered_name=r1-sec",
    "data.eval_size=10",
    "data.cold_start_size=60",
    "data.rl_pool_size=8",
    "data.validation_size=4",
    "evaluation.num_samples=1",
    "reasoning_rl.trl.max_steps=1",
    "reasoning_rl.trl.num_generations=4",
    "reasoning_rl.trl.per_device_train_batch_size=8",
    "reasoning_rl.trl.logging_steps=1",
    "reasoning_rl.alarms.check_every=0",
    "rejection_sampling.num_prompts=4",
    "final_rl.trl.max_steps=1",
    "final_rl.trl.num_generations=4",
    "final_rl.trl.per_device_train_batch_size=8",
    "final_rl.trl.logging_steps=1",
    "final_rl.general_reward.last_steps=1",
    "final_rl.alarms.check_every=0",
    "cold_start_sft.trl.num_train_epochs=1",
    "supervised_merge.trl.num_train_epochs=1",
]


def planted() -> dict[str, str]:
    """Environment variable -> a secret value no code could produce by chance."""
    names = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "HF_TOKEN", "MLFLOW_TRACKING_PASSWORD")
    return {name: f"planted{name.lower().replace('_', '')}{secrets.token_hex(8)}" for name in names}


def with_password(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.netloc}"))


class Leaks:
    """Every place a secret was found, as `<where>: <secret name>`."""

    def __init__(self, values: dict[str, str]):
        self.values, self.found = values, []

    def scan(self, where: str, content: str | bytes) -> None:
        data = content if isinstance(content, bytes) else content.encode(errors="replace")
        self.found += [f"{where}: {name}" for name, value in self.values.items() if value.encode() in data]


def scan_mlflow(leaks: Leaks, tracking_uri: str, download_to: Path) -> int:
    """Every experiment's runs (name, params, tags, metric names, all artifacts) and the registry; the run count.
    The store is named explicitly: an earlier test in this process may have set MLflow's global tracking URI, which
    outranks MLFLOW_TRACKING_URI."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    runs = client.search_runs(experiments, run_view_type=ViewType.ALL, max_results=10_000)
    for run in runs:
        data = run.data
        leaks.scan(f"mlflow run {run.info.run_name}", json.dumps([run.info.run_name, data.params, data.tags]))
        leaks.scan(f"mlflow run {run.info.run_name} metric names", " ".join(data.metrics))
        folder = download_to / run.info.run_id
        mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(folder), tracking_uri=tracking_uri)
        for path in (p for p in folder.rglob("*") if p.is_file()):
            leaks.scan(f"mlflow artifact {path.relative_to(download_to)}", path.read_bytes())
    for model in client.search_registered_models():
        leaks.scan(f"registered model {model.name}", repr(model))
        for version in client.search_model_versions(f"name='{model.name}'"):
            leaks.scan(f"model version {model.name}/{version.version}", repr(version))
    return len(runs)


def scan_prefect(leaks: Leaks) -> int:
    """Every flow run (name, parameters, state), task run, log and artifact the API holds; the flow-run count."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        flow_runs = client.read_flow_runs(limit=200)
        for run in flow_runs:
            leaks.scan(f"prefect flow run {run.name}", run.model_dump_json())
        for task_run in client.read_task_runs(limit=200):
            leaks.scan(f"prefect task run {task_run.name}", task_run.model_dump_json())
        for log in client.read_logs(limit=200):
            leaks.scan("prefect log", log.model_dump_json())
        for artifact in client.read_artifacts(limit=200):
            leaks.scan(f"prefect artifact {artifact.key}", artifact.model_dump_json())
    return len(flow_runs)


def scan_tree(leaks: Leaks, folder: Path, label: str) -> int:
    files = [p for p in folder.rglob("*") if p.is_file()]
    for path in files:
        leaks.scan(f"{label}/{path.relative_to(folder)}", path.read_bytes())
    return len(files)


def scan_bucket(leaks: Leaks, s3_server, bucket: str) -> int:
    client = s3_server.client()
    keys = [
        o["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    ]
    for key in keys:
        leaks.scan(f"s3://{bucket}/{key}", client.get_object(Bucket=bucket, Key=key)["Body"].read())
    return len(keys)


@pytest.fixture
def secret_run(s3_server, prefect_server, tmp_path_factory):
    """The smallest pipeline through `python -m flows.cli` with secrets planted in its environment; yields (exit code,
    state folder, bucket, secrets, stdout + stderr)."""
    import os
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL

    folder, values = tmp_path_factory.mktemp("secure"), planted()
    values["PREFECT_API_URL password"] = f"plantedprefectpass{secrets.token_hex(8)}"
    bucket = s3_server.new_bucket()
    hidden = ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL", "PREFECT_UI_URL")
    env = {k: v for k, v in os.environ.items() if k not in hidden}
    env.update({k: v for k, v in values.items() if " " not in k})
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_TRACKING_USERNAME": "ops",
            "AWS_CONFIG_FILE": str(folder / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(folder / "no-aws-credentials"),
            "R1_STATE_DIR": str(folder / "state"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'state' / 'mlflow.db'}",
            "R1_STORAGE_URI": f"s3://{bucket}/r1",
            "R1_S3_ENDPOINT_URL": s3_server.endpoint_url,
            "PREFECT_API_URL": with_password(PREFECT_API_URL.value(), "ops", values["PREFECT_API_URL password"]),
            "PREFECT_LOCAL_STORAGE_PATH": str(folder / "state" / "results"),
        }
    )
    command = [sys.executable, "-m", "flows.cli", *SMALL]
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=1500)
    yield done.returncode, folder / "state", bucket, values, done.stdout + done.stderr, env


@pytest.mark.slow
@SECURITY
def test_no_planted_secret_appears_in_anything_the_pipeline_writes(secret_run, s3_server, tmp_path, monkeypatch):
    code, state, bucket, values, output, env = secret_run
    assert code == 0, output[-3000:]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_server.endpoint_url)
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    leaks = Leaks(values)
    leaks.scan("stdout/stderr", output)
    counts = {
        "mlflow runs": scan_mlflow(leaks, env["MLFLOW_TRACKING_URI"], tmp_path / "artifacts"),
        "prefect flow runs": scan_prefect(leaks),
        "state files": scan_tree(leaks, state, "state"),
        "bucket objects": scan_bucket(leaks, s3_server, bucket),
    }
    assert not leaks.found, (leaks.found, counts)
    assert counts["mlflow runs"] >= 6 and counts["prefect flow runs"] >= 1 and counts["bucket objects"] > 0, counts
    assert (state / "mlflow.db").is_file() and counts["state files"] > 0, counts
    assert "Pipeline finished" in output


@SECURITY
@pytest.mark.parametrize(
    "override",
    [
        "name=../../../../escaped",
        "name=/tmp/escaped",
        "name=..",
        "name=a/../../b",
        "model.registered_name=../../escaped",
        "model.registered_name=a\\..\\b",
        "reasoning_rl.trl.output_dir=/tmp/escaped",
        "final_rl.trl.logging_dir=../escaped",
        "storage.uri=s3://bucket/../../other",
    ],
)
def test_no_recipe_value_points_outside_the_state_folder_or_bucket_prefix(override):
    with pytest.raises(RecipeError) as refused:
        load_recipe(None, [override])
    assert str(refused.value).count("\n") == 0 and "escaped" not in str(refused.value).split(":", 1)[0]


@SECURITY
@pytest.mark.parametrize(
    "override",
    [
        "reasoning_rl.trl.hub_token={secret}",
        "storage.endpoint_url=http://ops:{secret}@127.0.0.1:9000",
        "storage.uri=s3://ops:{secret}@bucket/r1",
    ],
)
def test_a_recipe_cannot_carry_a_secret_and_the_refusal_does_not_echo_it(override):
    secret = secrets.token_hex(8)
    with pytest.raises(RecipeError) as refused:
        load_recipe(None, [override.format(secret=secret)])
    assert secret not in str(refused.value) and str(refused.value).count("\n") == 0


@SECURITY
def test_models_load_from_safetensors_only_and_without_remote_code(tmp_path):
    """A folder whose safetensors were swapped for a pickle is refused by the loader itself, not only the check."""
    import shutil

    from models.factory import ASSETS, load_model

    folder = tmp_path / "model"
    shutil.copytree(ASSETS / "tiny_base", folder)
    (folder / "model.safetensors").unlink()
    import torch

    torch.save({}, folder / "pytorch_model.bin")
    with pytest.raises(OSError, match="safetensors"):
        load_model(str(folder))


@SECURITY
def test_the_worker_image_runs_as_non_root():
    lines = [line.split() for line in (ROOT / "docker" / "worker.Dockerfile").read_text().splitlines()]
    users = [words[1] for words in lines if words[:1] == ["USER"]]
    assert users and users[-1].split(":")[0] not in ("0", "root"), users


@SECURITY
def test_printed_urls_carry_no_credentials(monkeypatch, tmp_path):
    """What the CLI prints about the Prefect and MLflow servers, and Prefect's `View at` links, hide a password."""
    from flows.cli import configure_environment, ui_help

    secret = secrets.token_hex(8)
    monkeypatch.setenv("R1_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PREFECT_API_URL", f"http://ops:{secret}@127.0.0.1:4200/api")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"https://ops:{secret}@mlflow.example.org")
    monkeypatch.delenv("PREFECT_UI_URL", raising=False)
    configure_environment()
    import os

    assert os.environ["PREFECT_UI_URL"] == "http://127.0.0.1:4200"
    shown = ui_help()
    assert secret not in shown and "http://127.0.0.1:4200" in shown and "https://***@mlflow.example.org" in shown
