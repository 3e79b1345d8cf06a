"""A stage process dies with the process that started it: on Linux each stage process (and each rank under
`accelerate launch`) asks the kernel for SIGKILL when its parent dies, so a `kill -9` of the flow cannot leave a
stage running on and publishing behind a re-run's back. Elsewhere this is a no-op."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask for SIGKILL when the parent process exits (Linux prctl); exit at once if it already has. Safe in a
    preexec_fn. The signal follows the parent *thread*: launch from a thread that waits for the child."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the call
        os._exit(1)
