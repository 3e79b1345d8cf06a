"""Cache keys of the stage tasks: the stage's resolved config + its inputs' fingerprints + the code it runs.

Not Prefect's default policy (it includes the flow-run id, so nothing would be reused across runs). The code
version is a hash of the source of every `models` module the stage's entry module imports, transitively: an
edit to the GRPO code re-runs the RL stages, not the SFT ones.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from pathlib import Path

from models.config import Recipe
from models.records import Artifact
from models.stage_io import stage_config

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
ENTRY_MODULE = {
    "cold_start_sft": "sft",
    "supervised_merge": "sft",
    "reasoning_rl": "grpo",
    "final_rl": "grpo",
    "rejection_sampling": "rejection",
    "evaluate": "eval_stage",
}


def _imports(module: str) -> set[str]:
    """`models.*` modules imported anywhere in models/<module>.py (function-level imports included)."""
    tree = ast.parse((MODELS_DIR / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "models":  # from models import sft
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("models."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("models.")}
    return found


@functools.cache
def code_version(stage: str) -> str:
    """Hash of the stage's entry module, run_stage.py, and everything they import from models/ (run_stage's
    imports of the other stages' entry modules excepted)."""
    other_entries = set(ENTRY_MODULE.values()) - {ENTRY_MODULE[stage]}
    todo, seen = [ENTRY_MODULE[stage], "run_stage"], set()
    while todo:
        module = todo.pop()
        if module not in seen and module not in other_entries and (MODELS_DIR / f"{module}.py").exists():
            seen.add(module)
            todo += _imports(module)
    digest = hashlib.sha256()
    for module in sorted(seen):
        digest.update((MODELS_DIR / f"{module}.py").read_bytes())
    return digest.hexdigest()[:16]


def stage_key(stage: str, recipe: Recipe, inputs: dict[str, Artifact]) -> str:
    """The cache key (also the name of the stage's output folder)."""
    payload = {
        "stage": stage,
        "config": stage_config(recipe, stage),
        "inputs": {name: record.fingerprint for name, record in sorted(inputs.items())},
        "code": code_version(stage),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def task_cache_key(context, parameters: dict) -> str:
    """Prefect cache_key_fn: ignores the parent MLflow run, so a new pipeline run reuses finished stages."""
    return f"{parameters['stage']}-{stage_key(parameters['stage'], parameters['recipe'], parameters['inputs'])}"
