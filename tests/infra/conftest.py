"""A real `prefect server start` on a free loopback port with its own PREFECT_HOME, for the work pool tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def on_prefect_api(prefect_api, monkeypatch):
    """This test's Prefect client and flows talk to the test server. The variable is set too: Prefect's log and
    event workers run in threads of their own, which read the environment, not this thread's settings context;
    they are drained before the variable goes (as prefect_test_harness does)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    with temporary_settings(updates={PREFECT_API_URL: prefect_api}):
        yield prefect_api
        APILogWorker.drain_all(timeout=10)
        EventsWorker.drain_all(timeout=10)
