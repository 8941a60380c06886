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
    services.ensure_topics(broker, [s.topics.batches, s.topics.priority_batches, s.topics.candidates,
                                    s.topics.rejected, s.topics.generation_dlq], 2)
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
        assert lin["model"].endswith(f"SmolLM2-135M-Instruct-{vllm_engine.dtype}") and lin["engine"] == "vllm"
        assert lin["prompt_version"] and lin["batch_id"] == "b1" and lin["event_time"] > 0
        assert lin["mean_logprob"] is not None and lin["logprob_scope"] == "item"
    (dead,) = read_topic(broker, settings.topics.generation_dlq)
    assert "undecodable" in dead["error"] and dead["value_text"] == "{poison"


def _req(i: int, query: str = "camping essentials", title: str = "LifeStraw Personal Water Filter") -> dict:
    return {"request_id": f"req-{i}", "pair_key": f"sb|{query}|P{i}", "behavior": "search_buy", "query": query,
            "event_id": f"e{i}", "event_time": 1767225600.0 + i,
            "product": {"product_id": f"P{i}", "title": title, "category": "Outdoors"}}


def _fast(settings: MLSettings, **gen) -> MLSettings:
    return settings.model_copy(update={"generation": settings.generation.model_copy(update={"max_tokens": 16, **gen})})


def test_a_priority_batch_overtakes_a_backlog_of_normal_batches(broker, settings, vllm_engine):
    import threading
    import time

    s = _fast(settings, max_inflight_requests=2)
    p = Producer({"bootstrap.servers": broker})
    n = 6
    for b in range(n):
        batch = {"batch_id": f"n{b}", "created_at": 0, "requests": [_req(10 * b + j) for j in range(2)]}
        p.produce(s.topics.batches, json.dumps(batch).encode(), f"n{b}".encode())
    p.flush(10)
    worker = GenerationWorker(vllm_engine, s)
    stats: dict = {}
    th = threading.Thread(target=lambda: stats.update(worker.run(max_batches=n + 1, idle_exit_s=60)))
    th.start()
    deadline = time.monotonic() + 120
    while not worker.stats["batches"] and time.monotonic() < deadline:  # the backlog is being worked on
        time.sleep(0.2)
    prio = {"batch_id": "prio", "created_at": 0, "priority": True, "requests": [_req(999, "cache miss query")]}
    p.produce(s.topics.priority_batches, json.dumps(prio).encode(), b"prio")
    p.flush(10)
    del p
    th.join(300)
    assert stats["batches"] == n + 1
    done_at: dict[str, float] = {}
    for c in read_topic(broker, s.topics.candidates):
        b = c["lineage"]["batch_id"]
        done_at[b] = min(done_at.get(b, float("inf")), c["lineage"]["generated_at"])
    assert "prio" in done_at, "the priority request produced no candidates"
    later = [b for b in (f"n{i}" for i in range(n)) if done_at.get(b, 0) > done_at["prio"]]
    assert len(later) >= n - 3, f"the priority batch waited behind the backlog: {done_at}"


def test_a_bad_request_is_isolated_from_its_batch_and_injections_are_refused(broker, settings, vllm_engine):
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2]
    injections = [json.loads(line) for line in (root / "tests" / "data" / "injections.jsonl").read_text().splitlines()]
    hostile = [_req(100 + i, **{c["field"]: c["text"]}) for i, c in enumerate(injections)]
    broken = {k: v for k, v in _req(7).items() if k != "product"}  # no product: cannot build its prompts
    good = _req(1, "new puppy", "KONG Classic Dog Chew Toy")
    s = _fast(settings)
    p = Producer({"bootstrap.servers": broker})
    p.produce(s.topics.batches, json.dumps({"batch_id": "mixed", "created_at": 0,
                                            "requests": [good, broken, *hostile]}).encode(), b"mixed")
    p.flush(10)
    del p
    stats = GenerationWorker(vllm_engine, s).run(max_batches=1, idle_exit_s=60)
    assert stats["requests"] == 1 and stats["rejected_input"] == len(hostile)
    cands = read_topic(broker, s.topics.candidates)
    assert cands and {c["request_id"] for c in cands} == {"req-1"}  # the good request, alone, generated
    (dead,) = read_topic(broker, s.topics.generation_dlq)
    assert dead["kind"] == "invalid_request" and dead["request_id"] == "req-7" and dead["stage"] == "generate"
    refused = [r for r in read_topic(broker, s.topics.rejected) if r.get("kind") == "request"]
    assert {r["request_id"] for r in refused} == {h["request_id"] for h in hostile}
    assert all(r["stage"] == "input" and r["reason"] for r in refused)
