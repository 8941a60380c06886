"""infra/procs: the one way children are started and stopped."""

import sys
import time

from infra import procs


def test_spawn_appends_to_the_log_and_stop_is_graceful_when_the_child_obeys(tmp_path):
    log = tmp_path / "logs" / "child.log"
    log.parent.mkdir()
    log.write_bytes(b"earlier run\n")
    p = procs.spawn([sys.executable, "-c", "print('hello', flush=True); import time; time.sleep(60)"], log)
    deadline = time.monotonic() + 10
    while b"hello" not in log.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.read_bytes().startswith(b"earlier run\nhello")
    assert procs.stop(p, timeout=10) is True and p.returncode != 0
    assert procs.stop(p) is True  # already stopped: nothing to do


def test_a_child_that_ignores_sigterm_is_killed_with_what_it_started(tmp_path):
    code = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            "print(c.pid, flush=True); time.sleep(60)")
    log = tmp_path / "stubborn.log"
    p = procs.spawn([sys.executable, "-c", code], log)
    deadline = time.monotonic() + 10
    while not log.read_bytes().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(log.read_bytes().split()[0])
    t0 = time.monotonic()
    assert procs.stop(p, timeout=1) is False  # had to be killed
    assert time.monotonic() - t0 < 10 and p.poll() is not None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{grandchild}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    break
        except FileNotFoundError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the child's own child outlived the kill of its session")
