"""Apply the pipeline's deployments (infra/prefect.yaml) to the Prefect server at $PREFECT_API_URL, work pools first.

python -m infra.deploy            # the CPU pool `r1-cpu` and its deployments
python -m infra.deploy --gpu      # also the Kubernetes GPU pool `r1-gpu-h800` and `r1-stage-spec/h800`
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PREFECT_FILE = PROJECT_ROOT / "infra" / "prefect.yaml"
CPU_DEPLOYMENTS = (
    "r1-pipeline/train",
    "r1-pipeline/retrain-scheduled",
    "r1-stage/from-run",
    "r1-evaluate/registered-model",
    "r1-stage-spec/local",
)
GPU_DEPLOYMENTS = ("r1-stage-spec/h800",)


class DeployError(RuntimeError):
    """Deployments that cannot be applied; str() is one line saying what to fix."""


def positive_int(text: str) -> int:
    from infra.workpools.setup import positive_int as nodes

    return nodes(text)


def deployments(gpu: bool) -> tuple[str, ...]:
    return CPU_DEPLOYMENTS + (GPU_DEPLOYMENTS if gpu else ())


def apply(gpu: bool = False, gpu_nodes: int = 1) -> tuple[str, ...]:
    """Create or update the pools and deployments; returns the deployments' names."""
    if not os.environ.get("PREFECT_API_URL"):
        raise DeployError("PREFECT_API_URL is not set; start a server (make up) and export its URL (.../api)")
    _ensure_pools(gpu, gpu_nodes)
    names = deployments(gpu)
    command = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--prefect-file", str(PREFECT_FILE)]
    for name in names:
        command += ["--name", name]
    env = {**os.environ, "R1_PROJECT_DIR": str(PROJECT_ROOT)}
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise DeployError(f"prefect deploy failed: {last[0]}")
    return names


def _ensure_pools(gpu: bool, gpu_nodes: int) -> None:
    from infra.workpools.setup import SetupError, setup
    from infra.workpools.templates import TemplateError

    try:
        setup(gpu_nodes=gpu_nodes, kubernetes=gpu)
    except (SetupError, TemplateError) as err:
        raise DeployError(str(err)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="also the Kubernetes GPU pool and its stage deployment")
    parser.add_argument("--gpu-nodes", type=positive_int, default=1, help="GPU nodes pipelines may hold at once")
    args = parser.parse_args(argv)
    try:
        names = apply(args.gpu, args.gpu_nodes)
    except DeployError as err:
        print(f"deploy error: {err}", file=sys.stderr)
        return 2
    print("deployed: " + ", ".join(names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
