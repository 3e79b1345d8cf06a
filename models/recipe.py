"""Load a recipe: YAML file + `key=value` overrides -> validated Recipe, or one line that says what to fix.

python -m models.recipe flows/recipes/tiny.yaml reasoning_rl.trl.max_steps=50   # prints the resolved recipe
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from models.config import Recipe


class RecipeError(ValueError):
    """A recipe that cannot run; str() is one line naming the field and the fix."""


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """`a.b.c=value` sets tree['a']['b']['c'] to the YAML-parsed value."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise RecipeError(f"override '{assignment}': write it as key.path=value")
    *parents, leaf = key.strip().split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise RecipeError(f"override '{assignment}': '{part}' is not a section")
    try:
        node[leaf] = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise RecipeError(f"override '{assignment}': the value is not valid YAML ({err.problem})") from None


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key; remove it or check its spelling against the recipe reference (README)"
    return f"{where}: {message}" if where else message


def load_recipe(path: str | Path | None, overrides: list[str] = ()) -> Recipe:
    """The validated recipe (embedded defaults when `path` is None); RecipeError on any problem."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"recipe file '{path}' not found; pass an existing YAML file")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise RecipeError(f"recipe '{path}' is not valid YAML: {str(err).splitlines()[0]}") from None
        if not isinstance(tree, dict):
            raise RecipeError(f"recipe '{path}' must be a mapping of sections")
    for assignment in overrides:
        apply_override(tree, assignment)
    try:
        return Recipe.model_validate(tree)
    except ValidationError as err:
        raise RecipeError(_one_line(err)) from None


def main() -> None:
    try:
        recipe = load_recipe(sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else None, sys.argv[2:])
    except RecipeError as err:
        sys.exit(f"recipe error: {err}")
    print(yaml.safe_dump(recipe.model_dump(), sort_keys=False))


if __name__ == "__main__":
    main()
