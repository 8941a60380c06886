"""`intentflow bench stream` end to end on a small workload: the numbers it reports are consistent."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_bench_stream_reports_every_run_and_the_median():
    exe = Path(sys.executable).parent / "intentflow"
    out = subprocess.run([str(exe), "bench", "stream", "--events", "6000", "--pairs", "2000", "--memory-pairs", "3000",
                          "--runs", "2", "--json"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout)
    assert len(r["stream_events_per_s_runs"]) == 2 and min(r["stream_events_per_s_runs"]) > 0
    assert min(r["stream_events_per_s_runs"]) <= r["stream_events_per_s"] <= max(r["stream_events_per_s_runs"])
    assert sum(r["outcomes"].values()) == 6000  # every event sampled, in the last run too
    assert r["requests_batched"] == r["outcomes"]["emitted"] > 0
    assert r["memory_pairs"] == 3000 and r["state_bytes_per_pair"] > 0
