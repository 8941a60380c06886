"""JSON logs on both sides: every line a worker writes parses, whatever the message holds."""

import json
import logging
import subprocess
import sys

from infra.logs import JsonFormatter

AWKWARD = 'said "no"\n\tthen {left} \\ back: «ça», 日本語, 🧦'


def _record(msg: str, args=(), **extra) -> logging.LogRecord:
    rec = logging.LogRecord("intentflow.test", logging.WARNING, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def test_a_message_with_quotes_newlines_and_any_script_is_one_json_line():
    line = JsonFormatter().format(_record("%s", (AWKWARD,), topic='a"b'))
    assert "\n" not in line
    out = json.loads(line)
    assert out["msg"] == AWKWARD and out["topic"] == 'a"b'
    assert out["level"] == "warning" and out["logger"] == "intentflow.test"


def test_an_exception_is_a_field_of_the_same_line():
    try:
        raise ValueError('bad "value"')
    except ValueError:
        rec = _record("failed")
        rec.exc_info = sys.exc_info()
    out = json.loads(JsonFormatter().format(rec))
    assert out["msg"] == "failed" and 'ValueError: bad "value"' in out["exc"]


def test_the_ml_command_line_logs_valid_json():
    """generators/cli.py's group sets logging up for every ML command (the workers' logs)."""
    code = ("import logging\nfrom generators.cli import main\nmain.callback()\n"
            f"logging.getLogger('intentflow.generate').info({AWKWARD!r})\n"
            "logging.getLogger('intentflow.generate').warning('%s of %d', 'one \"x\"', 2)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in res.stderr.splitlines()]
    assert [(d["level"], d["msg"]) for d in lines] == [("info", AWKWARD), ("warning", 'one "x" of 2')]
