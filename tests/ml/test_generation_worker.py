"""The generation worker on the real broker with real vLLM: batches in, candidates with lineage out."""

from __future__ import annotations

import json

import pytest
from confluent_kafka import Producer

from generators.config import MLSettings
from generators.worker import GenerationWorker
from infra import services
from tests.kafka_util import read_json as read_topic

pytestmark = pytest.mark.integration

SB = {"request_id": "req-sb", "pair_key": "sb|shoes for pregnant women|P1", "behavior": "search_buy",
      "query": "shoes for pregnant women", "event_id": "e1", "event_time": 1767225600.0, "priority": 0.8,
      "product": {"product_id": "P1", "title": "Skechers Women's Slip-Resistant Work Shoes", "category": "Shoes"}}
CP = {"request_id": "req-cp", "pair_key": "cp|A|B", "behavior": "co_purchase", "event_id": "e2",
      "event_time": 1767225601.0, "product_a": {"product_id": "A", "title": "Coleman Sundome 4-Person Tent"},
      "product_b": {"product_id": "B", "title": "Teton Sports Celsius Sleeping Bag"}}


@pytest.fixture
def settings(broker, monkeypatch):
    monkeypatch.setenv("INTENTFLOW_BROKER", broker)
    monkeypatch.setenv("INTENTFLOW_SESSION_TIMEOUT_S", "6")
    monkeypatch.setenv("INTENTFLOW_GENERATION__TEMPERATURE", "0")
    s = MLSettings()
    services.ensure_topics(broker, [s.topics.batches, s.topics.candidates, s.topics.generation_dlq], 2)
    return s


def test_batches_become_candidates_with_lineage_and_poison_goes_to_dlq(broker, settings, vllm_engine):
    p = Producer({"bootstrap.servers": broker})
    p.produce(settings.topics.batches, json.dumps({"batch_id": "b1", "created_at": 0, "priority": False,
                                                   "requests": [SB, CP]}).encode(), b"b1")
    p.produce(settings.topics.batches, b"{poison", b"b2")
    p.produce(settings.topics.batches, json.dumps({"batch_id": "b3", "created_at": 0, "requests": [SB]}).encode(), b"b3")
    p.flush(10)
    del p  # no client left to retry the broker after the fixture stops it
    stats = GenerationWorker(vllm_engine, settings).run(max_batches=3, idle_exit_s=60)
    assert stats["batches"] == 2 and stats["dead_letter"] == 1
    assert stats["duplicate_request"] == 1  # b3 repeats req-sb: not generated twice

    cands = read_topic(broker, settings.topics.candidates)
    assert cands, "no candidates parsed"
    assert {c["request_id"] for c in cands} <= {"req-sb", "req-cp"}
    assert len({c["candidate_id"] for c in cands}) == len(cands)
    for c in cands:
        assert c["tail"] and c["relation"] in settings.generation.relations and c["rank"] >= 1
        lin = c["lineage"]
        assert lin["model"].endswith("SmolLM2-135M-Instruct-bfloat16") and lin["engine"] == "vllm"
        assert lin["prompt_version"] and lin["batch_id"] == "b1" and lin["event_time"] > 0
        assert lin["mean_logprob"] is not None
    (dead,) = read_topic(broker, settings.topics.generation_dlq)
    assert "undecodable" in dead["error"] and dead["value_text"] == "{poison"
