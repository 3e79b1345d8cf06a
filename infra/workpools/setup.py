"""Create or update the R1 work pools and the GPU concurrency limits on the Prefect server at PREFECT_API_URL:

    python -m infra.workpools.setup [--gpu-nodes N] [--no-kubernetes]

- `r1-cpu` (process): local CPU runs, from process.json; no concurrency limit.
- `r1-gpu-h800` (kubernetes): one flow run = one Job on an 8-GPU H800 node, from kubernetes-gpu.json; the pool's
  concurrency limit is N, the number of GPU nodes, so further flow runs wait in the pool instead of asking the
  cluster for nodes it does not have.
- the tag concurrency limit `gpu:h800x8` = N: task runs carrying that tag (the training stages) hold one slot
  each, so two pipelines queue for GPU slots rather than oversubscribe a node, whichever pool their flow runs in.

Running it again updates the templates and limits in place (a paused pool stays paused). The server does not need
prefect-kubernetes to hold a `kubernetes` pool; the worker that serves it does.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass

from infra.workpools.templates import TemplateError, load_template

CPU_POOL = "r1-cpu"
GPU_POOL = "r1-gpu-h800"
GPU_TAG = "gpu:h800x8"


class SetupError(RuntimeError):
    """The pools could not be set up; the message says what to do."""


@dataclass(frozen=True)
class PoolSpec:
    name: str
    type: str
    template_file: str
    description: str
    concurrency_limit: int | None


def pool_specs(gpu_nodes: int, kubernetes: bool = True) -> list[PoolSpec]:
    """The pools to create: the CPU pool always, the GPU pool unless `kubernetes` is False."""
    specs = [PoolSpec(CPU_POOL, "process", "process.json", "R1 pipeline runs as local processes (CPU).", None)]
    if kubernetes:
        gpu = PoolSpec(
            GPU_POOL,
            "kubernetes",
            "kubernetes-gpu.json",
            f"R1 pipeline runs as Kubernetes Jobs on 8-GPU H800 nodes ({gpu_nodes} nodes).",
            gpu_nodes,
        )
        specs.append(gpu)
    return specs


async def apply_pool(client, spec: PoolSpec) -> str:
    """Create the pool, or update its template, description and limit in place; returns what was done."""
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    template = load_template(spec.template_file)
    try:
        existing = await client.read_work_pool(spec.name)
    except ObjectNotFound:
        create = WorkPoolCreate(
            name=spec.name,
            type=spec.type,
            base_job_template=template,
            description=spec.description,
            concurrency_limit=spec.concurrency_limit,
        )
        await client.create_work_pool(create)
        return "created"
    if existing.type != spec.type:
        raise SetupError(
            f"work pool {spec.name} exists with type {existing.type!r}, not {spec.type!r}: "
            f"delete it (prefect work-pool delete {spec.name}) and run again"
        )
    update = WorkPoolUpdate(
        base_job_template=template, description=spec.description, concurrency_limit=spec.concurrency_limit
    )
    await client.update_work_pool(spec.name, update)
    return "updated"


async def apply_all(specs: list[PoolSpec], gpu_nodes: int) -> list[str]:
    """Every pool, then the tag limit (the server upserts it); one line of what was done for each."""
    from prefect import get_client

    async with get_client() as client:
        lines = []
        for spec in specs:
            done = await apply_pool(client, spec)
            limit = "no limit" if spec.concurrency_limit is None else f"concurrency limit {spec.concurrency_limit}"
            lines.append(f"work pool {spec.name} ({spec.type}): {done}, {limit}")
        await client.create_concurrency_limit(tag=GPU_TAG, concurrency_limit=gpu_nodes)
        lines.append(f"tag concurrency limit {GPU_TAG}: {gpu_nodes} task runs at a time")
    return lines


def api_url() -> str:
    """The configured PREFECT_API_URL, or SetupError: a worker cannot serve the embedded (ephemeral) API."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise SetupError(
            "PREFECT_API_URL is not set: start a server (prefect server start) and "
            "export PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    return url


def setup(gpu_nodes: int, kubernetes: bool = True) -> list[str]:
    """Create or update the pools and limits on the server at PREFECT_API_URL."""
    import httpx

    url = api_url()
    try:
        return asyncio.run(apply_all(pool_specs(gpu_nodes, kubernetes), gpu_nodes))
    except httpx.TransportError as err:
        raise SetupError(f"cannot reach the Prefect API at {url} ({type(err).__name__}): is the server up?") from None


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of nodes >= 1")
    return int(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m infra.workpools.setup", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--gpu-nodes", type=positive_int, default=1, help="8-GPU H800 nodes the pipelines may hold at once"
    )
    parser.add_argument("--no-kubernetes", action="store_true", help="only the local CPU pool (and the tag limit)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        lines = setup(args.gpu_nodes, kubernetes=not args.no_kubernetes)
    except (SetupError, TemplateError) as err:
        print(f"work pool setup error: {err}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
