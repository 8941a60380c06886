"""The annotation loop on real parts: sampling straight from the topics, and self-evaluation
thresholds calibrated per relation with the real engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from confluent_kafka import Producer

from infra import services
from tests.kafka_util import ROOT

pytestmark = pytest.mark.integration


def _cand(i: int, tail: str, relation: str) -> dict:
    return {"candidate_id": f"c{i}", "behavior": "search_buy", "query": f"query {i % 4}", "relation": relation,
            "tail": tail, "product": {"product_id": f"P{i % 3}", "title": f"Product {i % 3} walking shoe"}}


def _cli(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    full = {**{k: v for k, v in os.environ.items() if not k.startswith("INTENTFLOW_")}, **(env or {})}
    return subprocess.run([sys.executable, "-m", "generators.cli", *args], cwd=ROOT, env=full, capture_output=True,
                          text=True, timeout=timeout)


def test_annotate_sample_reads_edges_and_rejections_from_the_topics(broker, tmp_path):
    services.ensure_topics(broker, ["knowledge.edges", "knowledge.rejected"], 2)
    p = Producer({"bootstrap.servers": broker})
    for i in range(20):
        topic = "knowledge.edges" if i % 2 else "knowledge.rejected"
        p.produce(topic, key=str(i).encode(), value=json.dumps(_cand(i, f"tail number {i}", "xWant")).encode())
    p.produce("knowledge.edges", key=b"bad", value=b"not json")
    assert p.flush(10) == 0
    out = tmp_path / "review.jsonl"
    r = _cli("annotate", "sample", "--topic", "knowledge.edges", "--topic", "knowledge.rejected", "-n", "12",
             "--out", str(out), env={"INTENTFLOW_BROKER": broker}, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12 and {r["candidate_id"] for r in rows} <= {f"c{i}" for i in range(20)}
    assert {int(r["candidate_id"][1:]) % 2 for r in rows} == {0, 1}  # from both topics
    assert all(r[q] is None for r in rows for q in ("complete", "relevant", "informative", "plausible", "typical"))


def test_self_eval_thresholds_are_calibrated_per_relation_with_the_engine(tmp_path):
    store = tmp_path / "annotations.jsonl"
    good = {"used_for_audience": ["pregnant women", "nurses", "people who stand all day"],
            "used_for_function": ["prevent slipping", "support the arch", "cushion the feet"]}
    bad = {"used_for_audience": ["fish", "the moon", "spaceships"],
           "used_for_function": ["cook pasta", "fly", "charge a phone"]}
    rows = []
    for rel in good:
        for j, (tails, label) in enumerate(((good[rel], "yes"), (bad[rel], "no"))):
            for k, tail in enumerate(tails * 2):
                ctx = ["shoes for pregnant women", "work shoes"][k % 2] + " | Skechers Women's Slip-Resistant Work Shoe"
                rows.append({"annotation_id": f"{rel}-{j}-{k}", "behavior": "search_buy", "context": ctx,
                             "relation": rel, "tail": tail, "complete": "yes", "relevant": label,
                             "informative": "yes", "plausible": label, "typical": label})
    store.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "thresholds.json"
    r = _cli("eval", "calibrate-selfeval", "--data", str(store), "--min-labels", "10", "--out", str(out), "--json",
             env={"VLLM_CPU_KVCACHE_SPACE": "2"})
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(res["self_eval_by_relation"]) == set(good)
    for rel in good:
        rep = res["report"][rel]
        assert rep["n"] == 12 and 0.5 <= rep["accuracy"] <= 1.0  # at worst "keep all" or "keep none"
        assert -1.0 <= res["self_eval_by_relation"][rel] <= 1.001
    assert "INTENTFLOW_FILTER__SELF_EVAL_BY_RELATION=" in res["apply"]
    assert json.loads(out.read_text()) == res
