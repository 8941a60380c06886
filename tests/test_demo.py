"""`intentflow demo` end to end with a small event count: real broker, workers, vLLM, Feast."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.kafka_util import INTENTFLOW, ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _procs_of(data_dir: Path) -> list[int]:
    """Processes whose environment points at this data dir (the workers the demo started)."""
    needle = f"INTENTFLOW_DATA_DIR={data_dir}".encode()
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if needle in (p / "environ").read_bytes().split(b"\0"):
                    out.append(int(p.name))
            except OSError:
                pass
    return out


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("INTENTFLOW_")}


def test_demo_reports_knowledge_and_features_and_stops_everything(tmp_path):
    data = tmp_path / "demo"
    r = subprocess.run([INTENTFLOW, "demo", "--events", "150", "--json", "--data-dir", str(data), "--timeout", "600"],
                       cwd=ROOT, env=_env(), capture_output=True, timeout=900)
    assert r.returncode == 0, r.stderr.decode()[-4000:]
    report = json.loads(r.stdout.decode().strip().splitlines()[-1])
    assert report["ok"] and report["events"]["sent"] == 300
    assert report["sampled_requests"] > 0 and report["batched_requests"] > 0
    assert report["candidates"] > 0 and 0 < report["edges"] <= report["candidates"]
    assert [x["stage"] for x in report["filter"]][:4] == ["safety", "fluency", "restatement", "echo"]
    assert report["feature_rows"]["query_intents"] > 0 and report["feature_rows"]["product_knowledge"] > 0
    f = report["freshness_s"]
    assert f["n"] > 0 and 0 < f["p50"] <= f["p95"] <= f["max"] < 600
    q = report["examples"]["queries"][0]
    assert q["intents"] and q["augmentation"] and q["models"]
    assert report["examples"]["products"][0]["key_values"]
    assert _procs_of(data) == [], "the demo left workers running"


def test_demo_stops_what_it_started_on_ctrl_c(tmp_path):
    data = tmp_path / "demo"
    p = subprocess.Popen([INTENTFLOW, "demo", "--events", "150", "--data-dir", str(data)], cwd=ROOT, env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(_procs_of(data)) < 3:
        time.sleep(0.5)
    assert len(_procs_of(data)) >= 3, p.stderr.read1().decode()[-3000:] if p.poll() is not None else "workers not started"
    p.send_signal(signal.SIGINT)
    try:
        p.wait(120)
    except subprocess.TimeoutExpired:  # say where the demo was (once seen in a full run, not reproduced)
        p.kill()
        raise AssertionError("the demo did not stop within 120 s of Ctrl-C; its stderr:\n"
                             + p.communicate(timeout=30)[1].decode(errors="replace")[-3000:]) from None
    deadline = time.monotonic() + 30
    while _procs_of(data) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _procs_of(data) == [], "Ctrl-C left workers running"
    assert not list((data / "run").glob("*.pid")) or all(
        not Path(f"/proc/{int(x.read_text())}").exists() for x in (data / "run").glob("*.pid")), "the broker still runs"
