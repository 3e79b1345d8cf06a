"""Bad input to the CLI, a deployment and evaluation (issue 15, item 7: recipe, environment, storage, deployments,
evaluation; the data and model rows are in tests/models/test_bad_model_inputs.py): each row exits 2 with exactly one
line on stderr that names the problem and the fix, no traceback, within seconds, and leaves the state folder (and
the bucket) as it found it.

    .venv/bin/python -m pytest -q tests/flows/test_bad_inputs.py          # about 1-2 minutes on 2 busy cores

Most rows call `flows.cli.main` in this process (a subprocess costs 10-20 s of imports a row on 2 shared cores); the
rows marked `subprocess` run `python -m flows.cli` as a user does. A row that got past every check would start the
pipeline: in-process, `flows.pipeline` and `flows.evaluate` are replaced by modules that fail the test instead.
"""

from __future__ import annotations

import io
import os
import re
import resource
import subprocess
import sys
import time
import types
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
IN_PROCESS_LIMIT_S = 30.0  # a few seconds on an idle machine; the bound leaves room for 2 shared, busy cores
SUBPROCESS_LIMIT_S = 90.0  # the same, plus a fresh interpreter's imports (torch, transformers, TRL's configs)
BAD = pytest.mark.reliability("bad_input")
VERBS = "use|give|write|set|remove|choose|start|fix|pass|raise|lower|keep|delete|export|apply|check|run"
FIX = re.compile(rf"; |\bshould be\b|: ({VERBS})\b| ({VERBS}) ")  # after '; ', an imperative, or "Input should be"


@dataclass
class Case:
    """One bad input: CLI arguments (`{tmp}` is the row's folder), files to create there, environment changes (None
    unsets), the start of the expected line, a pattern it must match, and how it runs."""

    argv: list[str]
    starts: str
    pattern: str
    env: dict[str, str | None] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    subprocess: bool = False
    state: str = "state"  # the state folder, relative to the row's folder; a fresh user's: it does not exist yet


def row(name: str, case: Case):
    return pytest.param(case, id=name, marks=BAD)


RL = ["reasoning_rl.trl.max_steps=4"]
RECIPE_ROWS = [
    row("unknown-top-key", Case(["--check", "epochs=3"], "recipe error: epochs:", "unknown key; remove it")),
    row(
        "unknown-trl-knob",
        Case(["--check", "reasoning_rl.trl.max_step=5"], "recipe error:", "did you mean 'max_steps'"),
    ),
    row("wrong-type", Case(["--check", "seed=abc"], "recipe error: seed:", "valid integer")),
    row("out-of-range", Case(["--check", "data.heldout_permille=900"], "recipe error: data.heldout_permille:", "less")),
    row(
        "batch-not-divisible",
        Case(["--check", "reasoning_rl.trl.num_generations=5"], "recipe error:", r"reasoning_rl\.trl\.num_generations"),
    ),
    row(
        "one-generation",
        Case(
            ["--check", "final_rl.trl.num_generations=1"], "recipe error: final_rl.trl.num_generations:", "at least 2"
        ),
    ),
    row(
        "unknown-reward",
        Case(["--check", "reasoning_rl.rewards={speed: 1.0}"], "recipe error:", "unknown reward 'speed'; choose"),
    ),
    row("unknown-stage", Case(["--check", "distillation.trl.max_steps=3"], "recipe error: distillation:", "unknown")),
    row(
        "empty-file", Case(["--check", "--recipe", "{tmp}/r.yaml"], "recipe error:", "is empty", files={"r.yaml": b""})
    ),
    row(
        "malformed-yaml",
        Case(
            ["--check", "--recipe", "{tmp}/r.yaml"],
            "recipe error:",
            r"not valid YAML: line 3, column 5: expected ',' or '}'",
            files={"r.yaml": b"name: tiny\ndata: {task: chain_sum, eval_size: 20\nseed: 0\n"},
        ),
    ),
    row(
        "binary-file",
        Case(
            ["--check", "--recipe", "{tmp}/r.yaml"],
            "recipe error:",
            "is not a text file",
            files={"r.yaml": bytes(range(256)) * 4},
            subprocess=True,
        ),
    ),
    row(
        "duplicated-key",
        Case(
            ["--check", "--recipe", "{tmp}/r.yaml"],
            "recipe error:",
            r"key 'seed' is given twice \(lines 2 and 4\)",
            files={"r.yaml": b"name: dup\nseed: 1\ndata: {eval_size: 20}\nseed: 2\n"},
        ),
    ),
    row("override-without-equals", Case(["--check", "seed"], "recipe error:", "write it as key.path=value")),
    row("override-empty-part", Case(["--check", "final_rl..max_steps=3"], "recipe error:", "has an empty part")),
    row("missing-file", Case(["--check", "--recipe", "{tmp}/nope.yaml"], "recipe error:", "not found; pass")),
    row(
        "not-a-mapping",
        Case(["--check", "--recipe", "{tmp}/r.yaml"], "recipe error:", "mapping", files={"r.yaml": b"- 1\n- 2\n"}),
    ),
    row(
        "zero-steps", Case(["--check", "final_rl.trl.max_steps=0"], "recipe error: final_rl.trl.max_steps:", "nothing")
    ),
    row(
        "negative-epochs",
        Case(["--check", "cold_start_sft.trl.num_train_epochs=-2"], "recipe error:", "num_train_epochs: -2.0 is negat"),
    ),
    row(
        "zero-epochs",
        Case(["--check", "supervised_merge.trl.num_train_epochs=0"], "recipe error:", "0 epochs with no max_steps"),
    ),
    row(
        "negative-learning-rate",
        Case(["--check", "reasoning_rl.trl.learning_rate=-1"], "recipe error:", "learning_rate: -1.0 must be above 0"),
    ),
    row("zero-temperature", Case(["--check", "final_rl.trl.temperature=0"], "recipe error:", "temperature: 0.0 must")),
    row("float16-on-cpu", Case(["--check", "model.dtype=float16"], "recipe error: model.dtype:", "NaN gradients")),
    row("fp16-on-cpu", Case(["--check", "cold_start_sft.trl.fp16=true"], "recipe error:", "needs a GPU")),
    row(
        "bad-registered-name",
        Case(["--check", "model.registered_name=team/model"], "recipe error:", "registered_name: 'team/model' is not"),
    ),
    row(
        "unsafe-name",
        Case(["--check", "name=../../../../x"], "recipe error: name:", "not a safe name"),
    ),
    row(
        "pool-smaller-than-a-batch",
        Case(["--check", "data.rl_pool_size=2"], "recipe error: data.rl_pool_size:", "cannot fill one generation"),
    ),
    row(
        "missing-reward-model-folder",
        Case(["--check", "final_rl.general_reward.model=./no/such/rm"], "recipe error:", "general_reward.model: no"),
    ),
    row(
        "unresolvable-reward-model",
        Case(
            ["--check", "final_rl.general_reward.model=nobody/no-such-reward-model"],
            "recipe error: final_rl.general_reward.model:",
            "not in the local cache",
            env={"HF_HUB_OFFLINE": "1"},
        ),
    ),
    row(
        "storage-uri-with-secret",
        Case(["--check", "storage.uri=s3://AKIA:pw@bucket/x"], "recipe error:", "carries credentials; remove them"),
    ),
    row("storage-uri-scheme", Case(["--check", "storage.uri=gs://bucket/x"], "recipe error:", "neither s3://")),
    row(
        "deployment-name",
        Case(["--check", "launch.stage_deployment=nodeployment"], "recipe error:", "<flow name>/<deployment name>"),
    ),
]


def closed_url(path: str = "") -> str:
    return f"http://127.0.0.1:{free_port()}{path}"


ENVIRONMENT_ROWS = [
    row("empty-state-dir", Case(RL, "environment error: R1_STATE_DIR is empty", "set it", subprocess=True, state="")),
    row(
        "state-is-a-file",
        Case(RL, "environment error: state folder", "is a file, not a folder", files={"state": b"x"}),
    ),
    row(
        "state-under-a-file",
        Case(RL, "environment error: state folder", "is a file, not a folder", files={"f": b"x"}, state="f/state"),
    ),
    row(
        "state-not-writable",
        Case(RL, "environment error: state folder /sys/kernel/r1-state is not writable", "R1_STATE_DIR", state="/sys"),
    ),
    row(
        "disk-full",
        Case(RL, "environment error: state folder", r"is not writable \(File too large\)", subprocess=True),
    ),
    row(
        "dead-mlflow-server",
        Case(RL, "environment error: MLflow tracking server", "does not answer", env={"MLFLOW_TRACKING_URI": "closed"}),
    ),
    row(
        "dead-prefect-api",
        Case(
            RL,
            "environment error: Prefect API",
            "does not answer.*PREFECT_API_URL",
            env={"PREFECT_API_URL": "closed"},
        ),
    ),
    row(
        "prefect-api-not-http",
        Case(RL, "environment error: PREFECT_API_URL", "not an http", env={"PREFECT_API_URL": "localhost:4200"}),
    ),
    row(
        "deployment-without-server",
        Case([*RL, "launch.stage_deployment=r1-stage-spec/h800"], "launch error:", "export PREFECT_API_URL"),
    ),
]
EVALUATION_ROWS = [
    row("empty-model", Case(["--evaluate", ""], "model error: no model given", "pass models:/", subprocess=True)),
    row("model-uri-without-alias", Case(["--evaluate", "models:/r1-tiny"], "model error:", "write models:/<name>@")),
    row("missing-model-folder", Case(["--evaluate", "{tmp}/no-model"], "model error:", "no model folder")),
    row(
        "unknown-alias-no-store",
        Case(["--evaluate", "models:/r1-tiny@champion"], "model error:", "does not exist yet"),
    ),
]


def prepared(case: Case, tmp: Path) -> tuple[list[str], dict[str, str | None], Path | None]:
    """The row's arguments and environment, its files written; the state folder (None for an empty setting)."""
    for name, data in case.files.items():
        (tmp / name).write_bytes(data)
    state = None if not case.state else Path(case.state) if case.state.startswith("/") else tmp / case.state
    if state == Path("/sys"):
        state = Path("/sys/kernel/r1-state")  # sysfs: not writable even by root (no chmod trick works as root)
    env = {"R1_STATE_DIR": str(state) if state else "", "PREFECT_API_URL": None, "MLFLOW_TRACKING_URI": None}
    env |= {
        k: closed_url("/api" if k == "PREFECT_API_URL" else "") if v == "closed" else v for k, v in case.env.items()
    }
    argv = [a.replace("{tmp}", str(tmp)) for a in case.argv]
    return argv, env, state


DIGEST_CACHE = ("cache", "cache/file_sha256.sqlite")  # sha256s of files read (models/fingerprints.py): true either way


def listing(folder: Path | None) -> list[tuple[str, int]]:
    """Every path under `folder` with its size (-1: a folder), but the digest cache, which the data checks may fill
    in a state folder that exists (a record of hashes of unchanged files, complete whatever happens next), and lock
    files (models/stage_lock.py: the MLflow store's first-use lock beside its db), which hold no data."""
    if folder is None or not folder.exists() or folder == Path("/sys/kernel"):
        return []
    if folder.is_file():
        return [(folder.name, folder.stat().st_size)]
    found = ((str(p.relative_to(folder)), p.stat().st_size if p.is_file() else -1) for p in folder.rglob("*"))
    return sorted(entry for entry in found if entry[0] not in DIGEST_CACHE and not entry[0].endswith(".lock"))


def failing_module(name: str, attribute: str) -> types.ModuleType:
    module = types.ModuleType(name)

    def started(*args, **kwargs):
        raise AssertionError(f"a bad input got past every check: {name}.{attribute} was started")

    setattr(module, attribute, started)
    return module


def run_in_process(argv: list[str], env: dict[str, str | None], monkeypatch) -> tuple[int, str]:
    from flows.cli import main

    monkeypatch.setitem(sys.modules, "flows.pipeline", failing_module("flows.pipeline", "r1_pipeline"))
    monkeypatch.setitem(sys.modules, "flows.evaluate", failing_module("flows.evaluate", "r1_evaluate"))
    saved = dict(os.environ)
    for name, value in env.items():
        os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)
    err, out = io.StringIO(), io.StringIO()
    try:
        with redirect_stderr(err), redirect_stdout(out):
            code = main(argv)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return code, err.getvalue()


def small_file_limit() -> None:
    """In the child: no file may grow past 16 KiB (a full disk as the first write sees it; Python ignores SIGXFSZ,
    so the write fails with EFBIG instead of killing the process)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, 16 * 1024))


def run_subprocess(argv: list[str], env: dict[str, str | None], full_disk: bool) -> tuple[int, str]:
    child = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "COV_"))}
    for name, value in env.items():
        child.pop(name, None) if value is None else child.__setitem__(name, value)
    child["PYTHONDONTWRITEBYTECODE"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", *argv],
        cwd=REPO,
        env=child,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_LIMIT_S,
        preexec_fn=small_file_limit if full_disk else None,
    )
    return done.returncode, done.stderr


def assert_refused(case: Case, code: int, err: str, took: float, limit: float) -> None:
    lines = err.splitlines()
    assert code == 2, f"exit {code}, stderr: {err[-2000:]}"
    assert len(lines) == 1 and "Traceback" not in err, f"expected one line, got {len(lines)}: {err[-2000:]}"
    line = lines[0]
    assert line.startswith(case.starts), line
    assert re.search(case.pattern, line), f"{case.pattern!r} not in {line!r}"
    assert FIX.search(line), f"the line names no fix: {line!r}"
    assert took < limit, f"refused after {took:.1f} s"


@pytest.mark.parametrize("case", RECIPE_ROWS + ENVIRONMENT_ROWS + EVALUATION_ROWS)
def test_bad_input_refused_in_one_line(case: Case, tmp_path: Path, monkeypatch, request):
    argv, env, state = prepared(case, tmp_path)
    before = (listing(state), listing(tmp_path))
    started = time.monotonic()
    if case.subprocess:
        code, err = run_subprocess(argv, env, full_disk=request.node.callspec.id == "disk-full")
    else:
        code, err = run_in_process(argv, env, monkeypatch)
    took = time.monotonic() - started
    assert_refused(case, code, err, took, SUBPROCESS_LIMIT_S if case.subprocess else IN_PROCESS_LIMIT_S)
    assert (listing(state), listing(tmp_path)) == before, "the refused run wrote something"


def bucket_listing(server, bucket: str) -> list[tuple[str, int]]:
    found = server.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    return sorted((o["Key"], o["Size"]) for o in found)


STORAGE_ROWS = [
    row("no-such-bucket", Case([*RL, "storage.uri=s3://no-such-bucket-r1/x"], "storage error:", "does not exist")),
    row("bad-credentials", Case([*RL, "storage.uri=s3://{bucket}/x"], "storage error:", "refused the credentials")),
    row(
        "no-credentials",
        Case(
            [*RL, "storage.uri=s3://{bucket}/x"],
            "storage error: no AWS credentials",
            "AWS_PROFILE",
            env={"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_EC2_METADATA_DISABLED": "true"},
        ),
    ),
    row(
        "unreachable-endpoint",
        Case(
            [*RL, "storage.uri=s3://{bucket}/x"], "storage error:", "cannot reach", env={"R1_S3_ENDPOINT_URL": "closed"}
        ),
    ),
    row(
        "endpoint-not-http",
        Case(
            [*RL, "storage.uri=s3://{bucket}/x"],
            "storage error:",
            "must start with http",
            env={"R1_S3_ENDPOINT_URL": "minio:9000"},
        ),
    ),
]


@pytest.mark.parametrize("case", STORAGE_ROWS)
def test_bad_storage_refused_in_one_line(case: Case, s3, tmp_path: Path, monkeypatch, request):
    import requests

    server, bucket = s3
    case = Case([a.replace("{bucket}", bucket) for a in case.argv], case.starts, case.pattern, dict(case.env))
    case.env.setdefault("R1_S3_ENDPOINT_URL", server.endpoint_url)
    argv, env, state = prepared(case, tmp_path)
    before = (listing(state), bucket_listing(server, bucket))
    auth = f"{server.endpoint_url}/moto-api/reset-auth"
    checked = request.node.callspec.id == "bad-credentials"
    if checked:  # moto checks every request from now on: the test key is unknown to it
        requests.post(auth, data=b"0", timeout=5)
    started = time.monotonic()
    try:
        code, err = run_in_process(argv, env, monkeypatch)
    finally:
        if checked:
            requests.post(auth, data=b"inf", timeout=5)
    assert_refused(case, code, err, time.monotonic() - started, IN_PROCESS_LIMIT_S)
    assert (listing(state), bucket_listing(server, bucket)) == before, "the refused run wrote something"


DEPLOYMENT_ROWS = [
    pytest.param("r1_pipeline", {"overrides": ["reasoning_rl.trl.num_generations=5"]}, "recipe error:", marks=BAD),
    pytest.param("r1_pipeline", {"recipe": {"name": "../x"}}, "recipe error: name:", marks=BAD),
    pytest.param("r1_pipeline", {"recipe_path": "no-such-recipe"}, "recipe error: no recipe named", marks=BAD),
    pytest.param("r1_evaluate", {"model": "models:/r1-tiny@nobody"}, "model error:", marks=BAD),
]


@pytest.mark.slow
@pytest.mark.parametrize(("flow", "params", "starts"), DEPLOYMENT_ROWS)
def test_bad_deployment_parameter_fails_the_run(flow, params, starts, prefect_server, tmp_path, monkeypatch):
    """What the Prefect UI's Run button does with a bad parameter: the flow run ends Failed at once, its message is
    the CLI's one line, and nothing was written to the state folder."""
    import importlib

    monkeypatch.setenv("R1_STATE_DIR", str(tmp_path / "state"))
    (tmp_path / "state").mkdir()
    function = getattr(importlib.import_module(f"flows.{flow.removeprefix('r1_')}"), flow)
    started = time.monotonic()
    state = function(**params, return_state=True)
    took = time.monotonic() - started
    assert state.is_failed(), state
    assert state.message.startswith(starts) and "\n" not in state.message and FIX.search(state.message), state.message
    assert took < IN_PROCESS_LIMIT_S and listing(tmp_path / "state") == []


@BAD
def test_make_eval_passes_an_empty_model_through():
    """`make eval MODEL=` (or no MODEL) reaches the CLI as `--evaluate ""`, which the empty-model row refuses: it
    must never drop the flag and run the whole pipeline."""
    line = next(x for x in (REPO / "Makefile").read_text().splitlines() if "--evaluate" in x)
    assert '--evaluate "$(MODEL)"' in line


@BAD
def test_unknown_alias_in_a_registry(tmp_path: Path, monkeypatch):
    """A registry that exists but has no such alias: refused before anything is downloaded, leaving no empty
    registry folder (`make eval MODEL=models:/x/999` used to)."""
    from mlflow import MlflowClient

    state = tmp_path / "state"
    state.mkdir()
    uri = f"sqlite:///{state / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).create_registered_model("r1-tiny")
    before = listing(state)
    env = {"R1_STATE_DIR": str(state), "MLFLOW_TRACKING_URI": uri, "PREFECT_API_URL": None}
    for model, message in (("models:/r1-tiny@champion", "alias champion not found"), ("models:/r1-tiny/999", "999")):
        started = time.monotonic()
        code, err = run_in_process(["--evaluate", model], env, monkeypatch)
        case = Case([], "model error:", rf"'{model}' is not in the registry.*{message}")
        assert_refused(case, code, err, time.monotonic() - started, IN_PROCESS_LIMIT_S)
    assert listing(state) == before and not (state / "registry").exists()
