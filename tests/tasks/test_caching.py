"""tasks/caching.py: stage cache keys follow the stage's own config, its inputs and the code it runs."""

from __future__ import annotations

import pytest

from models.recipe import load_recipe
from models.records import Artifact
from tasks.caching import ENTRY_MODULE, code_version, stage_key


def model_input(fingerprint: str, stage: str = "cold_start_sft") -> dict[str, Artifact]:
    return {"model": Artifact(uri=f"/state/{stage}", fingerprint=fingerprint, stage=stage, kind="model")}


@pytest.fixture(scope="module")
def base():
    return load_recipe(None)


@pytest.mark.parametrize("stage", list(ENTRY_MODULE))
def test_stage_key_is_stable(base, stage):
    key = stage_key(stage, base, model_input("aaaa"))
    assert key == stage_key(stage, load_recipe(None), model_input("aaaa"))
    assert len(key) == 20 and int(key, 16) >= 0


def test_stage_key_names_the_stage(base):
    keys = {stage: stage_key(stage, base, model_input("aaaa")) for stage in ENTRY_MODULE}
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
    assert stage_key("reasoning_rl", base, {}) != key
    two = {
        **model_input("aaaa"),
        "data": Artifact(uri="/d", fingerprint="cccc", stage="rejection_sampling", kind="dataset"),
    }
    assert stage_key("supervised_merge", base, two) != stage_key("supervised_merge", base, model_input("aaaa"))
    assert stage_key("supervised_merge", base, dict(reversed(two.items()))) == stage_key("supervised_merge", base, two)


def test_code_version():
    versions = {stage: code_version(stage) for stage in ENTRY_MODULE}
    assert all(len(v) == 16 and int(v, 16) >= 0 for v in versions.values())
    assert versions["cold_start_sft"] == versions["supervised_merge"]  # same entry module (sft)
    assert versions["reasoning_rl"] == versions["final_rl"]  # same entry module (grpo)
    assert versions["cold_start_sft"] != versions["reasoning_rl"]
    assert code_version("reasoning_rl") == versions["reasoning_rl"]
