"""A person at the Prefect UI, in headless Chromium: opens the train deployment, its custom run form, changes the
recipe's name in the typed form, presses Submit; the run that starts has the changed field and completes. Keeps
screenshots of the run form, the flow run's graph and the MLflow experiment ($R1_TEST_ARTIFACTS, else
tests/e2e/artifacts/ui/; `R1_TEST_ARTIFACTS=docs/screenshots` refreshes the README's).

    python -m pytest -q tests/e2e/test_prefect_ui.py
"""

from __future__ import annotations

import re
import time

import pytest
from live_stack import TRAIN, chromium_page, keep, small_recipe

pytestmark = pytest.mark.slow

PAGE_TIMEOUT_MS = 60_000


def set_form_defaults(live_stack) -> str:
    """The train deployment's defaults become the small recipe (as a team sets a deployment's defaults), so the
    form opens on it; the deployment's id."""
    from prefect.client.schemas.actions import DeploymentUpdate

    with live_stack.prefect() as client:
        deployment = client.read_deployment_by_name(TRAIN)
        client.update_deployment(deployment.id, DeploymentUpdate(parameters={"recipe": small_recipe()}))
    return str(deployment.id)


def form_field(page, label: str):
    """The input of the typed form's property labelled `label` (the first one, in document order)."""
    header = page.locator("span.schema-form-property__label", has_text=re.compile(f"^{re.escape(label)}$")).first
    own = "contains(concat(' ', normalize-space(@class), ' '), ' schema-form-property ')"
    return header.locator(f"xpath=ancestor::div[{own}][1]").locator("textarea").first


def submit_custom_run(page, prefect_url: str, deployment_id: str, screenshot) -> str:
    """Deployment page -> Run -> Custom run -> Name := e2e-ui -> Submit -> View run; the id of that flow run."""
    page.goto(f"{prefect_url}/deployments/deployment/{deployment_id}", wait_until="networkidle")
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Custom run", exact=True).click()
    name = form_field(page, "Name (Optional)")
    name.wait_for()
    assert name.input_value() == "tiny-r1", "the form opens on the deployment's defaults"
    name.fill("e2e-ui")
    name.scroll_into_view_if_needed()
    page.screenshot(path=screenshot)
    page.get_by_role("button", name="Submit", exact=True).click()
    page.get_by_role("button", name="View run", exact=True).last.click()  # on the toast that says the run is scheduled
    page.wait_for_url(re.compile(r".*/runs/flow-run/[0-9a-f-]{36}.*"))
    return re.search(r"/runs/flow-run/([0-9a-f-]{36})", page.url).group(1)


def flow_run_graph(page, prefect_url: str, flow_run_id: str, screenshot) -> None:
    page.goto(f"{prefect_url}/runs/flow-run/{flow_run_id}", wait_until="networkidle")
    page.locator(".flow-run-graphs canvas").first.wait_for(state="attached")
    page.wait_for_timeout(4000)  # the graph draws its nodes after the data arrives
    page.screenshot(path=screenshot)


def mlflow_experiment(page, mlflow_url: str, experiment_id: str, screenshot) -> None:
    """The experiment's training runs with the newest pipeline run opened on its stage runs."""
    page.goto(f"{mlflow_url}/#/experiments/{experiment_id}/runs")  # MLflow keeps polling: no network idle
    page.get_by_text(re.compile("^pipeline-")).first.wait_for()
    assistant = page.get_by_role("button", name="Close", exact=True)
    if assistant.count():
        assistant.first.click()
    page.locator("button[data-component-id*='runnamecellrenderer']").first.click()  # open the parent on its stages
    page.get_by_text("final_rl", exact=True).first.wait_for()
    page.wait_for_timeout(1000)
    page.screenshot(path=screenshot)


def test_the_run_form_starts_a_run_with_the_changed_field(live_stack, tmp_path):
    deployment_id = set_form_defaults(live_stack)
    started = time.monotonic()
    with chromium_page(tmp_path / "profile") as page:
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        flow_run_id = submit_custom_run(
            page, live_stack.stack.prefect_url, deployment_id, tmp_path / "deployment-run-form.png"
        )
        keep(tmp_path / "deployment-run-form.png", "ui")
        finished = live_stack.wait_final(flow_run_id)

        assert finished.deployment_id is not None and str(finished.deployment_id) == deployment_id
        assert finished.parameters["recipe"]["name"] == "e2e-ui"
        assert finished.state.is_completed(), f"{finished.state.type}: {finished.state.message}"
        experiment = live_stack.mlflow().get_experiment_by_name("e2e-ui")
        assert experiment is not None, "the changed name is the run's MLflow experiment"
        parents = live_stack.mlflow().search_runs(
            [experiment.experiment_id], f"tags.`prefect.flow_run_id` = '{flow_run_id}'"
        )
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"

        flow_run_graph(page, live_stack.stack.prefect_url, flow_run_id, tmp_path / "flow-run-graph.png")
        mlflow_experiment(
            page, live_stack.stack.mlflow_url, experiment.experiment_id, tmp_path / "mlflow-experiment.png"
        )
    for name in ("flow-run-graph.png", "mlflow-experiment.png"):
        keep(tmp_path / name, "ui")
    print(f"UI-triggered run: {time.monotonic() - started:.0f} s")
