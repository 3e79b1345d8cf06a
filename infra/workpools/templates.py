"""The R1 work pools' base job templates (the JSON files beside this module), loaded and checked.

Prefect renders `job_configuration` with the values of `variables.properties`: a variable that no `{{ name }}`
placeholder uses is silently ignored (a deployment setting it changes nothing), and a placeholder that names no
variable makes the server refuse the template. Both are checked here, before anything is sent:

    python -c "from infra.workpools.templates import load_template; load_template('kubernetes-gpu.json')"
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect.utilities.templating import PlaceholderType, find_placeholders

TEMPLATES_DIR = Path(__file__).parent


class TemplateError(ValueError):
    """A base job template that Prefect would refuse or partly ignore; the message says what to fix."""


def placeholder_names(template: dict[str, Any]) -> set[str]:
    """Names of the `{{ name }}` placeholders in the template's job_configuration (`{{ a.b }}` names `a`)."""
    found = find_placeholders(template["job_configuration"])
    return {p.name.split(".")[0] for p in found if p.type is PlaceholderType.STANDARD}


def variable_names(template: dict[str, Any]) -> set[str]:
    return set(template["variables"].get("properties", {}))


def unreferenced_variables(template: dict[str, Any]) -> set[str]:
    """Variables that no placeholder uses: Prefect drops whatever a deployment sets for them."""
    return variable_names(template) - placeholder_names(template)


def undeclared_placeholders(template: dict[str, Any]) -> set[str]:
    """Placeholders that name no variable: the Prefect server refuses such a template."""
    return placeholder_names(template) - variable_names(template)


def check_template(template: Any, source: str) -> dict[str, Any]:
    """The template itself, or TemplateError naming the first thing to fix."""
    if not isinstance(template, dict) or not {"job_configuration", "variables"} <= template.keys():
        raise TemplateError(f"{source}: a base job template needs 'job_configuration' and 'variables' keys")
    if unused := unreferenced_variables(template):
        raise TemplateError(
            f"{source}: variables {sorted(unused)} are never used as {{{{ name }}}} in job_configuration"
        )
    if undeclared := undeclared_placeholders(template):
        raise TemplateError(f"{source}: placeholders {sorted(undeclared)} name no variable in variables.properties")
    return template


def load_template(path: str | Path) -> dict[str, Any]:
    """A template file (relative paths are taken from infra/workpools/), parsed and checked."""
    path = TEMPLATES_DIR / path
    try:
        template = json.loads(path.read_text())
    except FileNotFoundError:
        raise TemplateError(f"{path}: no such template file") from None
    except json.JSONDecodeError as err:
        raise TemplateError(f"{path}: not valid JSON ({err})") from None
    return check_template(template, str(path))
