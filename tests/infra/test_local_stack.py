"""infra/local_stack.py: process groups with pid files and logs, health waits that name the log, refused ports, and
(slow) the real stack: `up` twice, `status`, `env`, `down`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra import local_stack
from infra.local_stack import Service, Stack, StackError

NAMES = ("prefect-server", "mlflow-server", "worker")
# A process that starts a child in its own process group and waits: `down` must end both.
PARENT_AND_CHILD = [
    sys.executable,
    "-c",
    "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
    "time.sleep(600)",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def stack(tmp_path) -> Stack:
    stack = Stack(state=tmp_path / "state", prefect_port=free_port(), mlflow_port=free_port())
    stack.folder.mkdir(parents=True)
    return stack


def group_members(pgid: int) -> list[int]:
    found = subprocess.run(["ps", "-o", "pid=", "-g", str(pgid)], capture_output=True, text=True).stdout
    return [int(pid) for pid in found.split()]


def test_stop_ends_the_whole_process_group_and_removes_the_pid_file(stack):
    pid = local_stack.start(stack, Service("worker", PARENT_AND_CHILD, {}, None))
    deadline = time.monotonic() + 30
    while len(group_members(pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(group_members(pid)) == 2
    assert local_stack.running_pid(stack, "worker") == pid

    assert local_stack.stop(stack, "worker") == f"worker: stopped (pid {pid})"
    assert group_members(pid) == []
    assert not local_stack.pid_file(stack, "worker").exists()
    assert local_stack.stop(stack, "worker") == "worker: not running"


def test_a_service_that_exits_during_start_names_its_log(stack):
    failing = [sys.executable, "-c", "import sys; print('cannot bind'); sys.exit(1)"]
    local_stack.start(stack, Service("prefect-server", failing, {}, stack.prefect_port))
    with pytest.raises(StackError, match=r"^prefect-server exited during start; see .*prefect-server\.log$"):
        local_stack.wait_healthy(stack, "prefect-server", timeout_s=30)
    assert "cannot bind" in local_stack.log_file(stack, "prefect-server").read_text()


def test_a_service_that_never_answers_times_out_naming_its_log(stack):
    local_stack.start(stack, Service("mlflow-server", PARENT_AND_CHILD, {}, stack.mlflow_port))
    with pytest.raises(StackError, match=r"^mlflow-server not healthy after 1 s; see .*mlflow-server\.log$"):
        local_stack.wait_healthy(stack, "mlflow-server", timeout_s=1)
    local_stack.stop(stack, "mlflow-server")


def test_a_busy_port_is_refused_before_anything_starts(stack):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", stack.prefect_port))
        busy.listen()
        with pytest.raises(StackError, match=f"port {stack.prefect_port} on 127.0.0.1 is in use.*--prefect-port"):
            local_stack.start(stack, Service("prefect-server", PARENT_AND_CHILD, {}, stack.prefect_port))
    assert not local_stack.pid_file(stack, "prefect-server").exists()


def test_main_reports_a_busy_port_in_one_line(stack, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", stack.prefect_port))
        busy.listen()
        code = local_stack.main(["up", "--state", str(stack.state), "--prefect-port", str(stack.prefect_port)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("stack error: prefect-server: port") and err.count("\n") == 1


def test_a_stale_pid_file_counts_as_not_running_and_goes(stack):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    local_stack.pid_file(stack, "worker").write_text(str(dead.pid))
    assert local_stack.running_pid(stack, "worker") is None
    assert not local_stack.pid_file(stack, "worker").exists()


def test_a_running_stack_keeps_its_ports(stack):
    local_stack.save_ports(stack)
    local_stack.start(stack, Service("worker", PARENT_AND_CHILD, {}, None))
    try:
        moved = Stack(state=stack.state, prefect_port=free_port(), mlflow_port=stack.mlflow_port)
        with pytest.raises(StackError, match=f"already runs on ports {stack.prefect_port} .*run `down` first"):
            local_stack.refuse_other_ports(moved)
        local_stack.refuse_other_ports(local_stack.saved_stack(stack.state))
    finally:
        local_stack.stop(stack, "worker")


@pytest.mark.parametrize(
    ("given", "saved", "expected"),
    [
        ((None, None), None, (4200, 5000)),
        ((None, None), (4300, 5100), (4300, 5100)),
        ((4400, None), (4300, 5100), (4400, 5100)),
    ],
)
def test_ports_given_win_over_those_of_the_last_up(tmp_path, given, saved, expected):
    if saved:
        local_stack.save_ports(Stack(state=tmp_path, prefect_port=saved[0], mlflow_port=saved[1]))
    found = local_stack.saved_stack(tmp_path, *given)
    assert (found.prefect_port, found.mlflow_port) == expected


def test_env_is_empty_when_the_stack_is_down(stack):
    assert local_stack.env_lines(stack) == ""


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (["infra/deploy.py", "infra/prefect.yaml"], [sys.executable, "-m", "infra.deploy"]),
        (["infra/prefect.yaml"], ["prefect", "--no-prompt", "deploy", "--all", "--prefect-file", "infra/prefect.yaml"]),
        ([], None),
    ],
)
def test_the_deployments_are_applied_by_infra_deploy_else_from_prefect_yaml(tmp_path, monkeypatch, files, expected):
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    monkeypatch.setattr(local_stack, "REPO", tmp_path)
    command = local_stack.deploy_command()
    if command and command[0].endswith("prefect"):
        command = ["prefect", *command[1:]]
    assert command == expected


def run_stack(*args: str) -> subprocess.CompletedProcess:
    """`python -m infra.local_stack ARGS` as a user runs it, in an environment that names no other servers."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    return subprocess.run(
        [sys.executable, "-m", "infra.local_stack", *args],
        env=env,
        cwd=Path(local_stack.__file__).parent.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_up_is_idempotent_and_down_frees_everything(tmp_path):
    state, prefect_port, mlflow_port = tmp_path / "state", free_port(), free_port()
    ports = ("--state", str(state), "--prefect-port", str(prefect_port), "--mlflow-port", str(mlflow_port))
    first = run_stack("up", *ports, "--no-deploy")
    assert first.returncode == 0, first.stderr
    try:
        assert first.stdout.count(": started (pid") == 3
        assert f"http://127.0.0.1:{prefect_port}/deployments" in first.stdout
        assert f"MLFLOW_TRACKING_URI=http://127.0.0.1:{mlflow_port}" in first.stdout
        pids = {name: int((state / "stack" / f"{name}.pid").read_text()) for name in NAMES}

        second = run_stack("up", "--state", str(state), "--no-deploy")  # the ports of the first `up`
        assert second.returncode == 0, second.stderr
        assert second.stdout.count("already running") == 3
        assert run_stack("status", "--state", str(state)).returncode == 0
        assert run_stack("env", "--state", str(state)).stdout.split() == [
            f"PREFECT_API_URL=http://127.0.0.1:{prefect_port}/api",
            f"MLFLOW_TRACKING_URI=http://127.0.0.1:{mlflow_port}",
        ]
    finally:
        down = run_stack("down", "--state", str(state))
    assert down.returncode == 0, down.stderr
    assert down.stdout.count(": stopped (pid") == 3
    assert all(group_members(pid) == [] for pid in pids.values())
    assert list((state / "stack").glob("*.pid")) == []
    assert local_stack.port_is_free(prefect_port) and local_stack.port_is_free(mlflow_port)
    assert run_stack("status", "--state", str(state)).returncode == 3
