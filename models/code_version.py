"""The code version in a stage's cache key: a hash of the code that can change the stage's result, and nothing else.

It covers the stage's entry module and every project module it imports, transitively (function-level imports
included), each reduced to its syntax tree without docstrings, comments, formatting and pydantic field
descriptions. Modules that only present or record results (MLflow logging, plots, cost accounting, the stage
registry itself) are left out, and so are the other stages' entry modules that the stage process can import. So
editing a help string or a plot re-runs nothing, and editing the GRPO code re-runs the RL stages only.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
from pathlib import Path

# Modules whose code cannot change what a stage produces: they log, plot, count cost, report progress or declare;
# models.fingerprints names the inputs, and reaches the keys through the inputs' fingerprints themselves.
PRESENTATION_ONLY = frozenset(
    {
        "models.tracking",
        "models.plots",
        "models.cost",
        "models.stages",
        "models.benchmarks",
        "models.code_version",
        "models.progress",
        "models.fingerprints",
    }
)
PROJECT_PACKAGES = ("models",)


def _module_file(module: str) -> Path | None:
    """The source file of a project module, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec and spec.origin and spec.origin.endswith(".py") else None


def _imports(tree: ast.AST, package: str) -> set[str]:
    """Project modules a syntax tree imports anywhere (`from models import sft` names models.sft)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module in PROJECT_PACKAGES:
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
            elif node.module.split(".")[0] in PROJECT_PACKAGES:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] in PROJECT_PACKAGES}
    return found


def _strip(tree: ast.AST) -> ast.AST:
    """The tree without docstrings and without `description=` keywords (pydantic Field help texts)."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            node.body = body[1:] or [ast.Pass()]
        if isinstance(node, ast.Call):
            node.keywords = [k for k in node.keywords if k.arg != "description"]
    return tree


def result_digest(source: str) -> str:
    """Hash of what a module's source does: the same for edits to docstrings, comments, layout or descriptions."""
    return hashlib.sha256(ast.dump(_strip(ast.parse(source))).encode()).hexdigest()


def _closure(entry: str, excluded: frozenset[str]) -> dict[str, Path]:
    todo, seen = [entry, "models.run_stage"], {}
    while todo:
        module = todo.pop()
        if module in seen or module in excluded or module.rsplit(".", 1)[0] in excluded:
            continue
        path = _module_file(module)
        if path is None:
            continue
        seen[module] = path
        todo += _imports(ast.parse(path.read_text()), module)
    return seen


@functools.cache
def code_version(stage_name: str) -> str:
    """Hash of the result-relevant code of a stage (see the module docstring)."""
    from models.stages import STAGES

    entry = STAGES[stage_name].entry.split(":")[0]
    other_entries = {s.entry.split(":")[0] for s in STAGES.values()} - {entry}
    modules = _closure(entry, PRESENTATION_ONLY | other_entries)
    digest = hashlib.sha256(STAGES[stage_name].entry.encode())
    for module, path in sorted(modules.items()):
        digest.update(f"{module}\0{result_digest(path.read_text())}\0".encode())
    return digest.hexdigest()[:16]
