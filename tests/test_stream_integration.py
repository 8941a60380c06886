"""The stream stages on the real broker with real Faust workers (subprocesses), end to end."""

from __future__ import annotations

import base64
import threading
import time

import pytest

from streams.producer import EventProducer
from tests import workload
from tests.kafka_util import (ALL_STAGES, GROUP, SOURCES, TOPIC, Worker, committed, keys_on_several_partitions,
                              produce, read_json, requests_by_pair, wait_caught_up)

pytestmark = pytest.mark.integration


@pytest.fixture
def env(stream_env):
    return stream_env


def test_exactly_the_qualifying_pairs_reach_generation_and_invalid_ones_the_dlq(broker, env, tmp_path):
    e, s = env
    w = workload.build()
    worker = Worker(e, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        produce(s, w.noise)
        wait_caught_up(broker, GROUP, SOURCES + [TOPIC.by_product], timeout=90)
        produce(s, w.main + w.invalid)
        wait_caught_up(broker, GROUP, ALL_STAGES, timeout=120, settle=1.5)
    finally:
        worker.stop()
    by_pair, reqs, batches = requests_by_pair(broker)
    expected = workload.expected_pairs(w)
    assert len(expected) > 100
    assert set(by_pair) == expected
    assert len(reqs) == len(expected), "a pair was sent to generation twice"
    assert all(len(b["requests"]) <= 16 for b in batches)
    assert {r["behavior"] for r in reqs} == {"search_buy", "co_purchase"}

    assert not keys_on_several_partitions(broker)
    dlq = read_json(broker, TOPIC.dlq)
    assert len(dlq) == len(w.invalid)
    assert {base64.b64decode(d["value_b64"]) for d in dlq} == {m.value for m in w.invalid}
    assert all(d["error"] and d["source_topic"] in SOURCES for d in dlq)
    reasons = " ".join(d["error"] for d in dlq)
    for why in ("not JSON", "product: Field required", "purchased", "same product"):
        assert why in reasons


def test_priority_requests_jump_the_queue_and_are_deduplicated(broker, env, tmp_path):
    from processors.requests import GenerationRequest

    e, s = env
    worker = Worker(e, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        p = EventProducer(s)
        for i in range(3):  # the same cache miss three times, plus another pair
            p.request_knowledge(GenerationRequest(request_id="miss-1", pair_key="sb|winter coat|P9", behavior="search_buy",
                                                  query="winter coat", event_id=f"m{i}", event_time=workload.T0))
        p.request_knowledge(GenerationRequest(request_id="miss-2", pair_key="sb|rain boots|P8", behavior="search_buy",
                                              query="rain boots", event_id="m9", event_time=workload.T0))
        p.flush()
        wait_caught_up(broker, GROUP, [TOPIC.priority_requests], timeout=60, settle=1.0)
    finally:
        worker.stop()
    # priority batches go to their own topic, which generation workers read first
    by_pair, reqs, batches = requests_by_pair(broker, TOPIC.priority_batches)
    assert {r["request_id"] for r in reqs} == {"miss-1", "miss-2"} and len(reqs) == 2
    assert all(b["priority"] for b in batches) and all(r["source"] == "cache_miss" for r in reqs)
    assert not read_json(broker, TOPIC.batches)


def test_killed_worker_loses_no_pair_and_duplicates_no_request(broker, env, tmp_path):
    e, s = env
    w = workload.build(n_search=6000, n_co=1200, seed=5)
    first = Worker(e, tmp_path / "w1.log", "first").start()
    first.wait_ready()
    produce(s, w.noise)
    wait_caught_up(broker, GROUP, SOURCES + [TOPIC.by_product], timeout=90)
    # events keep arriving while the worker dies (kill -9) mid-stream and a new one takes over
    feeder = threading.Thread(target=produce, args=(s, w.main, 1500.0))
    feeder.start()
    time.sleep(2.5)
    done_before_kill = committed(broker, GROUP, SOURCES)
    first.kill()
    second = Worker(e, tmp_path / "w2.log", "second").start()
    try:
        feeder.join()
        second.wait_ready()
        try:
            wait_caught_up(broker, GROUP, ALL_STAGES, timeout=180, settle=1.5)
        except TimeoutError:
            (tmp_path / "w2.tasks").write_text(second.dump_tasks())  # where it waits, for the report
            raise
    finally:
        second.stop()
    assert 0 < done_before_kill < len(w.noise) + len(w.main), "the kill was not mid-stream"
    by_pair, reqs, _ = requests_by_pair(broker)
    expected = workload.expected_pairs(w)
    assert set(by_pair) == expected, f"missing {sorted(expected - set(by_pair))}, unexpected {sorted(set(by_pair) - expected)}"
    twice = {k: v for k, v in by_pair.items() if len(v) > 1}
    assert not twice, f"pairs with more than one generation request: {twice}"
    # every table key on one changelog partition, the one its worker recovers it from
    split = keys_on_several_partitions(broker)
    assert not split, f"{len(split)} table keys on several changelog partitions, e.g. {sorted(split.items())[:3]}"
    # A request is batched again only if the crash fell between the broker's ack of its batch and
    # the changelog write recording that ack: one micro-batch of at most INTENTFLOW_BATCH__MAX_SIZE
    # requests (generation dedups by request id for that window).
    repeats = len(reqs) - len(by_pair)
    print(f"requests {len(reqs)} for {len(by_pair)} pairs; {repeats} redelivered copies")
    assert repeats <= int(workload.ENV["INTENTFLOW_BATCH__MAX_SIZE"])
