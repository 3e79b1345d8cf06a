"""Only transient errors are retried (issue 15, item 6): every Prefect task and flow of tasks/ and flows/ either never
retries or retries through a condition that accepts connection and timeout errors only, so a deterministic failure
(a bad value, a missing file) fails once instead of doubling the FAILED runs.

    .venv/bin/python -m pytest -q tests/tasks/test_retry_policy.py
"""

from __future__ import annotations

import importlib
import pkgutil
from types import SimpleNamespace

import pytest

import flows
import tasks

BAD = pytest.mark.reliability("bad_input")


def prefect_callables() -> dict[str, object]:
    from prefect import Flow, Task

    found = {}
    for package in (tasks, flows):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            for name, value in vars(module).items():
                if isinstance(value, Task | Flow) and value.__module__ == module.__name__:
                    found[f"{module.__name__}.{name}"] = value
    return found


class FakeState:
    def __init__(self, error: BaseException):
        self.error = error

    def result(self, raise_on_failure: bool = True):
        return self.error


@BAD
def test_only_transient_errors_are_retried():
    callables = prefect_callables()
    assert len(callables) >= 8, sorted(callables)  # the stage tasks, evaluation, registration, promotion, flows
    retrying = {name: c for name, c in callables.items() if getattr(c, "retries", 0)}
    assert set(retrying) == {"tasks.publish.register_model", "tasks.promotion.promote"}, sorted(retrying)
    run = SimpleNamespace()
    for name, task in retrying.items():
        condition = task.retry_condition_fn
        assert condition is not None, f"{name} retries every error"
        for transient in (ConnectionError("refused"), TimeoutError("slow")):
            assert condition(task, run, FakeState(transient)), f"{name} does not retry {transient!r}"
        for deterministic in (ValueError("bad"), FileNotFoundError("gone"), KeyError("x"), RuntimeError("bug")):
            assert not condition(task, run, FakeState(deterministic)), f"{name} retries {deterministic!r}"
