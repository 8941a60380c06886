"""The filter worker on the real broker with the real small models and the default critic."""

from __future__ import annotations

import json

import pytest
from confluent_kafka import Producer

from generators.config import MLSettings
from generators.filter_worker import FilterWorker, SharedTailStats
from infra import services
from tests.kafka_util import read_json as read_topic

pytestmark = pytest.mark.integration


def cand(i, tail, relation="used_for_audience", query="shoes for pregnant women"):
    return {"candidate_id": f"c{i}", "request_id": f"r{i}", "pair_key": f"sb|{query}|P1",
            "behavior": "search_buy", "head": query, "relation": relation, "tail": tail,
            "rank": 1, "query": query,
            "product": {"product_id": "P1", "title": "Skechers Slip-Resistant Work Shoes", "product_type": "work shoes",
                        "category": "Shoes"},
            "lineage": {"batch_id": "b", "event_id": f"e{i}", "event_time": 1767225600.0, "model": "m", "engine": "vllm",
                        "prompt_version": "p", "generated_at": 1767225601.0, "mean_logprob": -1.2,
                        "logprob_scope": "item"}}


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
def pipeline():
    from generators.cli import filter_pipeline

    return filter_pipeline(MLSettings())  # the default set-up: the bootstrapped critic is on


def test_candidates_become_scored_edges_or_rejections_with_reasons(broker, settings, pipeline):
    make, version = pipeline
    assert version, "the default path runs a critic"
    cands = [cand(0, "nurses on long shifts"), cand(1, "shoes for pregnant women"), cand(2, "pregnant women"),
             cand(3, "a b c d e f g h i j k l m n"), cand(4, "because they like them"),
             cand(5, "people with swollen feet", query="comfortable work shoes")]
    no_relation = {k: v for k, v in cand(6, "nurses").items() if k != "relation"}
    p = Producer({"bootstrap.servers": broker})
    for c in cands:
        p.produce(settings.topics.candidates, json.dumps(c).encode(), c["pair_key"].encode())
    p.produce(settings.topics.candidates, b"not json", b"k")
    p.produce(settings.topics.candidates, json.dumps(no_relation).encode(), b"k")  # used to crash-loop the worker
    p.flush(10)
    del p
    stats = FilterWorker(make, settings, critic_version=version).run(max_candidates=8, idle_exit_s=30)
    assert stats["candidates"] == len(cands) and stats["dead_letter"] == 2
    edges = read_topic(broker, settings.topics.edges)
    rejected = read_topic(broker, settings.topics.rejected)
    assert len(edges) + len(rejected) == len(cands)
    by_tail = {r["tail"]: r for r in rejected}
    assert by_tail["shoes for pregnant women"]["stage"] == "restatement"
    assert by_tail["a b c d e f g h i j k l m n"]["stage"] == "fluency"
    assert by_tail["because they like them"]["stage"] == "generic"
    assert edges, "nothing admitted"
    for e in edges:
        assert e["edge_id"] and {"fluency", "restatement", "generic", "paraphrase", "critic"} <= set(e["scores"])
        assert e["score"] == e["scores"]["critic"] and e["scorer"] == f"critic:{version}"  # a real score, not 0.5
        assert e["lineage"]["model"] == "m" and "filtered_at" in e["lineage"] and e["lineage"]["critic_version"] == version
    dead = read_topic(broker, settings.topics.filter_dlq)
    assert {d["kind"] for d in dead} == {"invalid_candidate"} and any("relation" in d["error"] for d in dead)
    # the generic stage's observations survive a restart and merge: a new worker reads them back
    restored = SharedTailStats(settings, settings.topics.tail_stats)
    try:
        assert len(restored.stats.tails["nurses on long shifts"]) == 1
    finally:
        restored.close()


def test_two_workers_merge_their_tail_statistics(broker, settings):
    a, b = SharedTailStats(settings, settings.topics.tail_stats), SharedTailStats(settings, settings.topics.tail_stats)
    try:
        from generators import kafka_io
        from processors.filters import to_item

        a.stats.observe(to_item(cand(0, "new parents")))
        b.stats.observe(to_item(cand(1, "new parents", query="baby registry")))
        prod = kafka_io.producer(settings)
        kafka_io.deliver(prod, a.drain() + b.drain())
        import time

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (len(a.stats.tails.get("new parents", {})) < 2
                                               or len(b.stats.tails.get("new parents", {})) < 2):
            a.refresh()
            b.refresh()
            time.sleep(0.2)
        assert len(a.stats.tails["new parents"]) == len(b.stats.tails["new parents"]) == 2  # neither overwrote the other
    finally:
        a.close()
        b.close()


def test_edge_ids_are_stable_across_replays():
    from generators.filter_worker import edge_id

    assert edge_id("q", "xWant", "Go Hiking!") == edge_id("q", "xWant", "go hiking")
    assert edge_id("q", "xWant", "go hiking") != edge_id("q", "used_for_event", "go hiking")


def test_self_evaluation_runs_in_the_stream_with_per_relation_thresholds(broker, settings, vllm_engine):
    """`filter-worker --self-eval`: the generation engine in process scores the candidates, against
    the thresholds in settings (impossible for audiences, always met for wants). The critic is off
    here so that both reach the self-evaluation stage."""
    from generators.cli import filter_pipeline

    f = settings.filter.model_copy(update={"self_eval_by_relation": {"used_for_audience": 2.0, "xWant": -2.0}})
    s = settings.model_copy(update={"filter": f})
    make, version = filter_pipeline(s, "off", engine=vllm_engine)
    cands = [cand(0, "nurses on long shifts"), cand(1, "stand all day at work", relation="xWant")]
    p = Producer({"bootstrap.servers": broker})
    for c in cands:
        p.produce(s.topics.candidates, json.dumps(c).encode(), c["pair_key"].encode())
    p.flush(10)
    del p
    FilterWorker(make, s, critic_version=version).run(max_candidates=2, idle_exit_s=30)
    (rejected,) = read_topic(broker, s.topics.rejected)
    (edge,) = read_topic(broker, s.topics.edges)
    assert rejected["tail"] == "nurses on long shifts" and rejected["stage"] == "self_eval"
    assert edge["tail"] == "stand all day at work" and -1.0 <= edge["scores"]["self_eval"] <= 1.0
    assert edge["scorer"] == "self_eval" and edge["score"] == round((edge["scores"]["self_eval"] + 1) / 2, 4)
