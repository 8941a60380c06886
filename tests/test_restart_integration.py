"""A stream worker killed (kill -9) before a stage's first commit and restarted handles every
message it had not committed: none skipped, none written twice (found by `intentflow bench faults`:
after such a restart the offline writer never saw the feature rows of the partitions it had not
committed yet, and committed past them once newer rows came)."""

from __future__ import annotations

import json
import time
from collections import Counter

import pyarrow.dataset as ds
import pytest
from confluent_kafka import Producer

from infra import services
from infra.kafka_compat import end_offsets
from tests.feature_data import co_edge, product, search_edge
from tests.kafka_util import GROUP, Worker, group_lag, read_json, wait_caught_up, worker_env

pytestmark = pytest.mark.integration

PRODUCTS = [product(f"P{i}", f"Product number {i} walking shoe", "walking shoes") for i in range(3)]
QUERIES = ["shoes for pregnant women", "non slip shoes", "maternity sneakers", "shoes for nurses"]


def _edges(t: float) -> list[dict]:
    out = [search_edge(q, p, rel, f"{tail} {qi}", 0.6 + 0.01 * pi, t + qi)
           for qi, q in enumerate(QUERIES) for pi, p in enumerate(PRODUCTS)
           for rel, tail in (("used_for_audience", "pregnant women"), ("used_for_function", "prevent slipping"))]
    return out + [co_edge(PRODUCTS[0], PRODUCTS[2], "used_with", "insoles", 0.8, t)]


def _entity(row: dict) -> str:
    return str(row.get("query_id") or row.get("product_id") or row.get("pair_id"))


def test_a_worker_killed_before_its_first_commit_handles_every_uncommitted_message_after_a_restart(broker, tmp_path):
    from streams.settings import Settings

    services.ensure_pipeline_topics(Settings(broker=broker))
    data = tmp_path / "data"
    # the offline writer flushes 5 s after its first row: the kill comes before it wrote or committed
    env = worker_env(broker, data, INTENTFLOW_FEATURES__ONLINE="sqlite", INTENTFLOW_FEATURES__OFFLINE_FLUSH_S="5")
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        worker.wait_ready(120)
        p = Producer({"bootstrap.servers": broker, "enable.idempotence": True, "partitioner": "murmur2_random"})
        for e in _edges(time.time() - 600):
            p.produce("knowledge.edges", key=e["edge_id"].encode(), value=json.dumps(e).encode())
        assert p.flush(30) == 0
        deadline = time.monotonic() + 120
        while sum(end_offsets(broker, ["features.rows"]).values()) == 0:
            assert time.monotonic() < deadline, worker.tail()
            time.sleep(0.05)
        worker.kill()
        assert group_lag(broker, GROUP, ["features.rows"]) > 0, "the offline writer committed before the kill"

        # restarted, and nothing new arrives: what was not committed must be handled all the same
        worker = Worker(env, tmp_path / "worker.log").start()
        worker.wait_ready(120)
        wait_caught_up(broker, GROUP, ["knowledge.edges", "features.by_entity", "features.rows"], timeout=120,
                       settle=1.0)
    finally:
        worker.stop()
    rows = read_json(broker, "features.rows")
    want = {(m["view"], _entity(m["row"]), m["row"]["row_ts"]) for m in rows}
    written = Counter()
    for view_dir in (data / "feast" / "offline").iterdir():
        for r in ds.dataset(str(view_dir), format="parquet").to_table().to_pylist():
            written[(view_dir.name, _entity(r), r["event_timestamp"].timestamp())] += 1
    assert len(written) == len(want) > 0, f"offline: {len(written)} rows of {len(want)}"
    assert {(v, e, round(ts, 3)) for v, e, ts in written} == {(v, e, round(ts, 3)) for v, e, ts in want}
    assert max(written.values()) == 1, "a feature row written twice offline"
