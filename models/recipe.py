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
    if not sep or not key.strip():
        raise RecipeError(f"override '{assignment}': write it as key.path=value")
    *parents, leaf = key.strip().split(".")
    if not all(part.strip() for part in (*parents, leaf)):
        raise RecipeError(f"override '{assignment}': '{key.strip()}' has an empty part; write it as key.path=value")
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


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last one without a word)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise RecipeError(f"key '{key}' is given twice (lines {seen[key]} and {line}); keep one of them")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's error as one line that keeps where it is: `line L, column C: <problem> (<context>)`."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context = getattr(err, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return f"{where}{problem}{f' ({context})' if context else ''}"


def read_recipe_tree(path: Path) -> dict[str, Any]:
    """A recipe file's mapping; RecipeError for a missing, binary, empty or malformed file or a duplicated key."""
    if not path.is_file():
        raise RecipeError(f"recipe file '{path}' not found; pass an existing YAML file or a shipped recipe's name")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        why = f"byte {err.start} is not UTF-8"
        raise RecipeError(f"recipe '{path}' is not a text file ({why}); give a YAML recipe") from None
    if "\0" in text:
        raise RecipeError(f"recipe '{path}' is not a text file (it holds NUL bytes); give a YAML recipe")
    try:
        tree = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise RecipeError(f"recipe '{path}' is not valid YAML: {_yaml_problem(err)}; fix it there") from None
    except RecipeError as err:
        raise RecipeError(f"recipe '{path}': {err}") from None
    if tree is None:
        raise RecipeError(
            f"recipe '{path}' is empty; write at least one section (see flows/recipes/tiny.yaml) or omit --recipe "
            "for the embedded default"
        )
    if not isinstance(tree, dict):
        raise RecipeError(f"recipe '{path}' must be a mapping of sections; write `section: ...` lines (see tiny.yaml)")
    return tree


def load_recipe(path: str | Path | None, overrides: list[str] = ()) -> Recipe:
    """The validated recipe (embedded defaults when `path` is None); RecipeError on any problem."""
    tree = read_recipe_tree(Path(path)) if path is not None else {}
    return recipe_from_tree(tree, overrides)


def main() -> None:
    try:
        recipe = load_recipe(sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else None, sys.argv[2:])
    except RecipeError as err:
        sys.exit(f"recipe error: {err}")
    print(yaml.safe_dump(recipe.model_dump(), sort_keys=False))


if __name__ == "__main__":
    main()
