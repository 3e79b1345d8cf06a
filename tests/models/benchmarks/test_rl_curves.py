"""The reward-curve comparison of our rollouts with TRL's stock ones: its statistics, its argument errors, and a
short real run (a few GRPO steps per arm and seed, curves read back from MLflow)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from models.benchmarks.rl_curves import compare, paired, table


def _runs(ours: list[float], stock: list[float]) -> dict:
    runs = {("ours", seed): {"reward, mean": value} for seed, value in enumerate(ours)}
    return runs | {("stock", seed): {"reward, mean": value} for seed, value in enumerate(stock)}


def test_paired_interval_is_students_t_over_seeds():
    mean, low, high = paired([0.1, 0.2, 0.3])
    assert mean == pytest.approx(0.2)
    assert (low, high) == (pytest.approx(0.2 - 4.30 * 0.1 / 3**0.5), pytest.approx(0.2 + 4.30 * 0.1 / 3**0.5))


def test_a_shift_larger_than_the_seed_noise_is_reported_outside_it():
    same = compare(_runs([2.40, 2.45, 2.50], [2.42, 2.44, 2.49]))["reward, mean"]
    assert same["within_noise"] and same["difference"] == pytest.approx(0.0)
    worse = compare(_runs([2.00, 2.06, 2.11], [2.40, 2.45, 2.50]))["reward, mean"]
    assert not worse["within_noise"] and worse["high"] < 0
    assert "OUTSIDE the seed noise" in table({"reward, mean": worse}, [0, 1, 2])


def _bench(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "models.benchmarks.rl_curves", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


def test_bad_arguments_fail_in_one_line_before_any_work(tmp_path):
    (tmp_path / "old.txt").write_text("an earlier run")
    for args, message in [
        (["--out", str(tmp_path)], "already holds files"),
        (["--out", str(tmp_path / "new"), "--steps", "0"], "--steps must be at least 1"),
        (["--out", str(tmp_path / "new"), "--seeds", "1", "1"], "two or more different seeds"),
        (["--out", str(tmp_path / "new"), "--seeds", "3"], "two or more different seeds"),
    ]:
        done = _bench(*args)
        assert done.returncode == 2 and message in done.stderr.strip().splitlines()[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.txt"]


@pytest.mark.slow
def test_short_run_compares_both_arms_on_every_seed(tmp_path):
    done = _bench("--out", str(tmp_path / "out"), "--seeds", "0", "1", "--steps", "5")
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads((tmp_path / "out" / "rl_curves.json").read_text())
    assert set(data["curves"]) == {"stock/0", "ours/0", "stock/1", "ours/1"}
    assert all(len(c["reward"]) == 1 and len(c["accuracy"]) == 1 for c in data["curves"].values())  # logged at step 5
    assert set(data["report"]) == {"reward, mean", "reward, last quarter", "accuracy, mean", "accuracy, last quarter"}
    assert "ours - stock" in (tmp_path / "out" / "summary.txt").read_text()
    assert (tmp_path / "out" / "rl_curves.png").stat().st_size > 0
