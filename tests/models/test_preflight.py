"""models/preflight.py and the recipe's name rules: what passes must pass (a live server, a writable folder, the
shipped recipes), what fails names the key; the table of refusals is tests/flows/test_bad_inputs.py.

    .venv/bin/python -m pytest -q tests/models/test_preflight.py
"""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest

from models import preflight
from models.config import Recipe
from models.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def live_url():
    """A real HTTP server on loopback that answers every GET (what /health of MLflow or Prefect needs)."""

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the handler API's name
            self.send_response(200 if self.path.endswith("/health") else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_live_servers_pass(live_url, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", live_url)
    monkeypatch.setenv("PREFECT_API_URL", f"{live_url}/api")
    assert preflight.tracking_problem() is None and preflight.prefect_problem() is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"{live_url}/missing-prefix")  # a 404 still means a server answers
    assert preflight.tracking_problem() is None


def test_password_in_a_url_is_never_shown(monkeypatch):
    from tests.conftest import free_port

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://me:hunter2@127.0.0.1:{free_port()}")
    problem = preflight.tracking_problem()
    assert problem and "hunter2" not in problem and "***@127.0.0.1" in problem


def test_state_probe_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("R1_STATE_DIR", str(tmp_path / "a" / "b" / "state"))
    assert preflight.state_problem() is None
    assert list(tmp_path.iterdir()) == []  # the folders the probe made are gone again
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "mlflow.db").write_text("x")
    monkeypatch.setenv("R1_STATE_DIR", str(tmp_path / "used"))
    assert preflight.state_problem() is None
    assert [p.name for p in (tmp_path / "used").iterdir()] == ["mlflow.db"]


@pytest.mark.parametrize("path", sorted((REPO / "flows" / "recipes").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_recipes_build_trl_configs(path):
    """TRL accepts every shipped recipe's stages as they will run (GPU recipes included: only their configs)."""
    assert preflight.trl_config_problem(load_recipe(path)) is None


def test_trl_refusal_names_the_knob_the_recipe_set():
    recipe = load_recipe(None, ["final_rl.trl.num_generations=1"])
    problem = preflight.trl_config_problem(recipe)
    assert problem.startswith("final_rl.trl.num_generations: TRL's GRPOConfig refuses it (") and "change" in problem


def test_stages_sent_elsewhere_are_not_held_to_this_cpu():
    recipe = load_recipe(None, ["model.dtype=float16", "launch.stage_deployment=r1-stage-spec/h800"])
    assert preflight.precision_problem(recipe) is None


@pytest.mark.parametrize(
    ("overrides", "registered"),
    [
        ([], "r1-tiny"),  # the embedded default keeps the demo's name
        (["name=my-recipe"], "my-recipe"),  # another recipe never registers under the demo's
        (["name=my-recipe", "model.registered_name=team-model"], "team-model"),
    ],
)
def test_registered_name_defaults_to_the_recipe_name(overrides, registered):
    recipe = load_recipe(None, overrides)
    assert recipe.model.registered_name == registered
    assert Recipe.model_validate(recipe.model_dump()) == recipe  # what a deployment form sends back


def test_accepted_names_are_valid_for_mlflow():
    from mlflow.utils.validation import _validate_model_name

    for name in ("r1-tiny", "qwen2.5-math-1.5b-r1", "A_b.c-1"):
        _validate_model_name(load_recipe(None, [f"model.registered_name={name}"]).model.registered_name)
