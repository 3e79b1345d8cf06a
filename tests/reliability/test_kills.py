"""kill -9 at chosen points of every stage, then re-run (issue 15, item 1): the tiny pipeline as a subprocess on its
own state folder (MLflow on SQLite, a real Prefect server), killed once per point of kill_harness.KILL_POINTS (each
re-run goes one kill further), then run to the end; and an uninterrupted run with the same seed to compare with.

Deterministic on the CPU, and compared by fingerprint: every stage output (SFT and GRPO resumed from a checkpoint
included, tests/models/test_resume.py) and every evaluation.

    .venv/bin/python -m pytest -q -m reliability tests/reliability/test_kills.py
"""

from __future__ import annotations

import json
import logging
import random

import pytest
from kill_harness import CHECKPOINT_EVERY, KILL_POINTS, NAME, Pipeline, Watch, resumed_from

from models.stages import PIPELINE

pytestmark = [pytest.mark.slow, pytest.mark.reliability("kill")]
SEED = 15
log = logging.getLogger(__name__)


def stamps(state) -> dict[str, tuple[int, str]]:
    """Every stamped output in a state folder: stamp path (relative) -> (mtime_ns, fingerprint)."""
    found = {}
    for stamp in (state / "artifacts" / NAME).glob("*/*/_fingerprint.json"):
        found[str(stamp.relative_to(state))] = (
            stamp.stat().st_mtime_ns,
            json.loads(stamp.read_text())["record"]["fingerprint"],
        )
    return found


@pytest.fixture(scope="module")
def reference(prefect_api, tmp_path_factory):
    """An uninterrupted run with the same seed: its state folder."""
    pipeline = Pipeline(tmp_path_factory.mktemp("reference") / "state", prefect_api)
    attempt = pipeline.run()
    assert attempt.returncode == 0, attempt.text()[-3000:]
    return pipeline.state


@pytest.fixture(scope="module")
def killed(prefect_api, tmp_path_factory, reference):
    """The pipeline killed once at every point, then run to the end: (pipeline, stamps after each attempt)."""
    pipeline, rng, after = Pipeline(tmp_path_factory.mktemp("killed") / "state", prefect_api), random.Random(SEED), []
    for point in KILL_POINTS:
        attempt = pipeline.run_and_kill(point, rng)
        log.warning(
            "killed %s (%s, pid %d) at %s + %.2f s: checkpoints %s, stamped %s, exit %s",
            point.target, point.stage, attempt.killed_pid, point.name, attempt.delay_s,
            attempt.checkpoints_at_kill, attempt.stamped_at_kill, attempt.returncode,
        )  # fmt: skip
        after.append(stamps(pipeline.state))
    final = pipeline.run()
    assert final.returncode == 0, final.text()[-3000:]
    after.append(stamps(pipeline.state))
    return pipeline, after


def attempt_at(pipeline: Pipeline, name: str):
    """(index, attempt) of the kill at point `name`."""
    return next((i, a) for i, a in enumerate(pipeline.attempts) if a.point == name)


def test_every_kill_landed_where_it_was_aimed(killed):
    pipeline, _ = killed
    by_point = {a.point: a for a in pipeline.attempts if a.point}
    assert by_point["data build"].checkpoints_at_kill == {}  # before the first step
    assert any(by_point["mid-training"].checkpoints_at_kill.values())  # after a checkpoint
    assert by_point["rejection sampling published"].stamped_at_kill  # published, the flow not yet told
    assert all(a.returncode != 0 for a in by_point.values())


CONTENT = ("model.safetensors", "data.jsonl", "metrics.json", "per_prompt.jsonl")  # not spec.json: it names paths


def contents(state) -> dict[str, list[str]]:
    """stage -> the sorted sha256s of its outputs' content files (a stamp's fingerprint covers spec.json too, which
    names the state folder, so it differs between two folders)."""
    stages: dict[str, list[str]] = {}
    for stamp in (state / "artifacts" / NAME).glob("*/*/_fingerprint.json"):
        files = json.loads(stamp.read_text())["files"]
        digest = ",".join(files[name]["sha256"] for name in CONTENT if name in files)
        stages.setdefault(stamp.parent.parent.name, []).append(digest)
    return {stage: sorted(digests) for stage, digests in stages.items()}


def test_the_rerun_completes_with_the_uninterrupted_weights_data_and_metrics(killed, reference):
    pipeline, _ = killed
    assert pipeline.attempts[-1].returncode == 0
    assert contents(pipeline.state) == contents(reference)


def test_no_finished_stage_is_redone(killed):
    """Every output stamped before a kill is untouched to the end; the last run takes every stage from the cache."""
    pipeline, after = killed
    for earlier in after[:-1]:
        for path, (mtime, fingerprint) in earlier.items():
            assert after[-1][path] == (mtime, fingerprint), path
    last = pipeline.attempts[-1].text()
    assert [s for s in PIPELINE if f"Task run '{s}' - Finished in state Cached" not in last] == []


def test_the_killed_training_stage_lost_at_most_one_checkpoint_interval(killed):
    pipeline, _ = killed
    index, attempt = attempt_at(pipeline, "mid-training")
    complete = [step for step, done in attempt.checkpoints_at_kill.items() if done]
    resumed = resumed_from(pipeline.attempts[index + 1].text(), "reasoning_rl")
    assert resumed == max(complete)
    steps_at_kill = max(attempt.checkpoints_at_kill)
    assert steps_at_kill - resumed <= CHECKPOINT_EVERY


def test_a_checkpoint_killed_while_saving_is_dropped_and_the_stage_redone(killed):
    pipeline, _ = killed
    index, attempt = attempt_at(pipeline, "saving a checkpoint")
    rerun = pipeline.attempts[index + 1].text()
    if any(not done for done in attempt.checkpoints_at_kill.values()):  # the kill landed inside the save
        assert "removing incomplete checkpoint" in rerun
    assert resumed_from(rerun, "supervised_merge") in (None, *(s for s, d in attempt.checkpoints_at_kill.items() if d))


def test_a_stamped_output_is_reused_not_recomputed(killed):
    pipeline, after = killed
    index, _ = attempt_at(pipeline, "rejection sampling published")
    assert "rejection_sampling: taking the output an earlier attempt published" in pipeline.attempts[index + 1].text()
    published = {p: v for p, v in after[index].items() if "/rejection_sampling/" in p}
    assert len(published) == 1 and all(after[-1][p] == v for p, v in published.items())


def test_no_stage_process_outlives_its_flow(killed):
    pipeline, _ = killed
    assert {a.point: a.survivors for a in pipeline.attempts if a.point} == {p.name: [] for p in KILL_POINTS}


def test_no_mlflow_run_stays_running(killed):
    from models.stale_runs import RECONCILED
    from models.tracking import client

    pipeline, _ = killed
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{pipeline.state / 'mlflow.db'}")
        mlflow_client = client()
        experiment = mlflow_client.get_experiment_by_name(NAME)
        runs = mlflow_client.search_runs([experiment.experiment_id], max_results=10_000)
    assert [r.info.run_id for r in runs if r.info.status == "RUNNING"] == []
    killed_flows = sum(p.target == "flow" for p in KILL_POINTS)
    parents = [r for r in runs if "r1.owner.pid" in r.data.tags]
    assert len(parents) == len(pipeline.attempts)
    assert sum(RECONCILED in r.data.tags for r in parents) == killed_flows


def test_no_prefect_run_stays_running(killed, prefect_api):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from models.tracking import client

    pipeline, _ = killed
    with (
        pytest.MonkeyPatch.context() as patch,
        temporary_settings({PREFECT_API_URL: prefect_api}),  # read once at import: not from the environment
    ):
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{pipeline.state / 'mlflow.db'}")
        mlflow_client = client()
        experiment = mlflow_client.get_experiment_by_name(NAME)
        runs = mlflow_client.search_runs([experiment.experiment_id], max_results=10_000)
        ids = [r.data.tags["r1.owner.flow_run_id"] for r in runs if "r1.owner.pid" in r.data.tags]
        with get_client(sync_client=True) as prefect:
            flow_runs = prefect.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
            task_runs = prefect.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
    assert len(flow_runs) == len(pipeline.attempts)
    assert [f.name for f in flow_runs if not f.state.is_final()] == []
    assert [t.name for t in task_runs if not t.state.is_final()] == []
    assert sum(f.state.name == "Crashed" for f in flow_runs) == sum(p.target == "flow" for p in KILL_POINTS)


def test_the_harness_watches_what_it_kills(tmp_path):
    """The phase predicates read the layout the pipeline writes (so a kill test cannot pass by never killing)."""
    stage = tmp_path / "artifacts" / NAME / "reasoning_rl"
    (stage / "abc.trainer" / "checkpoint-2").mkdir(parents=True)
    watch = Watch(tmp_path, tmp_path / "log", proc=None)
    assert watch.checkpoints("reasoning_rl") == {2: False}
    (stage / "abc.trainer" / "checkpoint-2" / "COMPLETE").write_text("{}")
    (stage / "abc").mkdir()
    (stage / "abc" / "_fingerprint.json").write_text("{}")
    assert watch.checkpoints("reasoning_rl") == {2: True} and len(watch.stamped("reasoning_rl")) == 1


def test_no_alias_points_at_an_incomplete_model(killed):
    """The registration was killed once; the aliases set since point at versions whose model files are whole."""
    from models.tracking import client
    from tasks.promotion import model_files_complete

    pipeline, _ = killed
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{pipeline.state / 'mlflow.db'}")
        mlflow_client = client()
        aliases = mlflow_client.get_registered_model("r1-kill").aliases
        whole = {
            alias: model_files_complete(mlflow_client.get_model_version("r1-kill", v).run_id)
            for alias, v in aliases.items()
        }
    assert "candidate" in whole and all(whole.values()), whole


@pytest.mark.parametrize("point", [p.name for p in KILL_POINTS])
def test_each_kill_is_survived(killed, reference, point, record_property):
    """One case of the report per kill point: nothing outlived the kill, and every output the killed attempt had
    published is in the finished run, unchanged (its data lost: the outputs missing or changed)."""
    pipeline, after = killed
    index, attempt = attempt_at(pipeline, point)
    changed = [path for path, value in after[index].items() if after[-1].get(path) != value]
    record_property("data_lost", len(changed))
    assert attempt.survivors == [] and changed == []
    assert pipeline.attempts[-1].returncode == 0
