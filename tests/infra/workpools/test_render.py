"""The Job the r1-gpu-h800 worker would submit, rendered by prefect-kubernetes' own code from the pool's template,
with its defaults and with a deployment's job variables, and validated against Kubernetes 1.37's schemas offline.

    python -m pytest tests/infra/workpools/test_render.py -q
"""

from __future__ import annotations

import socket

import pytest

from infra.kubernetes.check import object_problems, pool_job_problems, without_prefect_pod_spec_extras
from infra.workpools.render import main, render_job_manifest
from infra.workpools.templates import TemplateError, load_template


@pytest.fixture(scope="module")
def gpu_template() -> dict:
    return load_template("kubernetes-gpu.json")


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails: what passes here needs no network."""

    def refuse(*args, **kwargs):
        raise OSError("network use in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def pod_spec(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


def container_env(job: dict) -> dict:
    return {entry["name"]: entry.get("value") for entry in pod_spec(job)["containers"][0]["env"]}


def test_default_job_asks_for_a_whole_h800_node(gpu_template):
    job = render_job_manifest(gpu_template)
    spec, container = pod_spec(job), pod_spec(job)["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert container["resources"]["requests"] == {"cpu": "64", "memory": "512Gi"}
    assert container["image"] == "r1-pipeline/worker:latest"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H800"}
    assert spec["tolerations"][0] == {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    assert spec["serviceAccountName"] == "r1-flow-run"
    assert job["metadata"]["namespace"] == "r1"


def test_default_job_mounts_the_cache_and_a_memory_backed_shm(gpu_template):
    spec = pod_spec(render_job_manifest(gpu_template))
    mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert mounts == {"cache": "/cache", "dshm": "/dev/shm"}
    assert volumes["cache"]["persistentVolumeClaim"] == {"claimName": "r1-cache"}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Gi"}


def test_default_job_env_points_caches_into_the_volume_and_takes_credentials_from_a_secret(gpu_template):
    job = render_job_manifest(gpu_template)
    env = container_env(job)
    assert env["HF_HOME"] == "/cache/huggingface" and env["R1_STATE_DIR"] == "/cache/r1-state"
    assert env["NCCL_NVLS_ENABLE"] == "0" and env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["PREFECT__FLOW_RUN_ID"]  # the worker's own variables come first, as on a cluster
    assert not any(name.startswith("AWS_") for name in env)
    assert pod_spec(job)["containers"][0]["envFrom"] == [{"secretRef": {"name": "r1-storage-credentials"}}]


def test_job_variables_of_a_deployment_override_the_defaults(gpu_template):
    job_variables = {
        "gpus_per_node": 4,
        "node_selector": {"pool": "h800-spot"},
        "storage_uri": "s3://r1-artifacts/team-a",
        "env": {"MLFLOW_TRACKING_URI": "http://mlflow.team-a:5000", "EXTRA": "1"},
        "cache_mount_path": "/data",
    }
    job = render_job_manifest(gpu_template, job_variables)
    env = container_env(job)
    assert pod_spec(job)["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert pod_spec(job)["nodeSelector"] == {"pool": "h800-spot"}
    assert env["R1_STORAGE_URI"] == "s3://r1-artifacts/team-a" and env["HF_HOME"] == "/data/huggingface"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.team-a:5000" and env["EXTRA"] == "1"
    assert [e["name"] for e in pod_spec(job)["containers"][0]["env"]].count("MLFLOW_TRACKING_URI") == 1


@pytest.mark.parametrize(
    "job_variables",
    [
        None,
        {
            "gpus_per_node": 0,
            "node_selector": {},
            "tolerations": [],
            "cpu_limit": "8",
            "s3_endpoint_url": "http://minio:9000",
        },
    ],
)
def test_rendered_job_is_a_valid_kubernetes_1_37_job_offline(no_network, job_variables):
    assert pool_job_problems("1.37", job_variables) == []


def test_only_prefects_pod_spec_extras_are_outside_the_strict_schema(gpu_template):
    job = render_job_manifest(gpu_template)
    problems = object_problems(job)
    assert len(problems) == 1 and "'completions', 'parallelism' were unexpected" in problems[0]
    assert object_problems(without_prefect_pod_spec_extras(job)) == []


@pytest.mark.parametrize(
    ("job_variables", "message"),
    [
        ({"image_pull_policy": "Sometimes"}, "'image_pull_policy'. Failure reason: 'Sometimes' is not one of"),
        ({"gpus_per_node": -1}, "-1 is less than the minimum of 0"),
        ({"tolerations": "nvidia.com/gpu"}, "'nvidia.com/gpu' is not of type 'array'"),
        ({"gpu_count": 8}, r"no variables \['gpu_count'\]"),
    ],
)
def test_job_variables_outside_the_schema_are_refused_before_rendering(job_variables, message):
    with pytest.raises(TemplateError, match=message):
        pool_job_problems("1.37", job_variables)


@pytest.mark.parametrize(
    ("job_variables", "message"),
    [
        ({"shm_size": "64 GB"}, "sizeLimit: '64 GB' is not a quantity"),
        ({"memory_request": "lots"}, "requests: 'lots' is not a quantity"),
        # the pool's schema takes any object as a toleration; Kubernetes' strict schema knows the fields
        ({"tolerations": [{"key": "nvidia.com/gpu", "effekt": "NoSchedule"}]}, "'effekt' was unexpected"),
    ],
)
def test_a_rendered_job_that_kubernetes_would_refuse_is_caught(job_variables, message):
    problems = pool_job_problems("1.37", job_variables)
    assert any(message in problem for problem in problems), problems


def test_render_cli_prints_yaml_and_refuses_unknown_variables(capsys):
    import yaml

    assert main(["--set", "gpus_per_node=2"]) == 0
    job = yaml.safe_load(capsys.readouterr().out)
    assert pod_spec(job)["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert main(["--set", "gpu=2"]) == 2
    assert "render error: the template has no variables ['gpu']" in capsys.readouterr().err
