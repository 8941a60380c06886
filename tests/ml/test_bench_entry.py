"""The ML-side benchmarks live with the others in streams/bench/ and run from there in .venv-ml
(`intentflow bench filter` execs `python -m streams.bench.filter`): a short real run."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_filter_bench_runs_as_its_module_in_the_ml_environment_and_names_the_cpu_flags():
    code = ("import runpy, sys; sys.argv = ['x', '--synthetic', '48', '--batch', '16', '--critic', 'off', '--json']\n"
            "try:\n    runpy.run_module('streams.bench.filter', run_name='__main__')\nexcept SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "assert not [m for m in sys.modules if m.split('.')[0] in ('faust', 'feast', 'confluent_kafka')], 'stream side'")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["candidates"] == 48 and out["batched_candidates_per_s"] > 0 and out["one_at_a_time_candidates_per_s"] > 0
    assert "flags" in out["machine"] and out["command"].startswith("intentflow bench filter --synthetic 48")
    assert sum(out["outcomes"].values()) == 48


def test_the_ml_benches_find_their_bundled_inputs_from_streams_bench():
    """The recorded generation output (generators/data) and the sample events (streams/samples)
    that `bench filter` and `bench generate` read by default: found from their new place."""
    from streams.bench import filter as filter_bench
    from streams.bench import generate

    assert filter_bench.RECORDED.exists()
    reqs = generate.sample_requests(4)
    assert len(reqs) == 4 and {r["behavior"] for r in reqs} == {"search_buy", "co_purchase"}
