"""The filter worker on the real broker with the real small models."""

from __future__ import annotations

import json

import pytest
from confluent_kafka import Producer

from generators.config import MLSettings
from generators.filter_worker import FilterWorker, TopicBackedStats
from infra import services
from tests.kafka_util import read_json as read_topic

pytestmark = pytest.mark.integration


def cand(i, tail, relation="used_for_audience"):
    return {"candidate_id": f"c{i}", "request_id": "r1", "pair_key": "sb|shoes for pregnant women|P1",
            "behavior": "search_buy", "head": "shoes for pregnant women", "relation": relation, "tail": tail,
            "rank": 1, "query": "shoes for pregnant women",
            "product": {"product_id": "P1", "title": "Skechers Slip-Resistant Work Shoes", "product_type": "work shoes",
                        "category": "Shoes"},
            "lineage": {"model": "m", "prompt_version": "p", "event_time": 1767225600.0, "mean_logprob": -1.2}}


@pytest.fixture
def settings(broker, monkeypatch):
    monkeypatch.setenv("INTENTFLOW_BROKER", broker)
    monkeypatch.setenv("INTENTFLOW_SESSION_TIMEOUT_S", "6")
    s = MLSettings()
    t = s.topics
    services.ensure_topics(broker, [t.candidates, t.edges, t.rejected, t.filter_dlq, t.tail_stats], 2,
                           compacted=(t.tail_stats,))
    return s


@pytest.fixture(scope="module")
def make_pipeline():
    from generators.cli import filter_pipeline

    make, _ = filter_pipeline(MLSettings())
    return make


def test_candidates_become_edges_or_rejections_with_reasons(broker, settings, make_pipeline):
    cands = [cand(0, "nurses on long shifts"), cand(1, "shoes for pregnant women"), cand(2, "pregnant women"),
             cand(3, "a b c d e f g h i j k l m n")]
    p = Producer({"bootstrap.servers": broker})
    for c in cands:
        p.produce(settings.topics.candidates, json.dumps(c).encode(), c["pair_key"].encode())
    p.produce(settings.topics.candidates, b"not json", b"k")
    p.flush(10)
    del p
    stats = FilterWorker(make_pipeline, settings, critic_version=None).run(max_candidates=5, idle_exit_s=30)
    assert stats["candidates"] == 4 and stats["dead_letter"] == 1
    edges = read_topic(broker, settings.topics.edges)
    rejected = read_topic(broker, settings.topics.rejected)
    assert len(edges) + len(rejected) == 4
    by_tail = {r["tail"]: r for r in rejected}
    assert by_tail["shoes for pregnant women"]["stage"] == "restatement"
    assert by_tail["a b c d e f g h i j k l m n"]["stage"] == "fluency"
    for e in edges:
        assert e["edge_id"] and {"fluency", "restatement", "generic", "paraphrase"} <= set(e["scores"])
        assert e["lineage"]["model"] == "m" and "filtered_at" in e["lineage"]
    assert {e["tail"] for e in edges} <= {"nurses on long shifts", "pregnant women"}
    assert len(read_topic(broker, settings.topics.filter_dlq)) == 1
    # the generic stage's statistics survive a restart: a new worker reads them back
    restored = TopicBackedStats(broker, settings.topics.tail_stats)
    assert "nurses on long shifts" in restored and restored["nurses on long shifts"]["heads"]


def test_edge_ids_are_stable_across_replays():
    from generators.filter_worker import edge_id

    assert edge_id("q", "xWant", "Go Hiking!") == edge_id("q", "xWant", "go hiking")
    assert edge_id("q", "xWant", "go hiking") != edge_id("q", "used_for_event", "go hiking")
