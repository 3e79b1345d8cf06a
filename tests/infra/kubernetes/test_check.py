"""Every manifest in infra/kubernetes/ against Kubernetes 1.37's strict schemas (the JobSet by its own checks and its
Job template by the batch/v1 schema), offline; and the checks refusing broken objects.

    python -m pytest tests/infra/kubernetes/test_check.py -q
"""

from __future__ import annotations

import copy
import socket

import pytest

from infra.kubernetes.check import documents, jobset_problems, main, object_problems, quantity_problems

EXPECTED_KINDS = {
    "Namespace",
    "PersistentVolumeClaim",
    "Secret",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "Deployment",
    "JobSet",
}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network use in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


MANIFESTS = list(documents())


def test_the_folder_holds_what_a_platform_team_needs():
    assert {obj["kind"] for _, obj in MANIFESTS} == EXPECTED_KINDS


@pytest.mark.parametrize(("where", "obj"), MANIFESTS, ids=[where for where, _ in MANIFESTS])
def test_manifest_is_valid_for_kubernetes_1_37(where, obj):
    assert object_problems(obj, "1.37") == []


def test_the_secret_example_holds_placeholders_only():
    (secret,) = [obj for _, obj in MANIFESTS if obj["kind"] == "Secret"]
    assert "data" not in secret
    assert all(value.startswith("<") and value.endswith(">") for value in secret["stringData"].values())


def _manifest(kind: str) -> dict:
    return copy.deepcopy(next(obj for _, obj in MANIFESTS if obj["kind"] == kind))


def _pod(jobset: dict) -> dict:
    return jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]


def _broken(kind: str, change) -> dict:
    obj = _manifest(kind)
    change(obj)
    return obj


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (_broken("Deployment", lambda d: d["spec"].update(replica=2)), "'replica' was unexpected"),
        (_broken("PersistentVolumeClaim", lambda p: p["spec"].update(accessModes="ReadWriteMany")), "is not of type"),
        (_broken("Role", lambda r: r["rules"][0].pop("verbs")), "'verbs' is a required property"),
        (_broken("JobSet", lambda j: _pod(j)["containers"][0].update(gpus=8)), "'gpus' was unexpected"),
        (_broken("JobSet", lambda j: _pod(j)["containers"][0]["command"].__setitem__(2, "3")), "--nnodes 3 must equal"),
        (
            _broken("JobSet", lambda j: _pod(j)["containers"][0]["command"].__setitem__(10, "leader:29500")),
            "--rdzv-endpoint r1-stage-example-node-0-0.r1-stage-example:<port>",
        ),
        (_broken("JobSet", lambda j: j["spec"].pop("network")), "enableDNSHostnames must be true"),
        (_broken("JobSet", lambda j: j["spec"].update(replicatedJobs=[])), "non-empty spec.replicatedJobs"),
        ({"kind": "Pod"}, "not a Kubernetes object"),
        ({"apiVersion": "example.com/v1", "kind": "Widget"}, "Couldn't find schema for kind Widget"),
    ],
)
def test_broken_objects_are_caught(obj, message):
    problems = object_problems(obj, "1.37")
    assert any(message in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("amount", "ok"),
    [("64", True), ("500m", True), ("512Gi", True), ("1e3", True), (8, True), ("1.5Ti", True), ("64 GB", False)]
    + [("8GB", False), ("Gi", False), (True, False)],
)
def test_quantities(amount, ok):
    problems = quantity_problems({"resources": {"limits": {"memory": amount}}})
    assert (problems == []) is ok, problems


def test_jobset_checks_need_the_required_fields():
    assert jobset_problems({"spec": {"replicatedJobs": [{}]}}, "1.37") == [
        "a JobSet needs metadata.name and a non-empty spec.replicatedJobs"
    ]


def test_check_cli_reports_every_object(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(MANIFESTS) + 1 and all(line.startswith("ok ") for line in out)
