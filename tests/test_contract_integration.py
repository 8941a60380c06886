"""Where the contract meets the broker: partition ownership and event time, with a real worker."""

from __future__ import annotations

import json
import time
import zlib

import pytest
from confluent_kafka import Producer

from streams.producer import EventProducer, owner_partition
from tests import workload
from tests.kafka_util import GROUP, TOPIC, Worker, assignments, read_json, wait_caught_up, worker_env

pytestmark = pytest.mark.integration

STAGES = [TOPIC.search_buy, TOPIC.requests]


@pytest.fixture
def env(stream_env):
    return stream_env


def _event(eid: str, query: str, t: int = workload.T0) -> bytes:
    return json.dumps({"event_id": eid, "event_time": t, "query": query, "clicked": True, "purchased": True,
                       "product": {"product_id": "P1", "title": "Multitool", "product_type": "multitool"}}).encode()


def _produce(broker: str, partitioner: str, records: list[tuple[bytes, bytes]]) -> dict[bytes, set[int]]:
    """Produce keyed records with a librdkafka partitioner; the partitions each key landed on."""
    landed: dict[bytes, set[int]] = {}
    p = Producer({"bootstrap.servers": broker, "partitioner": partitioner, "enable.idempotence": True})
    for key, value in records:
        p.produce(TOPIC.search_buy, value, key,
                  on_delivery=lambda err, m: landed.setdefault(m.key(), set()).add(-1 if err else m.partition()))
    assert p.flush(30) == 0
    return landed


def _requests(broker: str) -> list[dict]:
    return read_json(broker, TOPIC.requests)


def _split_between(a: Worker, b: Worker, n: int, timeout: float = 60.0) -> tuple[set[int], set[int]]:
    """Wait until the two workers share the partitions; each one's."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pa, pb = assignments(a.log)[-1], assignments(b.log)[-1]
        except AssertionError:  # nothing assigned yet
            pa = pb = set()
        if pa and pb and not pa & pb and pa | pb == set(range(n)):
            return pa, pb
        time.sleep(0.5)
    raise TimeoutError(f"partitions not shared: {a.tail(1500)}\n{b.tail(1500)}")


def test_the_right_key_on_the_wrong_partition_is_rerouted_and_the_pair_qualifies_once(broker, env, tmp_path):
    """A producer keying by the pair's owner but with librdkafka's CRC32 partitioner (`consistent`;
    the default `consistent_random` for keyed messages) puts a pair's events on another partition,
    which may be another worker's: there the pair's event ids are not known, so a resent event is
    counted again (and the pair's state is written to two changelog partitions). Re-routed to the
    owner, the duplicate is recognised and the pair qualifies once, on its third distinct event."""
    e, s = env
    n = s.partitions
    combos: dict[tuple[int, int], str] = {}  # (owner, CRC32 partition) -> a query: every combination
    for q in (f"reroute query {i}" for i in range(2000)):
        home, crc = owner_partition(q.encode(), n), zlib.crc32(q.encode()) % n
        if home != crc:
            combos.setdefault((home, crc), q)
    assert len(combos) == n * (n - 1)
    queries = list(combos.values())
    murmur = [(q.encode(), _event(f"{q}-{i}", q)) for q in queries for i in (0, 1)]
    crc32 = [(q.encode(), _event(f"{q}-{i}", q)) for q in queries for i in (0, 2)]  # a resent duplicate, a new one
    a = Worker(worker_env(broker, tmp_path / "data-a", **workload.ENV), tmp_path / "a.log", "a")
    b = Worker(worker_env(broker, tmp_path / "data-b", **workload.ENV), tmp_path / "b.log", "b")
    try:
        a.start().wait_ready()
        b.start().wait_ready()
        parts_a, parts_b = _split_between(a, b, n)
        landed_m = _produce(broker, "murmur2_random", murmur)
        wait_caught_up(broker, GROUP, STAGES, timeout=60, settle=1.0)
        time.sleep(2.0)  # the owners' table updates reach the other worker's standby copy
        landed_c = _produce(broker, "consistent", crc32)
        wait_caught_up(broker, GROUP, STAGES, timeout=60, settle=1.5)
    finally:
        for w in (a, b):
            w.stop()
    # our partition function is librdkafka's murmur2; the CRC32 producer really went elsewhere,
    # for some pairs to the other worker
    assert landed_m == {k: {owner_partition(k, n)} for k, _ in murmur}
    assert landed_c == {k: {zlib.crc32(k) % n} for k, _ in crc32}
    assert any((h in parts_a) != (c in parts_a) for h, c in combos), (parts_a, parts_b)
    requests = _requests(broker)
    assert sorted(r["pair_key"] for r in requests) == sorted(f"sb|{q}|P1" for q in queries), \
        "each pair qualifies exactly once"
    wrong = {r["pair_key"]: r["event_id"] for r in requests if r["event_id"] != r["query"] + "-2"}
    assert not wrong, f"qualified by a duplicate counted twice: {wrong}"


def test_a_far_future_event_is_dead_lettered_and_a_duplicate_sent_later_stays_a_duplicate(broker, env, tmp_path):
    e, s = env
    q = "gifts for dad"
    ep = EventProducer(s)
    worker = Worker(e, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        for i in range(2):  # two events: under min_events (3)
            ep.send_raw(s.topics.search_buy, _event(f"d{i}", q), q.encode())
        ep.flush()
        wait_caught_up(broker, GROUP, STAGES, timeout=60, settle=1.0)
        ep.send_raw(s.topics.search_buy, _event("far", "other query", t=4070908800), b"other query")  # 2099
        ep.flush()
        wait_caught_up(broker, GROUP, STAGES, timeout=60, settle=1.0)
        for i in range(2):  # the same two events resent: duplicates, however far the clock was pushed
            ep.send_raw(s.topics.search_buy, _event(f"d{i}", q), q.encode())
        ep.flush()
        wait_caught_up(broker, GROUP, STAGES, timeout=60, settle=1.0)
    finally:
        worker.stop()
    assert not [r for r in _requests(broker) if r["pair_key"] == f"sb|{q}|P1"], "duplicates were counted again"
    (dead,) = read_json(broker, s.topics.dlq)
    assert "event_time 2099-01-01T00:00:00+00:00 is in the future" in dead["error"]


def test_replay_dead_letters_a_far_future_row_instead_of_failing_delivery(broker, settings_for, tmp_path):
    from infra import services
    from streams.replay import replay

    s = settings_for(broker)
    services.ensure_topics(broker, list(s.topics.model_dump().values()), s.partitions)
    p = tmp_path / "e.jsonl"
    p.write_text("\n".join(_event(eid, "dog bed", t).decode() for eid, t in
                           [("r1", workload.T0), ("r2", 4070908800), ("r3", int(time.time()))]) + "\n")
    counts = replay(p, EventProducer(s), progress=False)
    assert (counts["sent"], counts["invalid"], counts["delivered"]) == (2, 1, 3)
    (dead,) = read_json(broker, s.topics.dlq)
    assert dead["error"].startswith("line 2: event_time 2099-01-01T00:00:00+00:00 is in the future")
    assert sorted(json.loads(m)["event_id"] for m in (json.dumps(x) for x in read_json(broker, s.topics.search_buy))) \
        == ["r1", "r3"]
