"""Check the Kubernetes objects of the R1 pipeline offline, against Kubernetes' own schemas (kubernetes-validate
ships them), strictly (an unknown field is an error): every manifest in infra/kubernetes/ and the Job that the
r1-gpu-h800 pool's template renders with its defaults.

    python -m infra.kubernetes.check [--kubernetes-version 1.37]

JobSet is a custom resource, outside those schemas: its own fields are checked here (names, replicas, the torchrun
rendezvous matching the pod count and the leader's DNS name) and each replicated Job's template is validated as a
batch/v1 Job. Resource quantities are checked against Kubernetes' quantity grammar, which the schemas leave open.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

MANIFESTS_DIR = Path(__file__).parent
KUBERNETES_VERSION = "1.37"
JOBSET_API = "jobset.x-k8s.io/v1alpha2"
# prefect-kubernetes writes these two Job fields into the pod spec of every Job it creates (its own validator insists
# on them there); the API server drops unknown fields with a warning, a strict schema check would refuse them.
PREFECT_POD_SPEC_EXTRAS = ("parallelism", "completions")
# Kubernetes' resource.Quantity: a signed decimal number, then a binary (Ki..Ei), decimal (m, k..E) or exponent suffix.
QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([numkMGTPE]|[KMGTPE]i|[eE][+-]?\d+)?$")


def documents(folder: Path = MANIFESTS_DIR) -> Iterator[tuple[str, dict[str, Any]]]:
    """(file:index, object) for every YAML document under `folder`."""
    for path in sorted(folder.glob("*.yaml")):
        for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is not None:
                yield f"{path.name}:{index}", doc


def schema_problems(obj: dict[str, Any], version: str) -> list[str]:
    """Where the object breaks its kind's schema (strict), as 'path: message' lines."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as err:
        where = "/".join(str(part) for part in err.absolute_path) or "(top)"
        return [f"{where}: {err.message}"]
    except kubernetes_validate.SchemaNotFoundError as err:
        return [err.message]
    return []


def quantity_problems(node: Any, where: str = "") -> list[str]:
    """Resource quantities (limits, requests, sizeLimit, storage) that are not Kubernetes quantities."""
    if isinstance(node, list):
        return [p for i, item in enumerate(node) for p in quantity_problems(item, f"{where}/{i}")]
    if not isinstance(node, dict):
        return []
    problems = []
    for key, value in node.items():
        path = f"{where}/{key}"
        if key in ("limits", "requests") and isinstance(value, dict):
            amounts = value.items()
        elif key in ("sizeLimit", "storage") and not isinstance(value, dict):
            amounts = [(key, value)]
        else:
            problems += quantity_problems(value, path)
            continue
        problems += [f"{path}: {amount!r} is not a quantity" for _, amount in amounts if not _is_quantity(amount)]
    return problems


def _is_quantity(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or bool(QUANTITY.match(str(value)))


def jobset_problems(jobset: dict[str, Any], version: str) -> list[str]:
    """A JobSet's own required fields, the torchrun rendezvous of its pods, and each Job template's schema."""
    name = jobset.get("metadata", {}).get("name")
    replicated = jobset.get("spec", {}).get("replicatedJobs")
    if not name or not isinstance(replicated, list) or not replicated:
        return ["a JobSet needs metadata.name and a non-empty spec.replicatedJobs"]
    problems = []
    if not jobset["spec"].get("network", {}).get("enableDNSHostnames"):
        problems.append("spec.network.enableDNSHostnames must be true: torchrun finds the leader by its DNS name")
    for index, entry in enumerate(replicated):
        where = f"spec/replicatedJobs/{index}"
        if not entry.get("name") or not isinstance(entry.get("replicas", 1), int) or "template" not in entry:
            problems.append(f"{where}: needs a name, an integer replicas and a template")
            continue
        job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": entry["template"]["spec"]}
        problems += [f"{where}/template/{p}" for p in schema_problems(job, version)]
        problems += [f"{where}/template: {p}" for p in rendezvous_problems(name, entry["name"], job["spec"])]
    return problems


def rendezvous_problems(jobset_name: str, replicated_job: str, job_spec: dict[str, Any]) -> list[str]:
    """A torchrun command must name as many nodes as the Job has pods and pod 0 as its c10d endpoint."""
    command = job_spec["template"]["spec"]["containers"][0].get("command", [])
    if not command or command[0] != "torchrun":
        return []
    flags = dict(zip(command[1::2], command[2::2], strict=False))
    leader = f"{jobset_name}-{replicated_job}-0-0.{jobset_name}"
    problems = []
    if job_spec.get("completionMode") != "Indexed":
        problems.append("completionMode must be Indexed (stable pod hostnames)")
    if flags.get("--nnodes") != str(job_spec.get("parallelism")) or job_spec.get("parallelism") != job_spec.get(
        "completions"
    ):
        problems.append(f"--nnodes {flags.get('--nnodes')} must equal parallelism and completions")
    if flags.get("--rdzv-backend") != "c10d" or not str(flags.get("--rdzv-endpoint", "")).startswith(f"{leader}:"):
        problems.append(f"torchrun must rendezvous with --rdzv-backend c10d --rdzv-endpoint {leader}:<port>")
    return problems


def object_problems(obj: dict[str, Any], version: str = KUBERNETES_VERSION) -> list[str]:
    """Everything wrong with one object: its schema (or a JobSet's checks) and its quantities."""
    if not isinstance(obj, dict) or "apiVersion" not in obj or "kind" not in obj:
        return ["not a Kubernetes object (apiVersion and kind are missing)"]
    if obj["apiVersion"] == JOBSET_API and obj["kind"] == "JobSet":
        problems = jobset_problems(obj, version)
    else:
        problems = schema_problems(obj, version)
    return problems + quantity_problems(obj)


def without_prefect_pod_spec_extras(job: dict[str, Any]) -> dict[str, Any]:
    """The Job with PREFECT_POD_SPEC_EXTRAS taken out of its pod spec (nothing else changed)."""
    pod_spec = {k: v for k, v in job["spec"]["template"]["spec"].items() if k not in PREFECT_POD_SPEC_EXTRAS}
    return {**job, "spec": {**job["spec"], "template": {**job["spec"]["template"], "spec": pod_spec}}}


def pool_job_problems(version: str = KUBERNETES_VERSION, job_variables: dict[str, Any] | None = None) -> list[str]:
    """What is wrong with the Job the GPU pool renders (with its defaults, or with `job_variables`)."""
    from infra.workpools.render import render_job_manifest
    from infra.workpools.templates import load_template

    job = render_job_manifest(load_template("kubernetes-gpu.json"), job_variables)
    return object_problems(without_prefect_pod_spec_extras(job), version)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.kubernetes.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubernetes-version", default=KUBERNETES_VERSION, help="schemas of this Kubernetes")
    version = parser.parse_args(argv).kubernetes_version
    checked = [(where, obj, object_problems(obj, version)) for where, obj in documents()]
    rendered = {"kind": "Job", "metadata": {"name": "(as the r1-gpu-h800 worker renders it)"}}
    checked.append(("kubernetes-gpu.json", rendered, pool_job_problems(version)))
    for where, obj, problems in checked:
        status = "ok" if not problems else "FAILED"
        print(f"{status:6s} {where} {obj.get('kind')}/{obj.get('metadata', {}).get('name', '')}")
        for problem in problems:
            print(f"       {problem}")
    return 1 if any(problems for _, _, problems in checked) else 0


if __name__ == "__main__":
    sys.exit(main())
