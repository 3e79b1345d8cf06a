"""What a flow run was given, checked the same way whether it comes from the CLI or a deployment (the Prefect UI's
Run button, a schedule, the API): a recipe from the typed form, a shipped recipe's name or a YAML path, plus
`key=value` overrides. A bad parameter ends the run at once as Failed with the CLI's one-line error. (Prefect is
imported inside the functions that need it: the CLI's --check stays quick.)
"""

from __future__ import annotations

import json
import os
import re

from models.config import Recipe
from models.factory import source_problem
from models.recipe import RecipeError, resolve_recipe


class ParameterError(ValueError):
    """A flow parameter that cannot run; str() is `<kind> error: <what to fix>`, the CLI's line."""


def model_problem(model: str) -> str | None:
    """Why MODEL cannot be evaluated (checked before anything starts), or None."""
    if not model or not model.strip():
        return "no model given; pass models:/<name>@<alias>, models:/<name>/<version>, a model folder or a hub id"
    if model.startswith("models:/"):
        name = model.removeprefix("models:/")
        return (
            None
            if re.fullmatch(r"[^/@]+(@[\w-]+|/\d+)", name)
            else f"'{model}': write models:/<name>@<alias> or models:/<name>/<version>"
        )
    return source_problem(model)


def registry_problem(model: str) -> str | None:
    """Why a models:/ URI names no version in the MLflow registry (unknown name, alias or version), or None; asked
    before anything is downloaded or started. Other sources: None (model_problem checks them)."""
    if not model.startswith("models:/"):
        return None
    from mlflow.exceptions import MlflowException

    from models.storage import tracking_uri
    from models.tracking import client

    uri = tracking_uri()
    db = uri.removeprefix("sqlite:///")
    fix = "run the pipeline to register one, check the name and alias in the MLflow UI (Models) or MLFLOW_TRACKING_URI"
    if uri.startswith("sqlite:///") and not os.path.isfile(db):
        return f"'{model}' is not registered: the tracking store {uri} does not exist yet; {fix}"
    name, _, version = model.removeprefix("models:/").partition("/")
    name, _, alias = name.partition("@")
    try:
        client().get_model_version_by_alias(name, alias) if alias else client().get_model_version(name, version)
    except MlflowException as err:
        return f"'{model}' is not in the registry at {uri} ({err.message.splitlines()[0]}); {fix}"
    return None


def data_problem(recipe: Recipe) -> str | None:
    """Why the recipe's data cannot be used (models/data_checks.py), checked before any stage starts, or None."""
    from models.data_checks import check_data
    from models.problems import DataError

    try:
        check_data(recipe)
    except DataError as err:
        return str(err)
    return None


def storage_problem(recipe: Recipe) -> str | None:
    """Why the recipe's artifact store cannot be used (checked before anything starts), or None."""
    from models.storage import StorageError, prepared_store

    try:
        prepared_store(recipe.storage)
    except StorageError as err:
        return str(err)
    return None


def deployment_problem(recipe: Recipe) -> str | None:
    """Why the training stages cannot be sent to `launch.stage_deployment` (no server, no such deployment), or None."""
    name = recipe.launch.stage_deployment
    if name is None:
        return None
    if not os.environ.get("PREFECT_API_URL"):
        return f"launch.stage_deployment={name} needs a Prefect server: export PREFECT_API_URL (make up starts one)"
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as prefect_client:
            prefect_client.read_deployment_by_name(name)
    except ObjectNotFound:
        where = os.environ["PREFECT_API_URL"]
        return f"no deployment '{name}' on {where}; apply it with python -m infra.deploy (--gpu for the GPU pool's)"
    return None


def training_problem(recipe: Recipe) -> str | None:
    """Why the training stages cannot run here (TRL's own config checks, precision, the reward model), or None."""
    from models.preflight import training_problem as problem

    return problem(recipe)


def environment_problem(recipe: Recipe | None = None) -> str | None:
    """Why this machine cannot hold a run (state folder, tracking server; models/preflight.py), or None."""
    from models.preflight import state_problem, tracking_problem

    return state_problem() or tracking_problem()


def checked_recipe(
    recipe: Recipe | dict | None,
    recipe_path: str | None,
    overrides: list[str] | None,
    training: bool = True,
    model: str | None = None,
) -> Recipe:
    """The run's recipe with its data, training settings (`training`), environment, the model to evaluate (`model`),
    stage deployment and storage checked, in that order (the storage check is the first to write: the artifact
    folder); ParameterError (one line) on the first problem."""
    try:
        resolved = resolve_recipe(recipe, recipe_path, list(overrides or []))
    except RecipeError as err:
        raise ParameterError(f"recipe error: {err}") from None
    checks = (
        [("data", data_problem)] + [("recipe", training_problem)] * training + [("environment", environment_problem)]
    )
    if model is not None:
        checks += [("model", lambda _: model_problem(model) or registry_problem(model))]
    checks += [("launch", deployment_problem), ("storage", storage_problem)]
    for kind, problem in checks:
        why = problem(resolved)
        if why:
            raise ParameterError(f"{kind} error: {why}")
    return resolved


def refused(err: ParameterError):
    """The Failed state a flow returns for a bad parameter: its message is the one line, with no traceback."""
    from prefect import get_run_logger
    from prefect.states import Failed

    get_run_logger().error(str(err))
    return Failed(message=str(err))


def run_name(prefix: str = "") -> str:
    """`<recipe> <changed keys>`: the recipe's name (or file) and what the run changes, for the flow-run name."""
    from prefect.runtime import flow_run

    params = flow_run.parameters
    recipe, path, overrides = params.get("recipe"), params.get("recipe_path"), list(params.get("overrides") or [])
    name = str(path or "tiny-r1")
    if isinstance(recipe, (dict, Recipe)):
        tree = recipe.model_dump(mode="json") if isinstance(recipe, Recipe) else recipe
        name = str(tree.get("name") or "tiny-r1")
        overrides = changed_from_default(tree) + overrides
    names = [o.split("=", 1)[1] for o in overrides if o.startswith("name=")]
    name = names[-1] if names else name
    overrides = [o for o in overrides if not o.startswith("name=")]
    shown = " ".join(_shown(o) for o in overrides[:4])
    more = f" +{len(overrides) - 4}" if len(overrides) > 4 else ""
    return f"{prefix}{name}{' ' + shown if shown else ''}{more}"[:120]


SECRET_LIKE = re.compile(r"secret|token|password|credential|access_key|://[^/\s]*@", re.IGNORECASE)
URL_CREDENTIALS = re.compile(r"(?<=://)[^/\s@]+@")


def masked(text: str) -> str:
    """`text` with the credentials of every URL in it hidden (`http://user:pass@host` -> `http://***@host`): the
    one masking of what is printed, logged or used as a name."""
    return URL_CREDENTIALS.sub("***@", text)


def credential_free(url: str) -> str:
    """`url` without its `user:pass@` part (a link to show, e.g. the Prefect UI's)."""
    return URL_CREDENTIALS.sub("", url)


def _shown(override: str) -> str:
    """An override as the run name shows it: long values cut, anything that looks like a secret masked."""
    key, sep, value = override.partition("=")
    return f"{key}{sep}***" if SECRET_LIKE.search(override) else f"{key}{sep}{value[:24]}"


def changed_from_default(tree: dict) -> list[str]:
    """`key.path=value` for each leaf of a recipe mapping that differs from the embedded default's."""
    default = _leaves(Recipe().model_dump(mode="json"))
    return [f"{k}={json.dumps(v)}" for k, v in _leaves(tree).items() if k not in ("name",) and default.get(k) != v]


def _leaves(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
