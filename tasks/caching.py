"""Cache keys of the stage tasks: the key of the stage's spec (models/stage_io.py), which hashes exactly what the
stage process receives (its settings, the shared parts it reads, its inputs' fingerprints) and the code version of
what it runs (models/code_version.py).

Not Prefect's default policy (it includes the flow-run id, so nothing would be reused across runs); the pipeline's
MLflow run, the output location and the launch settings are not in it.
"""

from __future__ import annotations


def task_cache_key(context, parameters: dict) -> str:
    """Prefect cache_key_fn of the stage tasks: `<stage>-<spec key>`."""
    spec = parameters["spec"]
    return f"{spec.stage}-{spec.key()}"
