"""The `intentflow` command line as a module: every command is reachable with `python -m streams.cli`."""

import subprocess
import sys

import click

from streams.cli import main


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True, text=True, timeout=60)


def _listed(*args: str) -> set[str]:
    res = _cli(*args, "--help")
    assert res.returncode == 0, res.stderr
    return {line.split()[0] for line in res.stdout.split("Commands:", 1)[1].splitlines() if line.strip()}


def test_python_m_lists_every_command():
    """`if __name__ == "__main__"` stands after every command, so none defined late is missing."""
    assert _listed() == set(main.commands)
    for name, group in main.commands.items():
        if isinstance(group, click.Group):
            assert _listed(name) == set(group.commands), name


def test_python_m_runs_the_command_defined_last():
    last = list(main.commands)[-1]
    res = _cli(last, "--help")
    assert res.returncode == 0 and "No such command" not in res.stderr, res.stderr


def test_status_and_dlq_replay_say_what_is_wrong_instead_of_a_traceback():
    """Found by a tester: `intentflow status` with the broker down was a KafkaException traceback;
    `dlq replay` of a topic that does not exist exited 0 with nothing."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("INTENTFLOW_")}
    env["INTENTFLOW_BROKER"] = "127.0.0.1:1"  # nothing listens there
    for args in (["status", "--json"], ["dlq", "replay", "behavior.dlq", "--json"], ["topics", "create"]):
        r = subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True, text=True,
                           timeout=120, env=env)
        assert r.returncode == 1 and "did not answer" in r.stderr and "Traceback" not in r.stderr, (args, r.stderr[-2000:])
