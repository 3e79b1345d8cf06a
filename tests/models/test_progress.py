"""models/progress.py: a training stage reports its step, speed and ETA in one readable line at a bounded rate."""

from __future__ import annotations

from types import SimpleNamespace

from models.progress import PROGRESS_LINE, ProgressReport, duration, progress_line


def test_line_reads_and_parses():
    line = progress_line("reasoning_rl", 40, 200, 1.31, {"reward": 0.4123, "loss": 0.0031, "epoch": 1.0})
    assert line == "progress reasoning_rl step 40/200 (20%) 1.31 s/step ETA 3m29s reward 0.4123 loss 0.0031"
    found = PROGRESS_LINE.search(line)
    assert (found["stage"], found["step"], found["total"]) == ("reasoning_rl", "40", "200")
    assert (duration(45), duration(3725)) == ("45s", "1h02m")


def test_rate_is_bounded_and_the_last_step_is_always_reported(monkeypatch, caplog):
    monkeypatch.setenv("R1_PROGRESS_EVERY_S", "3600")
    report, args, control = ProgressReport("cold_start_sft"), SimpleNamespace(), SimpleNamespace()
    state = SimpleNamespace(global_step=0, max_steps=50, is_world_process_zero=True)
    report.on_train_begin(args, state, control)
    with caplog.at_level("INFO", logger="r1.progress"):
        for step in range(1, 51):
            state.global_step = step
            report.on_log(args, state, control, logs={"loss": 1.0 / step})
            report.on_step_end(args, state, control)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("progress cold_start_sft step 50/50 (100%)")
