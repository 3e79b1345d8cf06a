"""The JobSet a multi-node stage task would create: torchrun on N pods of 8 GPUs meeting at pod 0, validated.

python -m pytest tests/infra/kubernetes/test_jobset.py -q
"""

from __future__ import annotations

import pytest
import yaml

from infra.kubernetes.check import object_problems
from infra.kubernetes.jobset import jobset_name, leader_endpoint, main, stage_jobset

SPEC = "/cache/r1-state/stage-specs/1a2b3c4d/spec.json"


def _container(jobset: dict) -> dict:
    return jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("nodes", [2, 4, 16])
def test_stage_jobset_runs_torchrun_on_every_node(nodes):
    jobset = stage_jobset("reasoning_rl", "1a2b3c4d", nodes, SPEC, env={"R1_STORAGE_URI": "s3://bucket/r1"})
    name = jobset["metadata"]["name"]
    job = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]
    assert (job["parallelism"], job["completions"]) == (nodes, nodes)
    assert _container(jobset)["command"] == [
        *("torchrun", "--nnodes", str(nodes), "--nproc-per-node", "8", "--rdzv-backend", "c10d"),
        *("--rdzv-id", name, "--rdzv-endpoint", f"{name}-node-0-0.{name}:29500", "-m", "models.run_stage", SPEC),
    ]
    assert object_problems(jobset, "1.37") == []


def test_stage_jobset_passes_the_store_settings_and_keeps_the_rest():
    env = {"R1_STORAGE_URI": "s3://bucket/r1", "MLFLOW_TRACKING_URI": "http://mlflow.team:5000"}
    container = _container(stage_jobset("final_rl", "ab", 2, SPEC, image="registry/r1:1.0", env=env))
    values = {entry["name"]: entry["value"] for entry in container["env"]}
    assert values["R1_STORAGE_URI"] == "s3://bucket/r1" and values["MLFLOW_TRACKING_URI"] == "http://mlflow.team:5000"
    assert values["NCCL_NVLS_ENABLE"] == "0" and values["HF_HOME"] == "/cache/huggingface"
    assert [entry["name"] for entry in container["env"]].count("MLFLOW_TRACKING_URI") == 1
    assert container["image"] == "registry/r1:1.0"
    assert container["envFrom"] == [{"secretRef": {"name": "r1-storage-credentials"}}]


def test_names_fit_pod_hostnames():
    name = jobset_name("reasoning_rl", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
    assert name.startswith("r1-reasoning-rl-0f1e2d3c") and len(name) <= 40 and not name.endswith("-")
    assert len(leader_endpoint(name).split(".")[0]) <= 63


@pytest.mark.parametrize(
    ("nodes", "spec", "message"),
    [(1, SPEC, "a JobSet is for 2 or more nodes"), (2, "/tmp/spec.json", "is not under /cache/")],
)
def test_stage_jobset_refuses(nodes, spec, message):
    with pytest.raises(ValueError, match=message):
        stage_jobset("reasoning_rl", "ab", nodes, spec)


def test_jobset_cli_prints_a_valid_manifest(capsys, monkeypatch):
    monkeypatch.setenv("R1_S3_ENDPOINT_URL", "http://minio:9000")
    assert main(["--stage", "reasoning_rl", "--run-id", "1a2b", "--nodes", "3", "--spec", SPEC]) == 0
    jobset = yaml.safe_load(capsys.readouterr().out)
    assert {"name": "R1_S3_ENDPOINT_URL", "value": "http://minio:9000"} in _container(jobset)["env"]
    assert object_problems(jobset, "1.37") == []
