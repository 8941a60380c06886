"""`intentflow bench faults --schedule short` against the real services: kill -9 of the stream,
generation and filter workers and a Redis restart during a replay; nothing lost, nothing twice."""

import json
import os
import subprocess

import pytest

from tests.kafka_util import INTENTFLOW, ROOT
from tests.test_demo import _procs_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_short_fault_schedule_loses_and_duplicates_nothing_and_every_fault_recovers(tmp_path):
    data = tmp_path / "faults"
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTENTFLOW_")}
    r = subprocess.run([INTENTFLOW, "bench", "faults", "--schedule", "short", "--json", "--data-dir", str(data)],
                       cwd=ROOT, env=env, capture_output=True, timeout=1200)
    out = r.stdout.decode().strip()
    assert out, r.stderr.decode()[-4000:]
    report = json.loads(out.splitlines()[-1])
    assert "lost" in report, (report.get("error"), report.get("faults"), r.stderr.decode()[-3000:])
    assert report["lost"] == 0 and report["duplicated"] == 0, (report["losses"], report["duplicates"], report["examples"])
    assert r.returncode == 0 and report["ok"], report.get("error")
    ev = report["events"]
    assert report["events_in"] == report["accounted"] == ev["valid"] + ev["resent_duplicates"] + ev["invalid"]
    assert ev["deduplicated"] == ev["resent_duplicates"] > 0 and ev["dead_lettered"] == ev["invalid"] > 0
    assert report["requests"]["batched"] == report["requests"]["requests"] > 0
    assert report["edges"]["distinct_edges"] > 0
    assert report["edges"]["online_ok"] == report["edges"]["offline_ok"] == report["edges"]["entities"]
    faults = {f["fault"]: f for f in report["faults"]}
    assert set(faults) == {"kill:stream", "kill:generate", "kill:filter", "restart:redis"}
    assert all(f["recovery_s"] is not None and f["recovery_s"] >= 0 for f in faults.values()), report["faults"]
    assert {x["fault"] for x in report["not_covered"]} == {"restart:broker", "kill:engine"}
    assert _procs_of(data) == [], "the bench left workers running"
