"""The GPU benchmark's code paths on the CPU: a tiny model through every phase, the ratio table, MLflow logging
and the one-line errors for bad arguments. (The numbers mean something only on a GPU: `make bench-gpu`.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from models.benchmarks.gpu import compare, table


def _result(bench: str, arm: str, rate: float, **extra) -> dict:
    key = "train_tokens_per_s" if bench == "grpo" else "tokens_per_s"
    return {"bench": bench, "arm": arm, key: rate, "step_s": 1 / rate, "losses": [1.0, 0.5], **extra}


def test_ratios_are_medians_against_stock_in_the_same_results():
    results = [
        _result("sft", "stock", 100.0, peak_gib=6.0),
        _result("sft", "ours", 190.0, peak_gib=30.0, losses=[1.0, 0.5001]),
        _result("sft", "stock", 110.0, peak_gib=6.0),
        _result("sft", "ours", 200.0, peak_gib=30.0),
        _result("grpo", "stock", 10.0, rollout_held_mib=0.0),
        _result("grpo", "ours", 60.0, rollout_held_mib=0.0),
        {"bench": "grpo", "arm": "ours", "error": "RuntimeError: failed", "round": 1},
    ]
    rows = {(r["bench"], r["arm"]): r for r in compare(results)}
    assert rows["sft", "ours"]["ratio"] == pytest.approx(195 / 105)
    assert rows["sft", "ours"]["loss_gap"] == pytest.approx(1e-4)
    assert rows["grpo", "ours"]["ratio"] == pytest.approx(6.0)
    text = table(list(rows.values()))
    assert "sft THROUGHPUT RATIO ours/stock = 1.86x" in text
    grpo_line = next(line for line in text.splitlines() if line.startswith("grpo stock -> ours"))
    assert grpo_line.endswith("rollout_held_mib 0 -> 0")  # no ratio against a zero
    assert "sft PEAK MEMORY RATIO ours/stock = 5.00x (same batch; stock checkpoints activations, ours does not)" in text


def test_peak_memory_is_held_against_stock_with_the_same_checkpointing():
    results = [
        _result("sft", "stock", 100.0, peak_gib=6.0),
        _result("sft", "stock_nogc", 120.0, peak_gib=45.0),
        _result("sft", "ours", 200.0, peak_gib=32.0),
        _result("sft", "ours_gc", 170.0, peak_gib=5.4),
    ]
    rows = {r["arm"]: r for r in compare(results)}
    assert rows["ours"]["ratio"] == pytest.approx(2.0)  # throughput: always against TRL's defaults
    assert (rows["ours"]["memory_reference"], rows["ours"]["memory_ratio"]) == ("stock_nogc", pytest.approx(32 / 45))
    assert (rows["ours_gc"]["memory_reference"], rows["ours_gc"]["memory_ratio"]) == ("stock", pytest.approx(0.9))
    assert rows["stock_nogc"]["memory_reference"] == "stock"
    text = table(list(rows.values()))
    assert "sft PEAK MEMORY RATIO ours/stock_nogc = 0.71x (same batch, same activation checkpointing)" in text
    assert "sft PEAK MEMORY RATIO ours_gc/stock = 0.90x (same batch, same activation checkpointing)" in text


def _bench(tmp_path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "models.benchmarks.gpu", "--out", str(tmp_path / "out"), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arms", "stock", "fast"], "unknown arm 'fast'"),
        (["--profile", "sft"], "--profile 'sft': give BENCH:ARM"),
        (["--syncs", "grpo:ours_gc"], "--syncs 'grpo:ours_gc': give BENCH:ARM"),
        (["--phases", "dpo"], "invalid choice: 'dpo'"),
    ],
)
def test_bad_arguments_fail_in_one_line_before_any_work(tmp_path, args, message):
    done = _bench(tmp_path, *args)
    assert done.returncode == 2
    assert message in done.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_tiny_run_prints_ratios_and_logs_them_to_mlflow(tmp_path, monkeypatch):
    import os

    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    done = _bench(
        tmp_path, "--tiny", "--rounds", "1", "--arms", "stock", "stock_nogc", "ours", "--syncs", "sft:ours", env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "grpo THROUGHPUT RATIO ours/stock" in summary and "sft THROUGHPUT RATIO ours/stock" in summary
    assert "sft:ours: 0 host syncs a step" in (tmp_path / "out" / "syncs_sft_ours.txt").read_text()  # none on a CPU
    results = [json.loads(line) for line in (tmp_path / "out" / "bench.jsonl").read_text().splitlines()]
    assert {(r["bench"], r["arm"]) for r in results} == {
        ("grpo", "stock"),
        ("grpo", "ours"),
        ("sft", "stock"),
        ("sft", "stock_nogc"),
        ("sft", "ours"),
    }
    assert not any("error" in r for r in results)
    sft_ours = next(r for r in results if r["bench"] == "sft" and r["arm"] == "ours")
    assert len(sft_ours["losses"]) == 3 and all(loss > 0 for loss in sft_ours["losses"])  # every step's loss
    mlflow.set_tracking_uri(uri)
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.info.run_name == "bench-gpu"
    assert {"sft/ours/ratio", "grpo/ours/ratio", "sft/stock/tokens_per_s"} <= set(run.data.metrics)


def test_arms_cannot_leak_patches_of_transformers_modeling_modules_into_later_arms():
    from transformers.models.qwen2 import modeling_qwen2

    from models.benchmarks.gpu import restored_modeling_modules

    original = modeling_qwen2.Qwen2RMSNorm
    with restored_modeling_modules():
        modeling_qwen2.Qwen2RMSNorm = object  # what Liger does to every Qwen2 built afterwards
    assert modeling_qwen2.Qwen2RMSNorm is original


def test_warm_first_only_warms_up_at_the_first_length_alone(tmp_path, monkeypatch):
    import argparse

    from models.benchmarks import gpu

    calls = []

    def fake_grpo(model_dir, arm, warmup, measured):
        calls.append((gpu.LENGTH, arm, warmup, measured))
        return dict(bench="grpo", arm=arm, length=gpu.LENGTH)

    monkeypatch.setattr(gpu, "run_grpo", fake_grpo)
    args = argparse.Namespace(rounds=1, phases=["grpo"], lengths=[4096, 1024], arms=["stock", "ours"], out=tmp_path)
    steps = {"grpo": (1, 2), "grpo_stock": (1, 1)}
    for warm_first_only, expected in ((True, [1, 1, 0, 0]), (False, [1, 1, 1, 1])):
        calls.clear()
        gpu._trainer_rounds(argparse.Namespace(**vars(args), warm_first_only=warm_first_only), tmp_path, steps)
        assert [c[2] for c in calls] == expected
        assert [(c[0], c[1], c[3]) for c in calls] == [
            (4096, "stock", 1),
            (4096, "ours", 2),
            (1024, "stock", 1),
            (1024, "ours", 2),
        ]


def test_hold_after_warmup_waits_for_the_file_only_at_the_last_warmup_step(tmp_path):
    import threading
    import types

    from models.benchmarks.gpu import HoldAfterWarmup

    flag = tmp_path / "done"
    hold = HoldAfterWarmup(flag, warmup=2, poll_s=0.01)
    hold.callback.on_step_end(None, types.SimpleNamespace(global_step=1), None)  # a warm-up step: no wait
    assert hold.waited_s == 0.0
    threading.Timer(0.3, flag.touch).start()
    hold.callback.on_step_end(None, types.SimpleNamespace(global_step=2), None)
    assert flag.exists() and hold.waited_s >= 0.25
