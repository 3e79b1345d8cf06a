"""Stage cache keys (the spec's key, models/stage_io.py) follow what the stage reads, its inputs and the code that
can change its result (models/code_version.py), and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.code_version import code_version, result_digest
from models.recipe import load_recipe
from models.records import Artifact
from models.stage_io import stage_spec
from models.stages import STAGES

OTHER_INPUTS = {
    "data": Artifact(uri="/state/d", fingerprint="dddd", stage="rejection_sampling", kind="dataset"),
    "general": Artifact(uri="/state/g.jsonl", fingerprint="gggg", stage="non_reasoning_data", kind="dataset"),
}


def model_input(fingerprint: str, stage: str = "cold_start_sft") -> dict[str, Artifact]:
    return {"model": Artifact(uri=f"/state/{stage}", fingerprint=fingerprint, stage=stage, kind="model")}


def stage_key(stage: str, recipe, inputs: dict[str, Artifact]) -> str:
    """The key of `stage`'s spec; required inputs the test does not vary are filled in with fixed records."""
    needed = set(STAGES[stage].inputs) - STAGES[stage].optional
    filled = {k: v for k, v in OTHER_INPUTS.items() if k in needed and k not in inputs}
    return stage_spec(stage, recipe, {**inputs, **filled}).key()


@pytest.fixture(scope="module")
def base():
    return load_recipe(None)


@pytest.mark.parametrize("stage", list(STAGES))
def test_stage_key_is_stable(base, stage):
    key = stage_key(stage, base, model_input("aaaa"))
    assert key == stage_key(stage, load_recipe(None), model_input("aaaa"))
    assert len(key) == 20 and int(key, 16) >= 0


def test_stage_key_names_the_stage(base):
    keys = {stage: stage_key(stage, base, model_input("aaaa")) for stage in STAGES}
    assert len(set(keys.values())) == len(keys)


def test_stage_key_follows_own_config(base):
    changed = load_recipe(None, ["final_rl.trl.max_steps=7"])
    inputs = model_input("aaaa", "supervised_merge")
    assert stage_key("final_rl", changed, inputs) != stage_key("final_rl", base, inputs)
    # another stage's section does not matter
    for stage in ("reasoning_rl", "cold_start_sft", "rejection_sampling", "supervised_merge", "evaluate"):
        assert stage_key(stage, changed, inputs) == stage_key(stage, base, inputs), stage


@pytest.mark.parametrize(
    ("override", "stage"),
    [
        ("reasoning_rl.rewards={accuracy: 2.0}", "reasoning_rl"),
        ("cold_start_sft.trl.learning_rate=0.01", "cold_start_sft"),
        ("rejection_sampling.max_paragraph_chars=100", "rejection_sampling"),
        ("supervised_merge.non_reasoning_ratio=0.5", "supervised_merge"),
        ("evaluation.num_samples=8", "evaluate"),
    ],
)
def test_stage_key_changes_with_stage_section(base, override, stage):
    inputs = model_input("aaaa")
    assert stage_key(stage, load_recipe(None, [override]), inputs) != stage_key(stage, base, inputs)


@pytest.mark.parametrize("override", ["seed=1", "data.eval_size=50", "model.dtype=float32"])
def test_stage_key_changes_with_shared_settings(base, override):
    inputs = model_input("aaaa")
    assert stage_key("reasoning_rl", load_recipe(None, [override]), inputs) != stage_key("reasoning_rl", base, inputs)


def test_stage_key_ignores_what_stages_do_not_use(base):
    inputs = model_input("aaaa")
    for override in ("model.registered_name=other", "name=other-run", "stage_timeout_s=5"):
        assert stage_key("reasoning_rl", load_recipe(None, [override]), inputs) == stage_key(
            "reasoning_rl", base, inputs
        ), override


def test_stage_key_default_knobs_written_out_are_the_same_key(base):
    # writing a project default explicitly resolves to the same TRL knobs, hence the same key
    from models.trl_knobs import GRPO_DEFAULTS

    explicit = load_recipe(None, [f"reasoning_rl.trl.max_steps={GRPO_DEFAULTS['max_steps']}"])
    assert stage_key("reasoning_rl", explicit, model_input("aaaa")) == stage_key(
        "reasoning_rl", base, model_input("aaaa")
    )


def test_stage_key_follows_input_fingerprints(base):
    key = stage_key("reasoning_rl", base, model_input("aaaa"))
    assert stage_key("reasoning_rl", base, model_input("bbbb")) != key
    # only the fingerprint counts, not where the input lives or which run made it
    moved = {
        "model": Artifact(
            uri="s3://elsewhere", fingerprint="aaaa", stage="cold_start_sft", kind="model", mlflow_run_id="r"
        )
    }
    assert stage_key("reasoning_rl", base, moved) == key
    assert stage_key("reasoning_rl", base, model_input("aaab")) != key
    two = {
        **model_input("aaaa"),
        "data": Artifact(uri="/d", fingerprint="cccc", stage="rejection_sampling", kind="dataset"),
    }
    assert stage_key("supervised_merge", base, two) != stage_key("supervised_merge", base, model_input("aaaa"))
    assert stage_key("supervised_merge", base, dict(reversed(two.items()))) == stage_key("supervised_merge", base, two)


def test_code_version():
    versions = {stage: code_version(stage) for stage in STAGES}
    assert all(len(v) == 16 and int(v, 16) >= 0 for v in versions.values())
    assert len(set(versions.values())) == len(versions)  # each names its entry function
    assert versions["cold_start_sft"] != versions["reasoning_rl"]
    assert code_version("reasoning_rl") == versions["reasoning_rl"]


def test_changing_only_evaluation_retrains_nothing(base):
    changed = load_recipe(None, ["evaluation.num_samples=8", "evaluation.temperature=0.9"])
    inputs = model_input("aaaa")
    assert stage_key("evaluate", changed, inputs) != stage_key("evaluate", base, inputs)
    for stage in (s for s in STAGES if s != "evaluate"):
        assert stage_key(stage, changed, inputs) == stage_key(stage, base, inputs), stage


def test_launch_and_timeout_are_not_in_the_key(base):
    changed = load_recipe(None, ["launch.num_processes=8", "stage_timeout_s=60", "launch.gpu_hour_usd=9"])
    for stage in STAGES:
        assert stage_key(stage, changed, model_input("aaaa")) == stage_key(stage, base, model_input("aaaa")), stage


def test_a_stage_gets_only_what_it_reads(base):
    merge = stage_spec("supervised_merge", base, {**model_input("aaaa"), **OTHER_INPUTS})
    assert merge.data is None and merge.dtype == "auto"  # its rows come through its input records
    assert set(merge.settings) == set(base.supervised_merge.model_dump())
    rl = stage_spec("reasoning_rl", base, model_input("aaaa"))
    assert rl.data == base.data and "evaluation" not in rl.model_dump()


MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ('x = Field(1, description="old help")', 'x = Field(1, description="new help, longer")'),
        ('def f():\n    """Old doc."""\n    return 1', 'def f():\n    """New doc."""\n    return 1'),
        ("y = 1  # a comment", "y = 1"),
        ("z = f(a,\n      b)", "z = f(a, b)"),
    ],
)
def test_result_digest_ignores_help_texts_comments_and_layout(before, after):
    assert result_digest(before) == result_digest(after)


@pytest.mark.parametrize(
    ("before", "after"),
    [("x = Field(1, ge=0)", "x = Field(2, ge=0)"), ("def f():\n    return 1", "def f():\n    return 2")],
)
def test_result_digest_follows_code(before, after):
    assert result_digest(before) != result_digest(after)


def test_a_field_description_edit_in_the_real_config_keeps_every_code_version():
    source = (MODELS / "config.py").read_text()
    edited = source.replace('description="Weights dtype on load."', 'description="The dtype, edited."')
    assert edited != source
    assert result_digest(edited) == result_digest(source)


def test_presentation_modules_are_not_in_any_code_version():
    from models.code_version import PRESENTATION_ONLY, _closure

    for stage in STAGES.values():
        modules = _closure(stage.entry.split(":")[0], PRESENTATION_ONLY)
        assert "models.grpo" in modules or "models.sft" in modules or stage.output == "dataset"
        assert not set(modules) & {"models.plots", "models.tracking", "models.cost"}, stage.name
