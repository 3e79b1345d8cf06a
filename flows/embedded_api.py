"""Prefect's embedded (ephemeral) API, started by one process at a time per PREFECT_HOME.

Each process without PREFECT_API_URL starts its own temporary server on the SQLite database in PREFECT_HOME. On a
fresh home two of them starting together both create the tables: the loser's server dies with "table ... already
exists" (exit 3), and Prefect only survives it because it retries a server that exits 3 on another port, after
tens of seconds and a traceback in the log. Started here under a lock file in PREFECT_HOME, the second server
starts once the first has migrated the database (then it has nothing to migrate); the flow's client later finds
the server already running (Prefect keeps one per process).

    start_embedded_api()        # in flows/cli.py, after the checks, before the flow runs
"""

from __future__ import annotations

import os
from pathlib import Path

from models.stage_lock import FileLock

LOCK = "embedded-api.lock"


def start_embedded_api() -> None:
    """Start this process's embedded Prefect API now, under PREFECT_HOME's lock; nothing when an API is set."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME

    if PREFECT_API_URL.value():
        return
    from prefect.server.api.server import SubprocessASGIServer

    home = Path(os.environ.get("PREFECT_HOME") or PREFECT_HOME.value()).expanduser()
    lock = FileLock(home / LOCK)
    lock.acquire()
    try:
        SubprocessASGIServer().start()
    finally:
        lock.release()
