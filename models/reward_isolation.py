"""Reward calls contained: a reward that raises, hangs or returns NaN/inf gives that sample 0 and is counted; a reward
that fails on every sample stops the stage instead of training on zeros.

    funcs = isolate_rewards([accuracy_reward, format_reward], stage.guards.rewards, "reasoning_rl")
    GRPOTrainer(reward_funcs=funcs, ...)   # the same names, so the same rewards/<name>/mean metrics
    report_failures(funcs, "reasoning_rl")  # the stage's totals: one log line and MLflow metrics
    close_rewards(funcs)                    # the worker processes exit

Each reward runs in its own worker process, forked on first use and reused: a step's batch goes over in one message
and each sample's reward comes back as soon as it is computed, so a sample that takes longer than the timeout is
known; that worker is killed (SIGKILL) and a new one forked for the rest of the batch. Failures per call are logged
through TRL's `log_metric` as rewards/<name>/failures and rewards/<name>/failures/<kind> (kind: error, timeout,
nonfinite; averaged over each logging step like TRL's own metrics). None stays TRL's "does not apply to this sample"
(the accuracy reward of a general prompt) and is not a failure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import math
import multiprocessing
import numbers
from collections import Counter
from collections.abc import Callable

import mlflow

from models.guard_config import RewardIsolationConfig

log = logging.getLogger(__name__)
KINDS = ("error", "timeout", "nonfinite")
# modules the verifiers import lazily: imported before the first fork, so that no worker spends its first
# sample's timeout importing them
PRELOAD = ("math_verify",)


class RewardFailed(RuntimeError):
    """A reward failed on every sample of `max_failed_steps` consecutive steps."""


def _sample(kwargs: dict, size: int, index: int) -> dict:
    """The keyword arguments of one sample: every per-sample list cut to that sample's item."""
    return {k: [v[index]] if isinstance(v, list) and len(v) == size else v for k, v in kwargs.items()}


def score_one(func: Callable, kwargs: dict, size: int, index: int) -> tuple[str, float | str | None]:
    """("ok", reward or None) or (failure kind, what went wrong) for sample `index` of a batch."""
    try:
        out = func(**_sample(kwargs, size, index))
    except Exception as error:  # the reward's own bug: contained, counted
        return "error", f"{type(error).__name__}: {error}"[:300]
    if not isinstance(out, (list, tuple)) or len(out) != 1:
        return "error", f"returned {type(out).__name__} {str(out)[:80]} for one completion, not a list of one reward"
    value = out[0]
    if value is None:
        return "ok", None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return "error", f"returned {type(value).__name__} {str(value)[:80]}, not a number"
    if not math.isfinite(float(value)):
        return "nonfinite", f"returned {value}"
    return "ok", float(value)


def _serve(conn, func: Callable) -> None:
    """The worker: for each (kwargs, size, start) it receives, send (index, kind, value) per sample, in order. It
    dies with the stage process that forked it (a kill -9 of the stage leaves no worker behind)."""
    from models.lifetime import die_with_parent

    die_with_parent()
    while True:
        message = conn.recv()
        if message is None:
            return
        kwargs, size, start = message
        for index in range(start, size):
            conn.send((index, *score_one(func, kwargs, size, index)))


def _preload() -> None:
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


class RewardWorker:
    """One forked process scoring one reward function, replaced when a sample overruns its timeout or it dies."""

    def __init__(self, func: Callable, timeout_s: float):
        self.func, self.timeout_s = func, timeout_s
        self.process, self.conn = None, None

    def _start(self) -> None:
        _preload()
        context = multiprocessing.get_context("fork")  # no pickling of the function; the child gets its modules
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, self.func), daemon=True, name="reward-worker")
        self.process.start()
        child.close()

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if not kill:
            try:
                self.conn.send(None)
                self.process.join(timeout=2)
            except (BrokenPipeError, OSError):
                pass
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()
        self.process, self.conn = None, None

    def score(self, kwargs: dict, size: int) -> list[tuple[str, float | str | None]]:
        """(kind, value) per sample; one message out, one back per sample; a new worker after each overrun."""
        results: list = [None] * size
        start = 0
        while start < size:
            if self.process is None:
                self._start()
            self.conn.send((kwargs, size, start))
            start = self._collect(results, size, start)
        return results

    def _collect(self, results: list, size: int, start: int) -> int:
        """Fill `results` from `start`; returns where the next worker must begin (size when all came back)."""
        index = start
        while index < size:
            if not self.conn.poll(self.timeout_s):
                results[index] = ("timeout", f"no reward within {self.timeout_s:g} s; the worker was killed")
                self.stop(kill=True)
                return index + 1
            try:
                got, kind, value = self.conn.recv()
            except (EOFError, OSError):
                code = self.process.exitcode if self.process else None
                results[index] = ("error", f"the worker process died (exit code {code})")
                self.stop(kill=True)
                return index + 1
            results[got] = (kind, value)
            index = got + 1
        return size


class InProcess:
    """Scores in the training process: failures counted, no timeout (guards.rewards.isolated=false)."""

    def __init__(self, func: Callable):
        self.func = func

    def score(self, kwargs: dict, size: int) -> list[tuple[str, float | str | None]]:
        return [score_one(self.func, kwargs, size, index) for index in range(size)]

    def stop(self, kill: bool = False) -> None:
        pass


def _payload(kwargs: dict) -> dict:
    """What goes to the worker: TRL's callables (log_metric, log_extra) and environments stay behind; the trainer
    state goes without its growing log history."""
    sent = {k: v for k, v in kwargs.items() if k != "environments" and not callable(v)}
    state = sent.get("trainer_state")
    if dataclasses.is_dataclass(state):
        sent["trainer_state"] = dataclasses.replace(state, log_history=[])
    return sent


class IsolatedReward:
    """A reward function with TRL's signature and the wrapped function's name, its calls contained."""

    def __init__(self, func: Callable, cfg: RewardIsolationConfig, stage: str):
        self.func, self.cfg, self.stage = func, cfg, stage
        self.__name__ = getattr(func, "__name__", type(func).__name__)
        self.scorer = RewardWorker(func, cfg.timeout_s) if cfg.isolated else InProcess(func)
        self.totals: Counter = Counter()
        self.calls = 0
        self.failed_streak = 0

    def __call__(self, completions, **kwargs) -> list[float | None]:
        size = len(completions)
        results = self.scorer.score(_payload({"completions": completions, **kwargs}), size)
        failures = Counter(kind for kind, _ in results if kind != "ok")
        self._account(failures, results, kwargs)
        self._stop_if_always_failing(failures, size, results, kwargs.get("trainer_state"))
        return [value if kind == "ok" else 0.0 for kind, value in results]

    def _account(self, failures: Counter, results: list, kwargs: dict) -> None:
        self.calls += 1
        for kind in KINDS:
            if failures[kind] and not self.totals[kind]:
                first = next(value for k, value in results if k == kind)
                log.warning("%s: reward %s: first %s (reward 0): %s", self.stage, self.__name__, kind, first)
        self.totals.update(failures)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            log_metric(f"rewards/{self.__name__}/failures", float(sum(failures.values())))
            for kind in KINDS:
                log_metric(f"rewards/{self.__name__}/failures/{kind}", float(failures[kind]))

    def _stop_if_always_failing(self, failures: Counter, size: int, results: list, state) -> None:
        self.failed_streak = self.failed_streak + 1 if size and sum(failures.values()) == size else 0
        if self.failed_streak < self.cfg.max_failed_steps:
            return
        self.close()
        step = getattr(state, "global_step", "?")
        kinds = ", ".join(f"{failures[k]} {k}" for k in KINDS if failures[k])
        first = next(value for kind, value in results if kind != "ok")
        raise RewardFailed(
            f"{self.stage}: reward {self.__name__} failed on all {size} samples of {self.failed_streak} consecutive "
            f"step(s) at step {step} ({kinds}; first: {first}); stopped instead of training on zeros: fix the reward, "
            f"or raise {self.stage}.guards.rewards.timeout_s if it is only slow"
        )

    def close(self) -> None:
        self.scorer.stop()


def isolate_rewards(funcs: list, cfg: RewardIsolationConfig, stage: str) -> list:
    """Rule rewards (callables) wrapped; reward models (paths, modules) are left to TRL."""
    return [IsolatedReward(f, cfg, stage) if callable(f) and not _is_module(f) else f for f in funcs]


def _is_module(func) -> bool:
    import torch

    return isinstance(func, torch.nn.Module)


def close_rewards(funcs: list) -> None:
    for func in funcs:
        if isinstance(func, IsolatedReward):
            func.close()


def failure_totals(funcs: list) -> dict[str, int]:
    """{"reward_failures/<name>": total, "reward_failures/<name>/<kind>": count} over the stage."""
    totals: dict[str, int] = {}
    for func in funcs:
        if isinstance(func, IsolatedReward):
            totals[f"reward_failures/{func.__name__}"] = sum(func.totals.values())
            totals |= {f"reward_failures/{func.__name__}/{kind}": func.totals[kind] for kind in KINDS}
    return totals


def report_failures(funcs: list, stage: str) -> dict[str, int]:
    """The stage's summary of contained reward failures: one log line and the totals as MLflow metrics."""
    totals = failure_totals(funcs)
    parts = [
        f"{func.__name__} {sum(func.totals.values())} ("
        + ", ".join(f"{kind} {func.totals[kind]}" for kind in KINDS)
        + f") in {func.calls} calls"
        for func in funcs
        if isinstance(func, IsolatedReward)
    ]
    log.info("%s: reward failures (reward 0 for those samples): %s", stage, "; ".join(parts) or "none wrapped")
    if mlflow.active_run() and totals:
        mlflow.log_metrics({k: float(v) for k, v in totals.items()})
    return totals
