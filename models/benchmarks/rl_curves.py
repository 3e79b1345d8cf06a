"""Do our rollouts change what GRPO learns? reasoning_rl on the embedded tiny pipeline, once with our rollouts
(`rollout: static_cache`, FastGRPOTrainer) and once with TRL's stock path (`rollout: hf_generate`), from the same
cold-start policy, with the same seed, data and settings; repeated over seeds. It prints each arm's reward and
accuracy-reward curves (their means over the whole run and over its last quarter) and the paired difference
ours - stock with a 95% interval over seeds. The two arms draw different random numbers, so single runs differ;
what must agree is the curves, within the seed-to-seed noise.

    make bench-rl-curves                                     # CPU: 3 seeds x 150 steps, ~3 minutes on 2 cores
    python -m models.benchmarks.rl_curves --out results/ --seeds 0 1 2 --steps 150

Each stage logs to MLflow as in the pipeline (experiment `rl-curves`; a SQLite store under --out unless
MLFLOW_TRACKING_URI is set); the curves are read back from there, drawn into rl_curves.png and written with the
figures to rl_curves.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

ARMS = {"stock": "hf_generate", "ours": "static_cache"}
CURVES = {"reward": "reward", "accuracy": "rewards/accuracy_reward/mean"}  # name -> TRL's logged metric
T_975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}  # Student t, 95% two-sided


def rl_recipe(seed: int, steps: int, rollout: str):
    from models.recipe import load_recipe

    overrides = [f"seed={seed}", f"reasoning_rl.trl.max_steps={steps}", f"reasoning_rl.rollout={rollout}"]
    return load_recipe(None, [*overrides, "reasoning_rl.alarms.check_every=0"])  # held-out checks: not compared


def tracked_stage(stage: str, recipe, inputs: dict, output: Path, experiment: str = "rl-curves"):
    """One stage through models.run_stage, as the flow runs it, into its own MLflow run; returns (record, run id)."""
    from models.run_stage import run
    from models.stage_io import stage_spec
    from models.tracking import client, ensure_experiment

    run_id = client().create_run(ensure_experiment(experiment), run_name=output.name).info.run_id
    spec = stage_spec(stage, recipe, inputs, output=str(output), mlflow_run_id=run_id)
    return run(spec), run_id


def curve(run_id: str, metric: str) -> list[tuple[int, float]]:
    from models.tracking import client

    return sorted((m.step, m.value) for m in client().get_metric_history(run_id, metric))


def summary(curves: dict[str, list[tuple[int, float]]]) -> dict:
    """Each curve's mean over the whole run and over its last quarter of logged steps."""
    figures = {}
    for name, points in curves.items():
        values = [v for _, v in points]
        figures[f"{name}, mean"] = statistics.fmean(values)
        figures[f"{name}, last quarter"] = statistics.fmean(values[-max(1, len(values) // 4) :])
    return figures


def paired(differences: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the mean difference and its 95% t-interval over seeds (no interval from one seed)."""
    mean = statistics.fmean(differences)
    if len(differences) < 2:
        return mean, float("nan"), float("nan")
    half = T_975.get(len(differences) - 1, 1.96) * statistics.stdev(differences) / len(differences) ** 0.5
    return mean, mean - half, mean + half


def compare(runs: dict[tuple[str, int], dict]) -> dict:
    """Per figure: each arm's value on every seed, and the paired difference ours - stock with its interval."""
    seeds = sorted({seed for _, seed in runs})
    report = {}
    for figure in next(iter(runs.values())):
        per_arm = {arm: [runs[arm, s][figure] for s in seeds] for arm in ARMS}
        mean, low, high = paired([o - s for o, s in zip(per_arm["ours"], per_arm["stock"], strict=True)])
        report[figure] = {
            **per_arm,
            "difference": mean,
            "low": low,
            "high": high,
            "within_noise": bool(low <= 0 <= high),
        }
    return report


def table(report: dict, seeds: list[int]) -> str:
    lines = [f"reasoning_rl curves, ours (static_cache) vs stock (hf_generate), seeds {seeds}:"]
    for figure, row in report.items():
        per_seed = " | ".join(f"{arm} " + " ".join(f"{v:.3f}" for v in row[arm]) for arm in ARMS)
        verdict = "within noise" if row["within_noise"] else "OUTSIDE the seed noise"
        lines.append(
            f"{figure}: {per_seed} | ours - stock {row['difference']:+.3f} "
            f"[{row['low']:+.3f}, {row['high']:+.3f}] ({verdict})"
        )
    return "\n".join(lines)


def plot(curves: dict[tuple[str, int], dict], path: Path) -> None:
    from models.plots import close, curves_figure

    lines = {f"{arm} seed {seed}": by_name["reward"] for (arm, seed), by_name in sorted(curves.items())}
    fig = curves_figure(lines, "reasoning_rl reward: ours (static_cache) and stock (hf_generate)")
    fig.savefig(path, dpi=100)
    close(fig)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench-results")) / "rl_curves")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    if len(set(args.seeds)) != len(args.seeds) or len(args.seeds) < 2:
        parser.error("--seeds needs two or more different seeds: the noise is measured between them")
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"--out {args.out} already holds files; give an empty or new folder")
    return args


def main() -> None:
    args = _arguments()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["R1_STATE_DIR"] = str(args.out.resolve())  # MLflow (unless MLFLOW_TRACKING_URI is set) goes here too
    from models.factory import model_record

    base = rl_recipe(args.seeds[0], args.steps, "static_cache")
    cold, _ = tracked_stage(
        "cold_start_sft", base, {"model": model_record(base.model.base, "base_model")}, args.out / "cold_start_sft"
    )
    curves, runs = {}, {}
    for seed in args.seeds:
        for arm, rollout in ARMS.items():  # the arms alternate, seed by seed
            recipe = rl_recipe(seed, args.steps, rollout)
            _, run_id = tracked_stage("reasoning_rl", recipe, {"model": cold}, args.out / f"rl_{arm}_{seed}")
            curves[arm, seed] = {name: curve(run_id, metric) for name, metric in CURVES.items()}
            runs[arm, seed] = summary(curves[arm, seed])
            print("RESULT", arm, seed, json.dumps(runs[arm, seed]), flush=True)
    report = compare(runs)
    text = table(report, args.seeds)
    print(text)
    (args.out / "summary.txt").write_text(text + "\n")
    (args.out / "rl_curves.json").write_text(
        json.dumps({"report": report, "curves": {f"{arm}/{seed}": c for (arm, seed), c in curves.items()}}, indent=1)
    )
    plot(curves, args.out / "rl_curves.png")


if __name__ == "__main__":
    main()
