"""The Kubernetes Job that the r1-gpu-h800 pool's worker would submit for a flow run, rendered here exactly as
prefect-kubernetes renders it (the pool's template + a deployment's job variables), printed as YAML:

    python -m infra.workpools.render [--set gpus_per_node=4] [--set 'node_selector={"pool": "h800"}'] > job.yaml
    kubectl create --dry-run=server -f job.yaml     # the cluster's own admission checks, nothing is created

A --set value is read as JSON when it parses (numbers, objects, lists), else as a plain string; the values are
checked against the template's variables schema, as the server checks a deployment's. Prefect settings of this
shell (PREFECT_API_URL, ...) appear in the container's env, as the worker's own settings do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from typing import Any

from infra.workpools.templates import TemplateError, load_template

EXAMPLE_FLOW_RUN_NAME = "example-flow-run"


class _NoServer:
    """Stands in for the Prefect client while rendering: only block and `prefect.variables` placeholders would use
    it (the R1 templates have none), and without it Prefect would start a temporary server for nothing."""

    def __getattr__(self, name: str):
        raise TemplateError("this template reads blocks or Prefect variables: render it on a worker, not here")


def check_job_variables(template: dict[str, Any], job_variables: dict[str, Any]) -> None:
    """TemplateError unless the values fit the template's variables schema (the server's check of a deployment)."""
    from prefect.utilities.schema_tools.validation import ValidationError, validate

    unknown = sorted(set(job_variables) - set(template["variables"].get("properties", {})))
    if unknown:
        raise TemplateError(f"the template has no variables {unknown}")
    try:
        validate(job_variables, template["variables"], raise_on_error=True, ignore_required=True)
    except ValidationError as err:
        raise TemplateError(str(err)) from None


def render_job_manifest(template: dict[str, Any], job_variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """The batch/v1 Job for a flow run of a deployment with `job_variables` (the worker's own two steps:
    KubernetesWorkerJobConfiguration.from_template_and_values, then prepare_for_flow_run). Block and
    `prefect.variables` placeholders would need a server; the R1 templates have none."""
    from prefect.client.schemas.objects import FlowRun
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    check_job_variables(template, job_variables or {})
    render = KubernetesWorkerJobConfiguration.from_template_and_values
    config = asyncio.run(render(template, job_variables or {}, client=_NoServer()))
    config.prepare_for_flow_run(FlowRun(flow_id=uuid.uuid4(), name=EXAMPLE_FLOW_RUN_NAME))
    return config.job_manifest


def parse_assignment(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not name=value (e.g. gpus_per_node=4)")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def main(argv: list[str] | None = None) -> int:
    import yaml

    parser = argparse.ArgumentParser(prog="python -m infra.workpools.render", description=__doc__.split("\n\n")[0])
    parser.add_argument("--template", default="kubernetes-gpu.json", help="template file in infra/workpools/")
    parser.add_argument("--set", type=parse_assignment, action="append", default=[], help="a job variable")
    args = parser.parse_args(argv)
    try:
        manifest = render_job_manifest(load_template(args.template), dict(args.set))
    except (TemplateError, ValueError) as err:
        print(f"render error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    sys.stdout.write(yaml.safe_dump(manifest, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
