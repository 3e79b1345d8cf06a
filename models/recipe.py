"""Load a recipe: YAML file + `key=value` overrides -> validated Recipe, or one line that says what to fix.

python -m models.recipe flows/recipes/tiny.yaml reasoning_rl.trl.max_steps=50   # prints the resolved recipe
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from models.config import PROJECT_ROOT, Recipe


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


RECIPES_DIR = PROJECT_ROOT / "flows" / "recipes"


def shipped_recipes() -> list[str]:
    """Names of the recipes shipped in flows/recipes/ (what `recipe_path` accepts besides a path)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_file(name_or_path: str) -> Path:
    """A recipe's YAML file from its name (`tiny`: flows/recipes/tiny.yaml) or its path."""
    path = Path(name_or_path).expanduser()
    if path.is_file() or path.suffix in (".yaml", ".yml") or "/" in name_or_path:
        return path
    shipped = RECIPES_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    raise RecipeError(f"no recipe named '{name_or_path}'; give a YAML path or one of: {', '.join(shipped_recipes())}")


def resolve_recipe(recipe: Recipe | dict | None, recipe_path: str | None, overrides: list[str] = ()) -> Recipe:
    """The recipe a flow run was given: the typed form (`recipe`, a Recipe or its JSON), or a shipped recipe's name or
    a YAML path (`recipe_path`), or the embedded default; then `key=value` overrides. RecipeError on any problem."""
    if recipe is not None and recipe_path:
        raise RecipeError("give either recipe (the form) or recipe_path (a name or YAML path), not both")
    if recipe is None:
        return load_recipe(recipe_file(recipe_path) if recipe_path else None, overrides)
    if isinstance(recipe, Recipe) and not overrides:
        return recipe
    if not isinstance(recipe, (Recipe, dict)):
        raise RecipeError(f"recipe must be a mapping of sections, not {type(recipe).__name__}")
    tree = recipe.model_dump(mode="json") if isinstance(recipe, Recipe) else json.loads(json.dumps(recipe))
    return recipe_from_tree(tree, overrides)


def recipe_from_tree(tree: dict[str, Any], overrides: list[str] = ()) -> Recipe:
    """A parsed recipe mapping plus overrides, validated; RecipeError on any problem."""
    for assignment in overrides:
        if not isinstance(assignment, str):
            raise RecipeError(f"override {assignment!r}: write it as a string key.path=value")
        apply_override(tree, assignment)
    try:
        return Recipe.model_validate(tree)
    except ValidationError as err:
        raise RecipeError(_one_line(err)) from None


def load_recipe(path: str | Path | None, overrides: list[str] = ()) -> Recipe:
    """The validated recipe (embedded defaults when `path` is None); RecipeError on any problem."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"recipe file '{path}' not found; pass an existing YAML file or a shipped recipe's name")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise RecipeError(f"recipe '{path}' is not valid YAML: {str(err).splitlines()[0]}") from None
        if not isinstance(tree, dict):
            raise RecipeError(f"recipe '{path}' must be a mapping of sections")
    return recipe_from_tree(tree, overrides)


def main() -> None:
    try:
        recipe = load_recipe(sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else None, sys.argv[2:])
    except RecipeError as err:
        sys.exit(f"recipe error: {err}")
    print(yaml.safe_dump(recipe.model_dump(), sort_keys=False))


if __name__ == "__main__":
    main()
