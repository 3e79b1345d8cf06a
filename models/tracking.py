"""MLflow behind one small module: experiments, the run tree, params, plots, tables, UI links and the model registry.

A local SQLite database is created (MLflow's schema migrations) by one process at a time, under a lock file beside
it, so that two runs starting together on a fresh state folder both succeed.

The experiment is tagged as model training (`mlflow.experimentKind`); MLflow 3.17's UI picks its view from the
`workflowType` query of the page instead, so every link made here carries `workflowType=machine_learning`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import mlflow
from mlflow.tracking import MlflowClient

from models.stage_lock import FileLock
from models.storage import StorageConfig, mlflow_artifact_location, state_dir, tracking_uri

PACKAGES = (
    "torch",
    "transformers",
    "trl",
    "accelerate",
    "datasets",
    "tokenizers",
    "mlflow",
    "prefect",
    "reasoning-gym",
    "math-verify",
    "pydantic",
)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # what the UI's experiment-type selector writes
MODEL_TRAINING = "custom_model_development"  # shown as "Machine learning" (not "GenAI apps & agents")
UI_VIEW = "workflowType=machine_learning"  # the query that opens MLflow 3.17's UI on its model-training view
DESCRIPTION_TAG = "mlflow.note.content"  # a run's description: markdown at the top of its Overview tab
_prepared: set[str] = set()  # tracking URIs whose stores this process has opened


def client() -> MlflowClient:
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    if uri not in _prepared:
        prepare_store(uri)
        _prepared.add(uri)
    return MlflowClient()


def prepare_store(uri: str) -> None:
    """Open the tracking and registry stores of `uri` once; a SQLite database under `<db>.lock`, since MLflow runs its
    schema migrations unguarded when it finds the tables missing (two first users at once: one dies midway)."""
    if not uri.startswith("sqlite:///"):
        return
    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(database.with_name(f"{database.name}.lock"))
    lock.acquire()
    try:
        opened = MlflowClient(uri, registry_uri=uri)
        opened.search_experiments(max_results=1)
        opened.search_registered_models(max_results=1)
    finally:
        lock.release()


def ensure_experiment(name: str, storage: StorageConfig | None = None) -> str:
    """Experiment id of `name`, tagged as model training, created with an explicit artifact location when tracking is
    a local database (the state folder's mlartifacts) or the artifact store is S3 (s3://bucket/prefix/mlflow/<name>).
    An existing experiment keeps a kind someone chose in the UI; one that another run creates meanwhile is taken."""
    mlflow_client = client()
    found = mlflow_client.get_experiment_by_name(name)
    if found:
        if EXPERIMENT_KIND_TAG not in found.tags:
            mlflow_client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
        return found.experiment_id
    storage = (storage or StorageConfig()).effective()
    location = None
    if tracking_uri().startswith("sqlite:") or storage.is_s3:
        location = mlflow_artifact_location(storage, name)
    try:
        return mlflow_client.create_experiment(
            name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING}
        )
    except mlflow.exceptions.MlflowException as err:  # another run created it since we looked: take theirs
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return mlflow_client.get_experiment_by_name(name).experiment_id


def start_child_run(experiment_id: str, parent_run_id: str, name: str, tags: dict[str, str]) -> str:
    """A nested run under the pipeline's parent run; returns its id."""
    run = client().create_run(experiment_id, run_name=name, tags={"mlflow.parentRunId": parent_run_id, **tags})
    return run.info.run_id


def flat(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{'a': {'b': 1}} -> {'a.b': '1'}: nested config as MLflow params."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return out


def log_params(config: dict[str, Any], prefix: str = "config.") -> None:
    items = list(flat(config, prefix).items())
    for i in range(0, len(items), 100):
        mlflow.log_params(dict(items[i : i + 100]))


@contextlib.contextmanager
def without_trainer_params() -> Iterator[None]:
    """While active, transformers' MLflow callback logs no params (MLFLOW_MAX_LOG_PARAMS=0): the stage's resolved
    settings are its params (`config.*`, logged once by the stage), TRL's full arguments an artifact
    (log_trainer_settings), so no knob is a param twice."""
    before = os.environ.get("MLFLOW_MAX_LOG_PARAMS")
    os.environ["MLFLOW_MAX_LOG_PARAMS"] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MLFLOW_MAX_LOG_PARAMS", None)
        else:
            os.environ["MLFLOW_MAX_LOG_PARAMS"] = before


def log_trainer_settings(args, model) -> None:
    """Every TrainingArguments field TRL runs with and the model's config, as JSON artifacts of the active run
    (trainer/training_args.json, trainer/model_config.json), where a run has one."""
    if mlflow.active_run() is None:
        return
    mlflow.log_dict(json.loads(args.to_json_string()), "trainer/training_args.json")
    mlflow.log_dict(model.config.to_dict(), "trainer/model_config.json")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def log_curve_png(history: list[dict], keys: list[str], artifact: str, title: str) -> None:
    """One PNG of the given step series from a trainer's log history, into the active run."""
    from models.plots import close, curves_figure

    fig = curves_figure({key: [(h["step"], h[key]) for h in history if key in h] for key in keys}, title)
    mlflow.log_figure(fig, artifact)
    close(fig)


def run_url(ui_base: str, experiment_id: str, run_id: str, artifact: str | None = None) -> str:
    """The MLflow UI page of a run (its Overview tab), or of one of its artifacts opened in the Artifacts tab."""
    page = f"experiments/{experiment_id}/runs/{run_id}" + (f"/artifactPath/{artifact}" if artifact else "")
    return f"{ui_base.rstrip('/')}/#/{page}?{UI_VIEW}"


def compare_url(ui_base: str, experiment_id: str, run_ids: list[str]) -> str:
    """MLflow's compare-runs page of `run_ids` (params, metrics and charts side by side)."""
    runs, experiments = quote(json.dumps(run_ids)), quote(json.dumps([experiment_id]))
    return f"{ui_base.rstrip('/')}/#/compare-runs?runs={runs}&experiments={experiments}&{UI_VIEW}"


def artifact_image(run_id: str, path: str, title: str) -> str:
    """Markdown showing an image artifact of a run inline in a run description (the MLflow server serves it at
    get-artifact, relative to the UI's own address)."""
    return f"![{title}](get-artifact?path={quote(path)}&run_uuid={run_id})"


def set_description(run_id: str, markdown: str) -> None:
    client().set_tag(run_id, DESCRIPTION_TAG, markdown)


def _version_of(uri: str) -> tuple[str, str]:
    """(name, version) of `models:/<name>@<alias>` (the alias resolved now) or `models:/<name>/<version>`."""
    name, _, rest = uri.removeprefix("models:/").partition("/")
    if "@" in name:
        name, alias = name.split("@", 1)
        return name, str(client().get_model_version_by_alias(name, alias).version)
    return name, rest


def registered_model_dir(uri: str) -> Path:
    """A Hugging Face folder (weights, config, tokenizer: what models.factory loads) of `models:/<name>@<alias>` or
    `models:/<name>/<version>`, downloaded once per version into the state folder (an alias is resolved first, so a
    moved alias never serves a stale copy). An MLflow transformers model is opened into its `huggingface` view;
    a version registered as plain files is that folder itself."""
    name, version = _version_of(uri)
    folder = state_dir() / "registry" / name / version
    if not folder.is_dir():
        partial = _attempt_folder(folder)
        mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(partial))
        _move_into_place(partial, folder)
    return folder if (folder / "config.json").is_file() else huggingface_view(folder)


def huggingface_view(mlflow_model: Path) -> Path:
    """`<model>/huggingface/`: links to the weights (model/) and tokenizer (components/tokenizer/) of a saved MLflow
    transformers model, side by side as from_pretrained expects them."""
    view = mlflow_model / "huggingface"
    if not view.is_dir():
        parts = [mlflow_model / "model", mlflow_model / "components" / "tokenizer"]
        if not parts[0].is_dir():
            raise ValueError(f"{mlflow_model}: neither a Hugging Face folder nor an MLflow transformers model")
        partial = _attempt_folder(view)
        for part in (p for p in parts if p.is_dir()):
            for file in part.iterdir():
                (partial / file.name).symlink_to(file.resolve())
        _move_into_place(partial, view)
    return view


def _attempt_folder(final: Path) -> Path:
    """A new, empty `<final>.partial-<attempt>` beside `final`: two processes never fill the same one."""
    from models.stores import attempt_id

    partial = final.with_name(f"{final.name}.partial-{attempt_id()}")
    partial.mkdir(parents=True)
    return partial


def _move_into_place(partial: Path, final: Path) -> None:
    """Rename `partial` to `final` in one step; if another process got there first, theirs stays, ours goes."""
    try:
        partial.rename(final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(partial, ignore_errors=True)


def example_prompt(prompt_style: str) -> str | list[dict]:
    """A prompt in the recipe's format, the registered model's input example."""
    from models.data import render_prompt

    return render_prompt("4+3-2" if prompt_style == "compact" else "What is 4 + 3 - 2?", prompt_style)


def save_generation_model(folder: Path, out: Path, prompt: str | list[dict], max_new_tokens: int) -> None:
    """The Hugging Face folder `folder` as an MLflow transformers model at `out`: a text-generation pipeline with a
    signature (a prompt string in, the completion out; generation settings as params, greedy by default) and the
    prompt as input example, loadable by mlflow.pyfunc.load_model and mlflow.transformers.load_model."""
    import mlflow.transformers
    import torch
    import transformers
    from mlflow.models import infer_signature

    from models.factory import load_model

    model, tokenizer = load_model(str(folder))
    if not isinstance(prompt, str):  # chat messages: the text the model sees
        prompt = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    params = {"max_new_tokens": max_new_tokens, "do_sample": False, "temperature": 1.0, "top_p": 1.0}
    mlflow.transformers.save_model(
        transformers.pipeline("text-generation", model=model, tokenizer=tokenizer),
        str(out),
        signature=infer_signature([prompt], ["<think>...</think><answer>...</answer>"], params=params),
        input_example=[prompt],
        model_config={"return_full_text": False},
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"transformers=={transformers.__version__}"],
    )
