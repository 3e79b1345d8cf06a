"""The promotion gate: the registered final model becomes `champion` only if no training stage of its pipeline run
raised an alarm, its held-out pass@1 beats the base model's on the same evaluation set, reaches the recipe's
`model.promotion_floor` (if set) and beats the current champion's. A champion measured on another set is
re-evaluated on this one first. Otherwise it stays `candidate`, and the one-line decision names every reason; it is
logged as the parent run's and the version's `promotion` tag.

Registry integrity: a version is registered only from a stamped output whose files match their checksums, its MLflow
model counts as logged only once its manifest (every file and its size, logged after the files) is there and every
file it lists is whole, and an alias (`candidate`, `champion`) is set last, on a version whose files are whole: a kill
at any moment of a registration leaves no alias on an incomplete model.

A failed gate is retried only when the tracking server or storage could not be reached; a deterministic error
(another evaluation set, a missing version) fails at once.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from prefect import get_run_logger, task

from models.alarms import ALARMS
from models.config import Recipe
from models.factory import model_record
from models.records import Artifact
from models.stages import trained_stages
from models.storage import StorageConfig, artifact_store
from models.tracking import client, registered_model_dir
from tasks.pipeline_run import PipelineRun
from tasks.stages import evaluate_in_tree

MANIFEST = "model.manifest.json"  # beside the run's `model` artifact: {relative path: size}, logged last


def verified_output(final: Artifact, storage: StorageConfig) -> Path:
    """The local folder of the model to register, every file checked against its stamp's sha256. A folder in the
    store must be a published (stamped) output: an unstamped one is a stage's unfinished work and is refused in one
    line. A folder outside the store (a base model) has no stamp and is taken as it is."""
    store = artifact_store(storage)
    in_store = final.uri.removeprefix("file://").startswith(store.root_uri.rstrip("/") + "/")
    if in_store and store.read_stamp(final.uri) is None:
        raise ValueError(f"{final.uri} has no stamp: only a published stage output can be registered")
    return store.local_copy(final, full=True)


def model_manifest(folder: Path) -> dict[str, int]:
    """{path under `model/`: size} of every file of a saved MLflow model folder."""
    return {f"model/{p.relative_to(folder)}": p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def log_manifest(run_id: str, folder: Path) -> None:
    """The manifest of the model just logged from `folder`: logged after its files, it marks them complete."""
    client().log_dict(run_id, model_manifest(folder), MANIFEST)


def _logged_files(run_id: str, path: str) -> dict[str, int]:
    mlflow_client, found = client(), {}
    for info in mlflow_client.list_artifacts(run_id, path):
        found.update(_logged_files(run_id, info.path) if info.is_dir else {info.path: info.file_size})
    return found


def model_files_complete(run_id: str) -> bool:
    """Whether the `model` artifact of `run_id` is whole: its manifest is there and lists files that all are, with
    their sizes."""
    if MANIFEST not in _logged_files(run_id, ""):
        return False
    with tempfile.TemporaryDirectory(prefix="r1-manifest-") as tmp:
        manifest = json.loads(Path(client().download_artifacts(run_id, MANIFEST, tmp)).read_text())
    logged = _logged_files(run_id, "model")
    return all(logged.get(path) == size for path, size in manifest.items())


def set_alias(name: str, alias: str, version) -> None:
    """Point `alias` at a version whose model files are whole (registry integrity, module docstring)."""
    if not model_files_complete(version.run_id):
        raise RuntimeError(f"{name} version {version.version}: its model files are incomplete; @{alias} not set")
    client().set_registered_model_alias(name, alias, version.version)


def evaluation_summary(evaluation: Artifact, pipeline: PipelineRun) -> tuple[str, float]:
    """(evaluation set id, pass@1) of a finished evaluation."""
    folder = pipeline.store().local_copy(evaluation)
    metrics = json.loads((folder / "metrics.json").read_text())
    return json.loads((folder / "eval_set.json").read_text())["id"], metrics["eval/pass_at_1"]


def raised_alarms(stage_runs: dict[str, str]) -> list[str]:
    """`<stage>: <alarm>` for every alarm a training stage's run raised (its `alarm/<name>` metric is 1; a cached
    stage's link run points at the run that trained it)."""
    mlflow_client, raised = client(), []
    for stage in (s.name for s in trained_stages() if s.name in stage_runs):
        run = mlflow_client.get_run(stage_runs[stage])
        metrics = mlflow_client.get_run(run.data.tags.get("origin_run_id", run.info.run_id)).data.metrics
        raised += [f"{stage}: {name}" for name in ALARMS if metrics.get(f"alarm/{name}") == 1.0]
    return raised


def gate_failures(score: float, base_score: float, floor: float | None, alarms: list[str]) -> list[str]:
    """Why a model with held-out pass@1 `score` may not become champion, whoever the champion is (empty: it may)."""
    reasons = []
    if alarms:
        reasons.append(f"{len(alarms)} alarm{'s' * (len(alarms) > 1)} raised ({'; '.join(alarms)})")
    if score <= base_score:
        reasons.append(f"pass@1 {score:.3f} does not beat the base model's {base_score:.3f} on the same held-out set")
    if floor is not None and score < floor:
        reasons.append(f"pass@1 {score:.3f} is below the recipe's floor model.promotion_floor={floor:g}")
    return reasons


def _champion_on(recipe: Recipe, version, eval_set: str, pipeline: PipelineRun) -> float:
    """The champion's pass@1 on `eval_set`: its recorded score if made there, else a fresh evaluation."""
    if version.tags.get("eval_set") == eval_set:
        return float(version.tags["pass_at_1"])
    folder = registered_model_dir(f"models:/{recipe.model.registered_name}/{version.version}")
    model = model_record(str(folder), "champion")
    evaluation, _ = evaluate_in_tree("champion", recipe, model, pipeline)
    return evaluation_summary(evaluation, pipeline)[1]


def _current_champion(name: str):
    try:
        return client().get_model_version_by_alias(name, "champion")
    except Exception:  # noqa: BLE001 - MLflow raises a generic RestException when the alias is unset
        return None


def _against_champion(recipe: Recipe, version: str, score: float, eval_set: str, pipeline: PipelineRun):
    """(promoted, why) of a model that passed the gate's own rules, against the current champion."""
    champion = _current_champion(recipe.model.registered_name)
    if champion is None:
        return True, f"first champion (pass@1 {score:.3f})"
    if champion.version == version:
        return True, f"already champion (pass@1 {score:.3f})"
    best = _champion_on(recipe, champion, eval_set, pipeline)
    verdict = ">" if score > best else "<="
    why = f"pass@1 {score:.3f} {verdict} champion v{champion.version}'s {best:.3f} on the same held-out set"
    return score > best, why


def transient_failure(task, task_run, state) -> bool:
    """Prefect retry condition: retry only an error a new attempt can cure (the server or storage unreachable)."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, ConnectionError | TimeoutError)


@task(retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=transient_failure)
def promote(
    recipe: Recipe,
    version: str,
    evaluation: Artifact,
    base_evaluation: Artifact,
    stage_runs: dict[str, str],
    pipeline: PipelineRun,
) -> str:
    """Set `champion` on `version` if it passes the gate (module docstring); returns the one-line decision, also
    the parent run's and the version's `promotion` tag. `stage_runs`: stage -> its run in this pipeline's tree."""
    mlflow_client, name = client(), recipe.model.registered_name
    eval_set, score = evaluation_summary(evaluation, pipeline)
    base_set, base_score = evaluation_summary(base_evaluation, pipeline)
    if base_set != eval_set:
        raise ValueError(f"promotion: the base model was evaluated on set {base_set}, the candidate on {eval_set}")
    mlflow_client.set_model_version_tag(name, version, "eval_set", eval_set)
    mlflow_client.set_model_version_tag(name, version, "pass_at_1", f"{score:.6f}")
    failures = gate_failures(score, base_score, recipe.model.promotion_floor, raised_alarms(stage_runs))
    if failures:
        champion = _current_champion(name)
        kept = " (it keeps the champion alias an earlier gate set)" if champion and champion.version == version else ""
        promoted, why = False, "; ".join(failures) + kept
    else:
        promoted, why = _against_champion(recipe, version, score, eval_set, pipeline)
    decision = f"{'promoted to champion' if promoted else 'stays candidate'}: {why}"
    if promoted:
        set_alias(name, "champion", mlflow_client.get_model_version(name, version))
    mlflow_client.set_model_version_tag(name, version, "promotion", decision)
    mlflow_client.set_tag(pipeline.parent_run_id, "promotion", decision)
    get_run_logger().info("version %s %s", version, decision)
    return decision
