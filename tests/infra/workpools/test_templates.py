"""The work pool templates: every variable used and every placeholder declared, nothing of Prefect's default dropped,
and the checks themselves refusing broken templates.

    python -m pytest tests/infra/workpools/test_templates.py -q
"""

from __future__ import annotations

import pytest

from infra.workpools.templates import (
    TemplateError,
    check_template,
    load_template,
    placeholder_names,
    undeclared_placeholders,
    unreferenced_variables,
)

TEMPLATE_FILES = ["process.json", "kubernetes-gpu.json"]


def default_template(worker_type: str) -> dict:
    """Prefect's own default template of the worker type (what `prefect work-pool get-default-base-job-template`
    prints)."""
    if worker_type == "process":
        from prefect.workers.process import ProcessWorker

        return ProcessWorker.get_default_base_job_template()
    from prefect_kubernetes.worker import KubernetesWorker

    return KubernetesWorker.get_default_base_job_template()


@pytest.mark.parametrize("name", TEMPLATE_FILES)
def test_every_variable_is_used_and_every_placeholder_declared(name):
    template = load_template(name)
    assert unreferenced_variables(template) == set()
    assert undeclared_placeholders(template) == set()
    assert {"command", "env", "labels", "name"} <= placeholder_names(template)  # Prefect's own, kept


@pytest.mark.parametrize(("name", "worker_type"), [("process.json", "process"), ("kubernetes-gpu.json", "kubernetes")])
def test_template_keeps_everything_of_prefects_default(name, worker_type):
    ours, default = load_template(name), default_template(worker_type)
    assert set(default["variables"]["properties"]) <= set(ours["variables"]["properties"])
    assert set(default["job_configuration"]) <= set(ours["job_configuration"])


def test_gpu_template_declares_the_h800_variables():
    properties = load_template("kubernetes-gpu.json")["variables"]["properties"]
    defaults = {name: spec.get("default") for name, spec in properties.items()}
    assert defaults["gpus_per_node"] == 8
    assert defaults["node_selector"] == {"nvidia.com/gpu.product": "NVIDIA-H800"}
    assert defaults["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert defaults["image"] == "r1-pipeline/worker:latest"
    assert {"cpu_request", "cpu_limit", "memory_request", "memory_limit", "cache_pvc", "shm_size"} <= set(defaults)


def _env_names(node) -> list[str]:
    """Names of the env entries ({"name": ..., "value": ...}) anywhere in a job configuration."""
    if isinstance(node, list):
        return [name for item in node for name in _env_names(item)]
    if not isinstance(node, dict):
        return []
    own = [node["name"]] if "value" in node or "valueFrom" in node else []
    return own + [name for value in node.values() for name in _env_names(value)]


@pytest.mark.parametrize("name", TEMPLATE_FILES)
def test_no_template_sets_credentials_itself(name):
    template = load_template(name)
    env_default = template["variables"]["properties"]["env"].get("default", {})
    names = _env_names(template["job_configuration"]) + list(env_default)
    assert not any(n.startswith("AWS_") or "SECRET" in n or "TOKEN" in n for n in names), names


def _template(job_configuration: dict, properties: dict) -> dict:
    return {"job_configuration": job_configuration, "variables": {"type": "object", "properties": properties}}


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            _template({"image": "{{ image }}"}, {"image": {"type": "string"}, "gpus": {"type": "integer"}}),
            r"variables \['gpus'\] are never used",
        ),
        (_template({"image": "{{ image }}", "x": "{{ imag }}"}, {"image": {}}), r"placeholders \['imag'\] name no"),
        (_template({"m": {"nested": ["{{ deep }}"]}}, {}), r"placeholders \['deep'\]"),
        ({"variables": {}}, "needs 'job_configuration' and 'variables'"),
        (["not", "a", "mapping"], "needs 'job_configuration' and 'variables'"),
    ],
)
def test_check_template_refuses(template, message):
    with pytest.raises(TemplateError, match=message):
        check_template(template, "bad.json")


def test_placeholders_inside_text_and_dotted_names_count():
    template = _template({"a": "{{ mount }}/hf", "b": "{{ env.HOME }}"}, {"mount": {}, "env": {}})
    assert check_template(template, "ok.json") is template


@pytest.mark.parametrize(("text", "message"), [("{not json", "not valid JSON"), (None, "no such template file")])
def test_load_template_errors_name_the_file(tmp_path, text, message):
    path = tmp_path / "pool.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(TemplateError, match=f"{path}: {message}"):
        load_template(path)
