"""Operating the stream workers on the real broker: scaling out to a second worker mid-stream, and a
restart with changed thresholds that must keep the counts in the tables."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest

from infra import services
from tests import workload
from tests.kafka_util import (ALL_STAGES, GROUP, SOURCES, TOPIC, Worker, assignments, committed, create_topics,
                              produce, requests_by_pair, wait_caught_up, worker_env)

pytestmark = pytest.mark.integration

SAMPLERS = ("sample_search_buy", "sample_co_purchase")  # every worker below joins the one GROUP


def _topics(broker: str, settings_for, env: dict):
    s = settings_for(broker, **env)
    create_topics(broker, s)
    return s


def sampled(metrics_port: int) -> float:
    """Source events a worker has handled (any outcome), from its Prometheus metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    return sum(s.value for fam in text_string_to_metric_families(text) if fam.name == "intentflow_events"
               for s in fam.samples if s.name == "intentflow_events_total" and s.labels.get("stage") in SAMPLERS)


def _stop_all(*workers: Worker) -> None:
    threads = [threading.Thread(target=w.stop) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_a_second_worker_takes_partitions_mid_stream_without_losing_or_duplicating_a_pair(broker, tmp_path, settings_for):
    s = _topics(broker, settings_for, workload.ENV)
    w = workload.build(n_search=3000, n_co=600, seed=23)
    port_a, port_b = services.free_port(), services.free_port()
    a = Worker(worker_env(broker, tmp_path / "data-a", **workload.ENV, INTENTFLOW_METRICS_PORT=str(port_a)),
               tmp_path / "a.log", "a")
    b = Worker(worker_env(broker, tmp_path / "data-b", **workload.ENV, INTENTFLOW_METRICS_PORT=str(port_b)),
               tmp_path / "b.log", "b")
    failed: list[BaseException] = []
    b_ready = threading.Event()
    times: dict[str, float] = {}
    head, tail = w.main[: len(w.main) * 2 // 3], w.main[len(w.main) * 2 // 3:]

    def feed() -> None:
        """Events at 200/s (~13 s for the head: B starts and joins while they arrive); the tail
        (~6 s) only once B is ready, so that B certainly consumes events of its own."""
        try:
            times["feed"] = time.monotonic()
            produce(s, head, 200.0)
            times["head produced"] = time.monotonic()
            b_ready.wait(150)
            produce(s, tail, 200.0)
        except BaseException as e:  # noqa: BLE001 - re-raised in the test thread
            failed.append(e)

    feeder = threading.Thread(target=feed)
    a.start()
    try:
        a.wait_ready()
        produce(s, w.noise)
        wait_caught_up(broker, GROUP, SOURCES + [TOPIC.by_product], timeout=90)
        feeder.start()
        time.sleep(3.0)
        done_before_b = committed(broker, GROUP, SOURCES)
        b.start()
        times["b started"] = time.monotonic()
        try:
            b.wait_ready(timeout=120)
        finally:
            times["b ready"] = time.monotonic()
            b_ready.set()
        feeder.join()
        assert not failed, f"producing failed: {failed[0]!r}"
        wait_caught_up(broker, GROUP, ALL_STAGES, timeout=180, settle=1.5)
        # evidence while both still run: the final split of partitions and the events each handled
        assert a.proc.poll() is None and b.proc.poll() is None, "a worker died"
        assigned_a, assigned_b = assignments(a.log), assignments(b.log)
        work_a, work_b = sampled(port_a), sampled(port_b)
    finally:
        if feeder.is_alive():
            feeder.join()
        _stop_all(a, b)

    n_partitions = s.partitions
    parts_a, parts_b = assigned_a[-1], assigned_b[-1]
    assert assigned_a[0] == set(range(n_partitions)), f"A alone should own every partition first: {assigned_a}"
    assert 0 < done_before_b < len(w.noise) + len(w.main), "B did not join mid-stream"
    assert parts_a and parts_b, f"a worker got no partitions: a={parts_a} b={parts_b}"
    assert not parts_a & parts_b and parts_a | parts_b == set(range(n_partitions)), (parts_a, parts_b)
    assert work_a > 0 and work_b > 0, f"events handled: a={work_a} b={work_b}"
    assert work_a + work_b >= len(w.noise) + len(w.main)

    by_pair, reqs, batches = requests_by_pair(broker)
    expected = workload.expected_pairs(w)
    assert len(expected) > 100
    assert set(by_pair) == expected, f"missing {sorted(expected - set(by_pair))}, unexpected {sorted(set(by_pair) - expected)}"
    twice = {k: v for k, v in by_pair.items() if len(v) > 1}
    assert not twice, f"pairs with more than one generation request: {twice}"
    # As after a crash, a request may be batched again only if a rebalance fell between the
    # broker's ack of its batch and the changelog write recording it (same request id): at most
    # the one batch in flight (max_size 16) each time a worker gave partitions up.
    repeats = len(reqs) - len(by_pair)
    revocations = len(assigned_a) - 1 + len(assigned_b) - 1
    print(", ".join(f"{k} at {v - times['feed']:.1f}s" for k, v in sorted(times.items(), key=lambda kv: kv[1])))
    print(f"a: partitions {sorted(parts_a)}, {work_a:.0f} events; b: partitions {sorted(parts_b)}, {work_b:.0f} events; "
          f"requests {len(reqs)} for {len(by_pair)} pairs; {repeats} repeated copies; {revocations} revocation(s)")
    assert repeats <= 16 * max(1, revocations)
    assert all(len(bt["requests"]) <= 16 for bt in batches)


def _owns_partitions(w: Worker) -> bool:
    try:
        return bool(assignments(w.log)[-1])
    except AssertionError:  # no assignment logged yet
        return False


def test_a_rebalance_while_the_agents_queues_are_full_loses_and_duplicates_nothing(broker, tmp_path, settings_for):
    """The patched consumer path (streams/faust_patches.py 1. and 6.-9., streams/take.py) under a
    rebalance that comes while the hand-off waits for room: each agent's queue holds 8 messages
    (INTENTFLOW_STREAM_BUFFER_MAXSIZE) and a backlog waits on the broker, so both workers' consumers
    are blocked on full queues (a fetch brings up to 5,000 messages) when B stops mid-backlog and
    leaves the group: Faust suspends A's flow and clears its queues, the events in flight belong to
    an old generation, and A takes B's partitions over from B's last commit."""
    env = {**workload.ENV, "INTENTFLOW_STREAM_BUFFER_MAXSIZE": "8"}
    s = _topics(broker, settings_for, env)
    w = workload.build(n_search=30000, n_co=6000, seed=31)
    total = len(w.noise) + len(w.main)
    a = Worker(worker_env(broker, tmp_path / "data-a", **env), tmp_path / "a.log", "a")
    b = Worker(worker_env(broker, tmp_path / "data-b", **env), tmp_path / "b.log", "b")
    a.start()
    try:
        a.wait_ready()
        produce(s, w.noise)
        wait_caught_up(broker, GROUP, SOURCES + [TOPIC.by_product], timeout=90)
        b.start().wait_ready(timeout=120)
        deadline = time.monotonic() + 60  # B has its partitions: both workers own some
        while not _owns_partitions(b):
            assert time.monotonic() < deadline, f"B got no partitions:\n{b.tail()}"
            time.sleep(0.2)
        warm, backlog = w.main[:500], w.main[500:]
        produce(s, warm)  # both workers handle events (their flow is on) before the backlog comes
        wait_caught_up(broker, GROUP, SOURCES + [TOPIC.by_product], timeout=90)
        produce(s, backlog)  # all at once
        start = committed(broker, GROUP, SOURCES)
        while committed(broker, GROUP, SOURCES) < start + len(backlog) // 10 and time.monotonic() < deadline + 60:
            time.sleep(0.05)
        b.stop()  # leaves the group mid-backlog: A's rebalance comes with its queues full
        left_at = committed(broker, GROUP, SOURCES)
        wait_caught_up(broker, GROUP, ALL_STAGES, timeout=180, settle=1.5)
        assert a.proc.poll() is None, "A died"
        assigned_a, assigned_b = assignments(a.log), assignments(b.log)
    finally:
        _stop_all(a, b)

    print(f"committed when B had left: {left_at} of {total}; a: {assigned_a}; b: {assigned_b}")
    assert b.proc.returncode == 0, f"B did not stop cleanly:\n{b.tail()}"
    assert left_at < total * 0.9, "A and B had nearly caught up before B left: no backlog at the rebalance"
    assert assigned_b[-1] and assigned_a[-1] == set(range(s.partitions)), (assigned_a, assigned_b)
    by_pair, reqs, batches = requests_by_pair(broker)
    expected = workload.expected_pairs(w)
    assert set(by_pair) == expected, f"missing {sorted(expected - set(by_pair))}, unexpected {sorted(set(by_pair) - expected)}"
    twice = {k: v for k, v in by_pair.items() if len(v) > 1}
    assert not twice, f"pairs with more than one generation request: {twice}"
    revocations = len(assigned_a) - 1 + len(assigned_b) - 1
    assert len(reqs) - len(by_pair) <= 16 * max(1, revocations)


# --- a restart with changed thresholds -----------------------------------------------------


def _events(groups: dict[str, tuple[int, int]], start: int) -> list[workload.Msg]:
    """Search-buy events, every one clicked and bought (so only min_events decides), interleaved.

    groups: name -> (pairs, events per pair). Pair i of group g is query "restart {g} {i}" with
    product R{g}{i}; event ids and times continue from `start`.
    """
    rounds = max(n for _, n in groups.values())
    msgs, i = [], start
    for r in range(rounds):
        for g, (pairs, n) in groups.items():
            for p in range(pairs):
                if r < n:
                    q, pid = f"restart {g} {p}", f"R{g}{p}"
                    ev = {"event_id": f"rs{i}", "event_time": workload.T0 + i, "query": q,
                          "product": {"product_id": pid, "title": f"Home product {pid}", "product_type": f"type-{g}",
                                      "category": "Home"},
                          "clicked": True, "purchased": True}
                    msgs.append(workload.Msg("sb", json.dumps(ev).encode(), q.encode(), ev))
                    i += 1
    return msgs


def _keys(group: str, pairs: int) -> set[str]:
    return {f"sb|restart {group} {p}|R{group}{p}" for p in range(pairs)}


def test_a_restart_with_a_lower_min_events_keeps_the_counts_and_applies_the_new_threshold(broker, tmp_path, settings_for):
    strict = {**workload.ENV, "INTENTFLOW_SAMPLING__MIN_EVENTS": "5"}
    relaxed = {**workload.ENV, "INTENTFLOW_SAMPLING__MIN_EVENTS": "4"}
    s = _topics(broker, settings_for, strict)
    n = 8  # pairs per group, spread over the partitions by their keys
    # before the restart (min_events 5): "done" qualifies, "held" (3) and "low" (2) do not
    before = _events({"done": (n, 5), "held": (n, 3), "low": (n, 2)}, start=0)
    # after it (min_events 4): one more event each; held reaches 4 and qualifies, low reaches 3,
    # done is already sent and must not be sent again
    after = _events({"done": (n, 1), "held": (n, 1), "low": (n, 1)}, start=len(before))
    done, held, low = _keys("done", n), _keys("held", n), _keys("low", n)
    data = tmp_path / "data"

    def run(name: str, env: dict, events) -> None:
        """A worker on the same data dir: produce, wait until caught up, stop it cleanly."""
        w = Worker(worker_env(broker, data, **env), tmp_path / f"{name}.log", name).start()
        try:
            w.wait_ready()
            produce(s, events)
            wait_caught_up(broker, GROUP, ALL_STAGES, timeout=120, settle=1.5)
        finally:
            w.stop()
        assert w.proc.returncode == 0, f"{name} worker did not stop cleanly ({w.proc.returncode}):\n{w.tail()}"

    run("first", strict, before)
    by_pair, reqs, _ = requests_by_pair(broker)
    assert set(by_pair) == done and len(reqs) == n, sorted(by_pair)

    run("second", relaxed, after)

    by_pair, reqs, _ = requests_by_pair(broker)
    assert set(by_pair) == done | held, f"missing {sorted(done | held - set(by_pair))}, unexpected {sorted(set(by_pair) - done - held)}"
    assert not set(by_pair) & low
    assert len(reqs) == len(by_pair) == 2 * n, "a pair was sent to generation twice"
    # the counts came through the restart exactly: 3 before + 1 after, not 1 (lost) nor more (recounted)
    signals = {r["pair_key"]: r["signals"] for r in reqs}
    assert all(signals[k] == {"events": 4, "clicks": 4, "purchases": 4} for k in held), {k: signals[k] for k in held}
    assert all(signals[k] == {"events": 5, "clicks": 5, "purchases": 5} for k in done), {k: signals[k] for k in done}
