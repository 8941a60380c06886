"""Child processes the project starts (workers, engine servers, services): one way to start them
and one way to stop them, so a stop is graceful where it can be and certain where it must be.

A child runs in its own session: Ctrl-C in the terminal that started the demo does not reach it
before the demo's own clean-up does, and a signal to its process group reaches everything it
started (vLLM's engine core, a server's workers)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


def spawn(argv: list[str], log: Path, env: dict | None = None, cwd: Path | str | None = None) -> subprocess.Popen:
    """Start `argv` in a new session with stdout and stderr appended to `log` (made with its folder)
    and no stdin. Raises OSError when it cannot be started."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:  # the child has its own copy of the descriptor
        return subprocess.Popen(argv, env=env, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def _signal(proc: subprocess.Popen, sig: int, group: bool) -> None:
    try:
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    except ProcessLookupError:
        pass


def kill(proc: subprocess.Popen | None, group: bool = True, timeout: float = 30.0) -> None:
    """SIGKILL to the process (and, with `group`, everything in its session), as a crash would; waits
    up to `timeout` seconds for it to be reaped. Nothing happens to a process that has exited."""
    if proc is None or proc.poll() is not None:
        return
    _signal(proc, signal.SIGKILL, group)
    proc.wait(timeout)


def stop(proc: subprocess.Popen | None, timeout: float = 20.0, group: bool = True) -> bool:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds. True when it stopped on
    SIGTERM or had already exited; False when it had to be killed (a worker that ignores SIGTERM
    is a defect the caller may want to report)."""
    if proc is None or proc.poll() is not None:
        return True
    _signal(proc, signal.SIGTERM, group)
    try:
        proc.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        kill(proc, group, timeout=10.0)
        return False
