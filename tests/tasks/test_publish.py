"""The registered final model is an MLflow model: loaded through MLflow's own API (pyfunc and transformers flavours)
from a real SQLite registry, it generates text; registration is idempotent by fingerprint, and the registry folder
models.factory loads is the same model."""

from __future__ import annotations

import pytest

from models.factory import resolve_source
from models.recipe import load_recipe
from models.records import Artifact

RECIPE = ["name=publish", "model.registered_name=publish-model", "evaluation.max_new_tokens=12"]


@pytest.fixture
def registered(tmp_path, prefect_server, monkeypatch):
    """The tiny model registered as publish-model@candidate from a stage run; yields (recipe, version, run_id)."""
    monkeypatch.setenv("R1_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    from models.tracking import client, ensure_experiment
    from tasks.publish import register_model

    recipe = load_recipe(None, RECIPE)
    run_id = client().create_run(ensure_experiment("publish")).info.run_id
    final = Artifact(
        uri=resolve_source("builtin:tiny_base"), fingerprint="f1", stage="final_rl", kind="model", mlflow_run_id=run_id
    )
    yield recipe, final, register_model(recipe, final)


def test_registered_model_loads_through_mlflow_and_generates(registered):
    import mlflow

    from models.tracking import example_prompt

    recipe, _, version = registered
    prompt = example_prompt(recipe.data.prompt_style)
    model = mlflow.pyfunc.load_model("models:/publish-model@candidate")
    completions = model.predict([prompt])
    assert len(completions) == 1 and isinstance(completions[0], str) and completions[0]
    assert not completions[0].startswith(prompt)  # the completion only
    longer = model.predict([prompt], params={"max_new_tokens": 30})[0]
    assert len(longer) > len(completions[0])  # the generation budget is a param of the signature
    pipeline = mlflow.transformers.load_model(f"models:/publish-model/{version}")
    assert pipeline.task == "text-generation"
    assert pipeline(prompt, max_new_tokens=12, do_sample=False, return_full_text=False)[0]["generated_text"]


def test_registered_model_has_a_signature_and_an_input_example(registered):
    from mlflow.models import get_model_info

    recipe, _, version = registered
    info = get_model_info(f"models:/publish-model/{version}")
    assert {"python_function", "transformers"} <= set(info.flavors)
    assert info.signature.inputs.to_dict() == [{"type": "string", "required": True}]
    assert {p.name for p in info.signature.params} == {"max_new_tokens", "do_sample", "temperature", "top_p"}
    assert info.saved_input_example_info["artifact_path"] == "input_example.json"


def test_registration_is_idempotent_by_fingerprint(registered):
    from models.tracking import client
    from tasks.publish import register_model

    recipe, final, version = registered
    assert register_model(recipe, final) == version
    assert len(client().search_model_versions("name = 'publish-model'")) == 1
    source = client().get_model_version("publish-model", version).source
    assert source == f"{client().get_run(final.mlflow_run_id).info.artifact_uri}/model"


def test_registry_folder_loads_in_the_factory_and_generates_the_same(registered):
    import mlflow
    import torch

    from models.factory import load_model
    from models.tracking import example_prompt, registered_model_dir

    recipe, _, version = registered
    folder = registered_model_dir("models:/publish-model@candidate")
    assert folder == registered_model_dir(f"models:/publish-model/{version}")  # downloaded once
    model, tokenizer = load_model(str(folder))
    prompt = example_prompt(recipe.data.prompt_style)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    ours = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    # the same weights and tokenizer: the pyfunc flavour returns the same greedy completion (stripped)
    assert mlflow.pyfunc.load_model("models:/publish-model@candidate").predict([prompt])[0] == ours.strip()
