"""Command line of the pipeline: validate the recipe first (one line and exit 2 on error, nothing written), then
run the flow on the local state folder and print a summary and how to open the Prefect and MLflow UIs.

    python -m flows.cli [--recipe flows/recipes/tiny.yaml] [key=value ...]
    python -m flows.cli --check --recipe my.yaml          # validate only
    python -m flows.cli stage final_rl --from-run <parent run id> [--recipe my.yaml] [--in-process] [key=value ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from flows.embedded_api import start_embedded_api
from flows.parameters import (
    credential_free,
    data_problem,
    deployment_problem,
    environment_problem,
    masked,
    model_problem,
    registry_problem,
    storage_problem,
    training_problem,
)
from models.config import Recipe
from models.recipe import RecipeError, load_recipe
from models.storage import StorageError, default_tracking_uri, state_dir, tracking_uri


def configure_environment() -> None:
    """Defaults for an embedded run; variables the user already set (PREFECT_API_URL, PREFECT_HOME,
    MLFLOW_TRACKING_URI, R1_STATE_DIR) win."""
    state = state_dir()
    os.environ["R1_STATE_DIR"] = str(state)
    os.environ.setdefault("PREFECT_HOME", str(state / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ.setdefault("MLFLOW_TRACKING_URI", default_tracking_uri())
    if os.environ.get("PREFECT_API_URL") and not os.environ.get("PREFECT_UI_URL"):  # Prefect's "View at" links
        os.environ["PREFECT_UI_URL"] = credential_free(os.environ["PREFECT_API_URL"]).removesuffix("/api")
    state.mkdir(parents=True, exist_ok=True)


def ui_help() -> str:
    prefect_home = os.environ["PREFECT_HOME"]
    lines = [f"State folder: {state_dir()}"]
    if os.environ.get("PREFECT_API_URL"):
        lines.append(f"Prefect UI: {credential_free(os.environ['PREFECT_API_URL']).removesuffix('/api')}")
    else:
        lines.append(
            f"Prefect UI: PREFECT_HOME={prefect_home} .venv/bin/prefect server start   -> http://127.0.0.1:4200"
        )
    if tracking_uri().startswith("sqlite:"):
        lines.append(f"MLflow UI:  .venv/bin/mlflow ui --backend-store-uri {tracking_uri()}   -> http://127.0.0.1:5000")
    else:
        lines.append(f"MLflow UI:  {masked(tracking_uri())}")
    return "\n".join(lines)


def evaluate(model: str, recipe: Recipe) -> int:
    from flows.evaluate import r1_evaluate

    result = r1_evaluate(model, recipe)
    for key, value in result["metrics"].items():
        print(f"{key:32s} {value:.4f}")
    print(ui_help())
    return 0


def loaded_recipe(path: str | None, overrides: list[str]) -> Recipe | None:
    """The validated recipe, or None after printing its one-line error."""
    try:
        return load_recipe(path or None, overrides)
    except RecipeError as err:
        print(f"recipe error: {err}", file=sys.stderr)
        return None


def state_setting_problem() -> str | None:
    """Why R1_STATE_DIR names no folder (it is empty), checked before anything reads it, or None."""
    try:
        state_dir()
    except StorageError as err:
        return str(err)
    return None


def refused(kind: str, problem: str | None) -> bool:
    """Print a problem as one line `<kind> error: ...`; whether there was one."""
    if problem:
        print(f"{kind} error: {problem}", file=sys.stderr)
    return bool(problem)


def environment_refused(recipe: Recipe, model: str | None = None) -> bool:
    """Check the machine (state folder, tracking server, Prefect API), the model to evaluate in the registry, the
    stage deployment and the storage, printing the first problem; only then set up the run's environment (so a
    refused run leaves the state folder as it was). Whether it was refused."""
    from models.preflight import prefect_problem

    if refused("environment", environment_problem(recipe) or prefect_problem()):
        return True
    if model is not None and refused("model", registry_problem(model)):
        return True
    if refused("launch", deployment_problem(recipe)) or refused("storage", storage_problem(recipe)):
        return True
    configure_environment()
    return False


def stage_main(argv: list[str]) -> int:
    """`r1-run stage NAME --from-run RUN`: one stage from the records of an earlier pipeline run (flows/one_stage)."""
    from models.stages import PIPELINE

    parser = argparse.ArgumentParser(prog="r1-run stage", description="Run one stage from an earlier pipeline run.")
    parser.add_argument("name", choices=PIPELINE, help="the stage to run")
    parser.add_argument("--from-run", required=True, help="MLflow id of the pipeline (parent) run to take inputs from")
    parser.add_argument("--recipe", default=None, help="recipe YAML (default: the embedded tiny pipeline)")
    parser.add_argument("--in-process", action="store_true", help="run in this process (default: its own process)")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides")
    args = parser.parse_intermixed_args(argv)
    if refused("environment", state_setting_problem()):
        return 2
    recipe = loaded_recipe(args.recipe, args.overrides)
    if recipe is None or refused("data", data_problem(recipe)) or refused("recipe", training_problem(recipe)):
        return 2
    if environment_refused(recipe):
        return 2
    start_embedded_api()
    from mlflow.exceptions import MlflowException

    from flows.one_stage import run_one_stage

    try:
        record = run_one_stage(args.name, recipe, args.from_run, args.in_process)
    except (ValueError, MlflowException) as err:
        print(f"stage error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"{args.name}: {record.uri} (fingerprint {record.fingerprint}, MLflow run {record.mlflow_run_id})")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["stage"]:
        return stage_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default=None, help="recipe YAML (default: the embedded tiny pipeline)")
    parser.add_argument("--check", action="store_true", help="validate the recipe and exit")
    parser.add_argument("--evaluate", metavar="MODEL", help="only evaluate MODEL (models:/name@alias, folder, hub id)")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. final_rl.trl.max_steps=80")
    args = parser.parse_args(argv)
    if refused("environment", state_setting_problem()):
        return 2
    recipe = loaded_recipe(args.recipe, args.overrides)
    model = model_problem(args.evaluate) if args.evaluate is not None else None
    if recipe is None or refused("model", model) or refused("data", data_problem(recipe)):
        return 2
    if args.evaluate is None and refused("recipe", training_problem(recipe)):
        return 2
    if args.check:
        print(f"recipe ok: {recipe.name}")
        return 0
    if environment_refused(recipe, args.evaluate):
        return 2
    start_embedded_api()
    if args.evaluate is not None:
        return evaluate(args.evaluate, recipe)
    from flows.pipeline import r1_pipeline

    started = time.time()
    result = r1_pipeline(recipe)
    ui = "http://127.0.0.1:5000" if tracking_uri().startswith("sqlite:") else masked(tracking_uri())
    print("\n" + result["summary"].replace("http://127.0.0.1:5000", ui))
    print(f"Pipeline finished in {time.time() - started:.0f} s.\n" + ui_help())
    return 0


if __name__ == "__main__":
    sys.exit(main())
