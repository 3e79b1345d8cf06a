"""The JobSet of one multi-node training stage, built from stage-jobset.yaml: N pods of 8 GPUs, each running torchrun
with c10d rendezvous on the leader pod (pod 0), all mounting the cache volume that holds the stage's spec file.

    python -m infra.kubernetes.jobset --stage reasoning_rl --run-id 1a2b3c4d --nodes 4 \
        --spec /cache/r1-state/stage-specs/1a2b3c4d/spec.json > jobset.yaml

A stage task calls stage_jobset(...) with the spec it wrote onto the cache volume, creates the result with the
Kubernetes API (see infra/README.md) and waits for the JobSet's Completed or Failed condition.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import sys
from functools import cache
from pathlib import Path
from typing import Any

import yaml

TEMPLATE = Path(__file__).parent / "stage-jobset.yaml"
REPLICATED_JOB = "node"
RENDEZVOUS_PORT = 29500
# Pod hostnames are <jobset>-node-<job index>-<pod index>: a DNS label (63 characters) leaves the name 40 or fewer.
MAX_NAME = 40
# What the flow run pod was told about the store and MLflow, passed on to the stage pods.
FORWARDED_ENV = ("R1_STORAGE_URI", "R1_S3_ENDPOINT_URL", "MLFLOW_TRACKING_URI")


@cache
def _template() -> dict[str, Any]:
    return yaml.safe_load(TEMPLATE.read_text())


def jobset_name(stage: str, run_id: str) -> str:
    """`r1-<stage>-<run id>` as a DNS label: lower case, dashes, at most MAX_NAME characters."""
    name = re.sub(r"[^a-z0-9-]+", "-", f"r1-{stage}-{run_id}".lower()).strip("-")
    return name[:MAX_NAME].rstrip("-")


def leader_endpoint(name: str) -> str:
    """host:port of pod 0 on the JobSet's headless service (its subdomain is the JobSet's name)."""
    return f"{name}-{REPLICATED_JOB}-0-0.{name}:{RENDEZVOUS_PORT}"


def torchrun_command(name: str, nodes: int, gpus_per_node: int, spec_path: str) -> list[str]:
    return [
        "torchrun",
        *("--nnodes", str(nodes), "--nproc-per-node", str(gpus_per_node)),
        *("--rdzv-backend", "c10d", "--rdzv-id", name, "--rdzv-endpoint", leader_endpoint(name)),
        *("-m", "models.run_stage", spec_path),
    ]


def _merged_env(container_env: list[dict[str, Any]], env: dict[str, str]) -> list[dict[str, Any]]:
    kept = [entry for entry in container_env if entry["name"] not in env]
    return kept + [{"name": name, "value": value} for name, value in env.items()]


def stage_jobset(
    stage: str,
    run_id: str,
    nodes: int,
    spec_path: str,
    image: str | None = None,
    namespace: str | None = None,
    gpus_per_node: int = 8,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The JobSet manifest of `stage` for run `run_id` on `nodes` nodes; `env` adds to (or replaces) the stage
    container's environment. spec_path must be on the cache volume, which every pod mounts."""
    if nodes < 2:
        raise ValueError(f"nodes={nodes}: a JobSet is for 2 or more nodes; one node runs the stage in the flow run pod")
    if not spec_path.startswith("/cache/"):
        raise ValueError(f"spec_path {spec_path!r} is not under /cache/: the stage pods would not see it")
    manifest = copy.deepcopy(_template())
    name = jobset_name(stage, run_id)
    manifest["metadata"].update(name=name, namespace=namespace or manifest["metadata"]["namespace"])
    manifest["metadata"]["labels"].update({"r1.stage": stage, "r1.run-id": run_id[:63]})
    job = manifest["spec"]["replicatedJobs"][0]["template"]["spec"]
    job.update(parallelism=nodes, completions=nodes)
    container = job["template"]["spec"]["containers"][0]
    container["command"] = torchrun_command(name, nodes, gpus_per_node, spec_path)
    container["resources"]["limits"]["nvidia.com/gpu"] = gpus_per_node
    container["image"] = image or container["image"]
    container["env"] = _merged_env(container["env"], env or {})
    return manifest


def forwarded_env() -> dict[str, str]:
    """The store and MLflow settings of this process (the flow run pod's), for the stage pods."""
    return {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.kubernetes.jobset", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", required=True, help="stage name, e.g. reasoning_rl")
    parser.add_argument("--run-id", required=True, help="a short id of the run (the flow run id's first characters)")
    parser.add_argument("--nodes", type=int, required=True, help="8-GPU nodes, 2 or more")
    parser.add_argument("--spec", required=True, help="the stage's spec.json on the cache volume (/cache/...)")
    parser.add_argument("--image", help="the stage image (default: the template's)")
    args = parser.parse_args(argv)
    try:
        manifest = stage_jobset(args.stage, args.run_id, args.nodes, args.spec, args.image, env=forwarded_env())
    except ValueError as err:
        print(f"jobset error: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(yaml.safe_dump(manifest, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
