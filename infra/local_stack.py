"""The local stack, no Docker: a Prefect server, an MLflow server and a process worker on pool `r1-cpu`, all on the
state folder the demo uses, so both UIs show the demo's runs and deployments can be started from the Prefect UI.

    python -m infra.local_stack up [--state .state] [--prefect-port 4200] [--mlflow-port 5000] [--no-deploy]
    python -m infra.local_stack status [--state .state]    # what runs, and where to click
    python -m infra.local_stack env [--state .state]       # PREFECT_API_URL=... MLFLOW_TRACKING_URI=... (for `env`)
    python -m infra.local_stack down [--state .state]

(`make up` / `make down` run it.) Each process runs in its own process group with its pid file and log in
<state>/stack/; `up` waits until each one is healthy, applies the deployments (`python -m infra.deploy`), and is
idempotent; `down` ends each process group and removes its pid file. Set PREFECT_API_URL and MLFLOW_TRACKING_URI to
what `env` prints for a terminal run to use the stack.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
POOL = "r1-cpu"
BIN = Path(sys.executable).parent
HEALTH_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 20.0


class StackError(RuntimeError):
    """The stack cannot start or stop; the message (one line) says what to look at."""


@dataclass(frozen=True)
class Stack:
    """Where the stack keeps its files and which ports it listens on."""

    state: Path
    prefect_port: int = 4200
    mlflow_port: int = 5000

    @property
    def folder(self) -> Path:
        return self.state / "stack"

    @property
    def prefect_url(self) -> str:
        return f"http://{HOST}:{self.prefect_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"{self.prefect_url}/api"

    @property
    def mlflow_url(self) -> str:
        return f"http://{HOST}:{self.mlflow_port}"

    def client_env(self) -> dict[str, str]:
        """What a flow run (the worker's, or one from a terminal) needs to use this stack and this state folder."""
        return {
            "PREFECT_API_URL": self.prefect_api_url,
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "R1_STATE_DIR": str(self.state),
            "PREFECT_HOME": str(self.state / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }


@dataclass(frozen=True)
class Service:
    """One long-running process of the stack."""

    name: str
    command: list[str]
    env: dict[str, str]
    port: int | None  # the port it listens on (checked free before it starts), None for the worker


def services(stack: Stack) -> list[Service]:
    """The stack's processes in start order (the worker last: it needs the server and the deployments' pools)."""
    prefect_server = Service(
        "prefect-server",
        [str(BIN / "prefect"), "--no-prompt", "server", "start", "--host", HOST, "--port", str(stack.prefect_port)],
        {**stack.client_env(), "PREFECT_UI_API_URL": stack.prefect_api_url},
        stack.prefect_port,
    )
    mlflow_server = Service(
        "mlflow-server",
        [
            *(str(BIN / "mlflow"), "server", "--host", HOST, "--port", str(stack.mlflow_port), "--workers", "2"),
            *("--backend-store-uri", f"sqlite:///{stack.state / 'mlflow.db'}"),
            *("--artifacts-destination", str(stack.state / "mlartifacts")),
        ],
        {},
        stack.mlflow_port,
    )
    worker = Service(
        "worker",
        [str(BIN / "prefect"), "--no-prompt", "worker", "start", "--pool", POOL, "--type", "process"],
        stack.client_env(),
        None,
    )
    return [prefect_server, mlflow_server, worker]


def pid_file(stack: Stack, name: str) -> Path:
    return stack.folder / f"{name}.pid"


def log_file(stack: Stack, name: str) -> Path:
    return stack.folder / f"{name}.log"


def running_pid(stack: Stack, name: str) -> int | None:
    """The pid of the service's process group leader if it still runs, else None (a stale pid file is removed)."""
    path = pid_file(stack, name)
    try:
        pid = int(path.read_text())
        reap(pid)
        if os.getpgid(pid) == pid:
            return pid
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        pass
    path.unlink(missing_ok=True)
    return None


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def start(stack: Stack, service: Service) -> int:
    """Start the service in its own process group (it outlives this command), logging into its log file."""
    if service.port is not None and not port_is_free(service.port):
        raise StackError(
            f"{service.name}: port {service.port} on {HOST} is in use by another program; pick another "
            f"port (--prefect-port / --mlflow-port, or PREFECT_PORT= / MLFLOW_PORT= for make)"
        )
    with log_file(stack, service.name).open("ab") as log:
        process = subprocess.Popen(
            service.command,
            cwd=REPO,
            env={**os.environ, **service.env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file(stack, service.name).write_text(str(process.pid))
    return process.pid


def answers(url: str, body: dict | None = None) -> object | None:
    """The JSON (or text) an HTTP endpoint answers with status 200, or None when it does not (yet)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def healthy(stack: Stack, name: str) -> bool:
    """Prefect: /api/health; MLflow: /health; the worker: an ONLINE worker in its pool on the server."""
    if name == "prefect-server":
        return answers(f"{stack.prefect_api_url}/health") is True
    if name == "mlflow-server":
        return answers(f"{stack.mlflow_url}/health") == "OK"
    workers = answers(f"{stack.prefect_api_url}/work_pools/{POOL}/workers/filter", {})
    return isinstance(workers, list) and any(worker.get("status") == "ONLINE" for worker in workers)


def wait_healthy(stack: Stack, name: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not healthy(stack, name):
        if running_pid(stack, name) is None:
            raise StackError(f"{name} exited during start; see {log_file(stack, name)}")
        if time.monotonic() > deadline:
            raise StackError(f"{name} not healthy after {timeout_s:.0f} s; see {log_file(stack, name)}")
        time.sleep(0.5)


def deploy_command() -> list[str] | None:
    """How the deployments are applied: infra/deploy.py (pools first), else `prefect deploy` of infra/prefect.yaml."""
    if (REPO / "infra" / "deploy.py").exists():
        return [sys.executable, "-m", "infra.deploy"]
    if (REPO / "infra" / "prefect.yaml").exists():
        return [str(BIN / "prefect"), "--no-prompt", "deploy", "--all", "--prefect-file", "infra/prefect.yaml"]
    return None


def apply_deployments(stack: Stack) -> str:
    """Apply the deployments to the stack's server; what was run (one line)."""
    command = deploy_command()
    if command is None:
        return "no deployments to apply (infra/deploy.py and infra/prefect.yaml are missing)"
    log = log_file(stack, "deploy")
    with log.open("ab") as out:
        done = subprocess.run(command, cwd=REPO, env={**os.environ, **stack.client_env()}, stdout=out, stderr=out)
    if done.returncode != 0:
        last = (log.read_text().strip().splitlines() or ["no output"])[-1]
        raise StackError(f"applying the deployments failed ({last}); see {log}")
    return f"deployments applied ({log})"


def save_ports(stack: Stack) -> None:
    ports = {"prefect_port": stack.prefect_port, "mlflow_port": stack.mlflow_port}
    stack.folder.mkdir(parents=True, exist_ok=True)
    (stack.folder / "stack.json").write_text(json.dumps(ports))


def saved_stack(state: Path, prefect_port: int | None = None, mlflow_port: int | None = None) -> Stack:
    """The stack of a state folder: ports given here win, then those of the last `up`, then 4200 and 5000."""
    path = state / "stack" / "stack.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    return Stack(
        state=state,
        prefect_port=prefect_port or saved.get("prefect_port", 4200),
        mlflow_port=mlflow_port or saved.get("mlflow_port", 5000),
    )


def refuse_other_ports(stack: Stack) -> None:
    """A running stack keeps its ports: asking for others is an error, not a second stack on the same files."""
    running = saved_stack(stack.state)
    if any(running_pid(stack, s.name) for s in services(stack)) and running != stack:
        raise StackError(
            f"the stack of {stack.state} already runs on ports {running.prefect_port} (Prefect) and "
            f"{running.mlflow_port} (MLflow); run `down` first to change them"
        )


def up(stack: Stack, deploy: bool = True, timeout_s: float = HEALTH_TIMEOUT_S) -> list[str]:
    """Start what is not running, wait until all are healthy, apply the deployments; one line per step."""
    stack.folder.mkdir(parents=True, exist_ok=True)
    (stack.state / "mlartifacts").mkdir(exist_ok=True)
    refuse_other_ports(stack)
    save_ports(stack)
    lines = []
    for service in services(stack):
        if service.name == "worker" and deploy:
            lines.append(apply_deployments(stack))
        pid = running_pid(stack, service.name)
        if pid is None:
            pid = start(stack, service)
            lines.append(f"{service.name}: started (pid {pid}, log {log_file(stack, service.name)})")
        else:
            lines.append(f"{service.name}: already running (pid {pid})")
        wait_healthy(stack, service.name, timeout_s)
    return lines


def stop(stack: Stack, name: str) -> str:
    """End the service's whole process group (TERM, then KILL after STOP_TIMEOUT_S) and remove its pid file."""
    pid = running_pid(stack, name)
    if pid is None:
        return f"{name}: not running"
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while group_alive(pid):
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
        time.sleep(0.2)
    pid_file(stack, name).unlink(missing_ok=True)
    return f"{name}: stopped (pid {pid})"


def group_alive(pgid: int) -> bool:
    reap(pgid)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap(pid: int) -> None:
    """Collect the process if it is our own exited child (up() called in-process), so no zombie counts as alive."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def down(stack: Stack) -> list[str]:
    """Stop the worker first (no new flow runs), then the servers."""
    return [stop(stack, service.name) for service in reversed(services(stack))]


def where_to_click(stack: Stack) -> str:
    return "\n".join(
        [
            f"Prefect UI:   {stack.prefect_url}   (deployments: {stack.prefect_url}/deployments, "
            f"runs: {stack.prefect_url}/runs)",
            f"MLflow UI:    {stack.mlflow_url}   (experiments, runs, the model registry)",
            "Runs from a terminal use the stack with:",
            f"  export PREFECT_API_URL={stack.prefect_api_url} MLFLOW_TRACKING_URI={stack.mlflow_url}",
            f"Logs and pid files: {stack.folder}/   stop: make down",
        ]
    )


def status(stack: Stack) -> tuple[bool, str]:
    """(whether every service is running and healthy, a report with where to click)."""
    lines, all_up = [], True
    for service in services(stack):
        pid = running_pid(stack, service.name)
        ok = pid is not None and healthy(stack, service.name)
        all_up &= ok
        lines.append(
            f"{service.name}: "
            + (
                f"running (pid {pid})"
                if ok
                else "not running"
                if pid is None
                else f"running (pid {pid}) but not healthy; see {log_file(stack, service.name)}"
            )
        )
    if all_up:
        lines.append(where_to_click(stack))
    else:
        lines.append(
            f"Start the stack to browse the runs of {stack.state} in the Prefect and MLflow UIs: make up "
            f"(or python -m infra.local_stack up --state {stack.state})"
        )
    return all_up, "\n".join(lines)


def env_lines(stack: Stack) -> str:
    """NAME=value words for `env` when the stack runs, for each variable the user has not set; empty otherwise."""
    if not (healthy(stack, "prefect-server") and healthy(stack, "mlflow-server")):
        return ""
    wanted = {"PREFECT_API_URL": stack.prefect_api_url, "MLFLOW_TRACKING_URI": stack.mlflow_url}
    return " ".join(f"{name}={value}" for name, value in wanted.items() if not os.environ.get(name))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    parser.add_argument(
        "--state",
        type=Path,
        default=Path(os.environ.get("R1_STATE_DIR", ".state")),
        help="the state folder (default: $R1_STATE_DIR or .state, as for the demo)",
    )
    parser.add_argument("--prefect-port", type=int, default=None, help="Prefect server port (default 4200)")
    parser.add_argument("--mlflow-port", type=int, default=None, help="MLflow server port (default 5000)")
    parser.add_argument("--no-deploy", action="store_true", help="up: do not apply the deployments")
    parser.add_argument("--timeout", type=float, default=HEALTH_TIMEOUT_S, help="up: seconds to wait for each")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stack = saved_stack(args.state.resolve(), args.prefect_port, args.mlflow_port)
    try:
        if args.command == "up":
            print("\n".join(up(stack, deploy=not args.no_deploy, timeout_s=args.timeout)))
            print(where_to_click(stack))
        elif args.command == "down":
            print("\n".join(down(stack)))
        elif args.command == "env":
            print(env_lines(stack))
        else:
            all_up, report = status(stack)
            print(report)
            return 0 if all_up else 3
    except StackError as err:
        print(f"stack error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
