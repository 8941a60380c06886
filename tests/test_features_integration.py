"""Edges in on the real broker -> a real stream worker -> Feast online (real Redis) and offline."""

import json
import time

import pandas as pd
import pyarrow.dataset as ds
import pytest
from confluent_kafka import Producer

from infra import services
from processors import features
from tests.feature_data import co_edge, product, reference, search_edge
from tests.kafka_util import FEATURE_STAGES, GROUP, TOPIC, Worker, read_json, wait_caught_up, worker_env

pytestmark = pytest.mark.integration
AGE_S = 600  # the edges' events happened this long before the test starts
PRODUCTS = [product(f"P{i}", f"Product number {i} walking shoe", "walking shoes") for i in range(4)]
RELS = [("used_for_audience", "pregnant women"), ("used_for_function", "prevent slipping"), ("xWant", "walk comfortably")]


def _edges(queries: list[str], t: float) -> list[dict]:
    out = []
    for qi, q in enumerate(queries):
        for pi, p in enumerate(PRODUCTS[:3]):
            for ri, (rel, tail) in enumerate(RELS):
                out.append(search_edge(q, p, rel, f"{tail} {qi}" if ri == 2 else tail, round(0.5 + 0.1 * ri + 0.01 * pi, 3), t + qi))
    out += [co_edge(PRODUCTS[0], PRODUCTS[3], "used_with", "insoles", 0.8, t),
            co_edge(PRODUCTS[0], PRODUCTS[3], "xIs_a", "new mothers", 0.7, t)]
    return out


def _produce(broker: str, edges: list[dict], extra: list[bytes] = ()) -> None:
    p = Producer({"bootstrap.servers": broker, "enable.idempotence": True, "partitioner": "murmur2_random"})
    for e in edges:
        p.produce(TOPIC.edges, key=e["edge_id"].encode(), value=json.dumps(e).encode())
    for v in extra:
        p.produce(TOPIC.edges, key=b"bad", value=v)
    assert p.flush(30) == 0


def _offline_rows(data_dir) -> int:
    return sum(ds.dataset(str(p), format="parquet").count_rows() for p in (data_dir / "feast" / "offline").iterdir())


def test_edges_become_online_and_offline_features_idempotently_through_a_redis_outage(broker, redis, tmp_path, settings_for):
    data = tmp_path / "data"
    env = worker_env(broker, data, INTENTFLOW_REDIS_PORT=str(redis.port), INTENTFLOW_FEATURES__OFFLINE_FLUSH_S="0.5",
                     INTENTFLOW_FEATURES__RETRY_MAX_S="1")
    services.ensure_topics(broker, FEATURE_STAGES + [TOPIC.dlq, TOPIC.priority_requests, TOPIC.batches,
                                                    TOPIC.priority_batches], 4)
    queries = ["shoes for pregnant women", "non slip shoes", "maternity sneakers"]
    T0 = time.time() - AGE_S  # here, not at import: the suite may reach this test minutes after collecting it
    edges = _edges(queries, T0)
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        _produce(broker, edges, extra=[b"not json", json.dumps({"edge_id": "x", "behavior": "browse"}).encode()])
        wait_caught_up(broker, GROUP, FEATURE_STAGES, timeout=120, settle=1.5)

        s = settings_for(broker, INTENTFLOW_DATA_DIR=str(data), INTENTFLOW_REDIS_PORT=str(redis.port))
        from feature_repo.client import FeatureReader
        from feature_repo.store import open_store

        store = open_store(s.features, s.data_dir, s.redis_port, apply=False)
        reader = FeatureReader(store)
        ref = reference(edges)
        for q in queries:
            want = ref[f"query|{features.query_id(q)}"]["query_intents"]
            got = reader.query(q)["query_intents"]
            assert got["intents"] == want["intents"] and got["edge_ids"] == want["edge_ids"]
            assert got["intent_scores"] == pytest.approx(want["intent_scores"], abs=1e-6)
            assert got["models"] == ["smollm2"] and got["critic_versions"] == ["critic-test"]
            assert AGE_S < got["freshness_s"] < AGE_S + 120
        p0 = reader.product("P0")
        assert p0["product_knowledge"]["used_with"] == ["insoles"]
        assert p0["product_knowledge"]["used_for_audience"] == ["pregnant women"]
        assert p0["product_subcategory"]["subcategory"] == "walking shoes for pregnant women"
        assert reader.pair("P3", "P0")["co_purchase_reasons"]["reasons"] == ["insoles", "new mothers"]

        # history: the offline store answers point-in-time reads with the same lists
        ent = pd.DataFrame({"query_id": [features.query_id(q) for q in queries],
                            "event_timestamp": [pd.Timestamp.now(tz="UTC")] * len(queries)})
        hist = store.get_historical_features(entity_df=ent, features=["query_intents:intents", "query_intents:edge_ids"]).to_df()
        for q, intents in zip(hist["query_id"], hist["intents"]):
            assert list(intents) == ref[f"query|{q}"]["query_intents"]["intents"]

        dead = [d for d in read_json(broker, TOPIC.dlq) if d.get("stage") == "route_edges"]
        assert len(dead) == 2 and all(d["kind"] == "invalid_edge" for d in dead)
        # parsed at the boundary (processors.contracts.Edge): pydantic's reason, field by field
        browse = next(d for d in dead if d["value_text"] and "browse" in d["value_text"])
        assert "invalid edge: " in browse["error"] and "behavior" in browse["error"] and "lineage" in browse["error"]

        # a serving miss asks for knowledge at once: a priority request reaches generation.batches.priority
        from feature_repo.cache import KnowledgeCache

        prio = Producer({"bootstrap.servers": broker, "partitioner": "murmur2_random"})
        cache = KnowledgeCache(store, publish=lambda k, v: prio.produce(TOPIC.priority_requests, key=k.encode(), value=v))
        assert cache.query("shoes for pregnant women").tier == "online"
        miss = cache.query("clogs for nurses", product=PRODUCTS[1])
        assert miss.tier == "miss" and miss.requested and prio.flush(10) == 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            batches = [b for b in read_json(broker, TOPIC.priority_batches) if b["priority"]]
            if any(r["request_id"] == miss.request["request_id"] for b in batches for r in b["requests"]):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"the cache-miss request never reached generation.batches:\n{worker.tail()}")

        # replaying the same edges changes nothing: no new rows, online values untouched
        before = {q: reader.query(q) for q in queries}
        offline_before = _offline_rows(data)
        _produce(broker, edges)
        wait_caught_up(broker, GROUP, FEATURE_STAGES, timeout=120, settle=1.5)
        assert {q: reader.query(q) for q in queries} == before
        assert _offline_rows(data) == offline_before

        # Redis goes away while new knowledge arrives; after it is back nothing is missing
        services.down(redis)
        later = ["waterproof boots", "shoes for nurses"]
        new_edges = _edges(later, T0 + 100)
        _produce(broker, new_edges)
        deadline = time.monotonic() + 30
        while b"retrying" not in (tmp_path / "worker.log").read_bytes() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert b"retrying" in (tmp_path / "worker.log").read_bytes(), worker.tail()
        services.redis_up(redis.port, redis.run_dir)
        wait_caught_up(broker, GROUP, FEATURE_STAGES, timeout=120, settle=1.5)
        ref = reference(edges + new_edges)
        for q in queries + later:
            assert reader.query(q)["query_intents"]["intents"] == ref[f"query|{features.query_id(q)}"]["query_intents"]["intents"]
        assert reader.product("P0")["product_knowledge"]["edge_ids"] == ref["product|P0"]["product_knowledge"]["edge_ids"]

        # what an operator sees: `intentflow status --json`
        import subprocess

        from tests.kafka_util import INTENTFLOW, ROOT

        r = subprocess.run([INTENTFLOW, "status", "--json", "--window", "0.5"], cwd=ROOT, capture_output=True,
                           env={**env, "INTENTFLOW_LOG_LEVEL": "warn"}, timeout=120)
        assert r.returncode == 0, r.stderr.decode()[-2000:]
        st = json.loads(r.stdout)
        feats = next(x for x in st["stages"] if x["stage"] == "features")
        assert feats["lag"] == 0 and feats["processed"] == feats["in"] > 0
        assert st["dlq"][TOPIC.dlq] >= 2 and st["topics"][TOPIC.edges] == 2 * len(edges) + 2 + len(new_edges)
        assert st["freshness_s"]["n"] > 0 and st["freshness_s"]["p50"] > 0

        # what a downstream user reads: `intentflow features`; a read leaves the registry alone
        registry = data / "feast" / "registry.db"
        before = registry.stat().st_mtime_ns
        r = subprocess.run([INTENTFLOW, "features", "--product", "P0", "--augment", "--json"], cwd=ROOT,
                           capture_output=True, env={**env, "INTENTFLOW_LOG_LEVEL": "warn"}, timeout=120)
        assert r.returncode == 0, r.stderr.decode()[-2000:]
        out = json.loads(r.stdout)
        assert out["found"] and out["features"]["product_knowledge"]["used_with"] == ["insoles"]
        assert "used by [pregnant women" in out["augmentation"]
        r = subprocess.run([INTENTFLOW, "features", "--query", "never searched", "--json"], cwd=ROOT,
                           capture_output=True, env={**env, "INTENTFLOW_LOG_LEVEL": "warn"}, timeout=120)
        assert r.returncode == 1 and json.loads(r.stdout)["found"] is False
        assert registry.stat().st_mtime_ns == before
    finally:
        worker.stop()


def test_a_row_no_store_takes_is_dead_lettered_and_a_stopping_worker_ends_its_retries(broker, redis, tmp_path):
    """A deterministic failure (a product title that is a number: no string feature can hold it) costs
    that entity's update, dead-lettered with the reason and its original bytes, and nothing else;
    a store that is down is retried, and SIGTERM ends the retrying worker promptly."""
    import base64

    data = tmp_path / "data"
    env = worker_env(broker, data, INTENTFLOW_REDIS_PORT=str(redis.port), INTENTFLOW_FEATURES__OFFLINE_FLUSH_S="0.5",
                     INTENTFLOW_FEATURES__RETRY_MAX_S="30")
    services.ensure_topics(broker, FEATURE_STAGES + [TOPIC.dlq], 4)
    t0 = time.time() - AGE_S
    good = _edges(["shoes for pregnant women", "non slip shoes"], t0)
    poison = search_edge("clogs for nurses", product("PX", 42, "clogs"), "used_for_audience", "nurses", 0.9, t0)
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        _produce(broker, good)
        # the poison's updates straight onto the entity topic: as an edge it would be dead-lettered by
        # route_edges already (a title must be text: processors.contracts.Edge)
        p = Producer({"bootstrap.servers": broker, "enable.idempotence": True, "partitioner": "murmur2_random"})
        for key, contrib in features.contributions(poison):
            p.produce(TOPIC.entity_updates, key=key.encode(), value=json.dumps(contrib).encode())
        assert p.flush(30) == 0
        wait_caught_up(broker, GROUP, FEATURE_STAGES, timeout=120, settle=1.5)

        (dead,) = [d for d in read_json(broker, TOPIC.dlq) if d.get("stage") == "write_features"]
        assert dead["kind"] == "feature_row_rejected" and dead["source_topic"] == TOPIC.entity_updates
        assert "product_knowledge row rejected" in dead["error"] and "TypeError" in dead["error"]
        original = json.loads(base64.b64decode(dead["value_b64"]))
        assert original["id"] == poison["edge_id"] and original["meta"]["title"] == 42
        assert base64.b64decode(dead["key_b64"]) == b"product|PX" and dead["offset"] >= 0

        from feature_repo.client import FeatureReader
        from feature_repo.store import open_store
        from processors.features import FeatureConfig

        store = open_store(FeatureConfig(repo_dir=str(data / "feast"), redis=f"127.0.0.1:{redis.port}"), str(data),
                           redis.port, apply=False)
        reader = FeatureReader(store)
        ref = reference(good + [poison])
        for q in ("shoes for pregnant women", "non slip shoes", "clogs for nurses"):  # the query's row was fine
            assert reader.query(q)["query_intents"]["edge_ids"] == ref[f"query|{features.query_id(q)}"]["query_intents"]["edge_ids"]
        assert reader.product("P0")["product_knowledge"]["edge_ids"] == ref["product|P0"]["product_knowledge"]["edge_ids"]
        rows = read_json(broker, TOPIC.feature_rows)
        assert not [r for r in rows if r["view"] == "product_knowledge" and r["row"]["product_id"] == "PX"]

        # the online store goes down while knowledge arrives: retried (backoff up to 30 s) until SIGTERM
        services.down(redis)
        _produce(broker, _edges(["waterproof boots"], t0 + 100))
        deadline = time.monotonic() + 30
        while b"retrying" not in (tmp_path / "worker.log").read_bytes() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert b"retrying" in (tmp_path / "worker.log").read_bytes(), worker.tail()
        time.sleep(8)  # the backoff has grown past what a stop may wait
        t_stop = time.monotonic()
        worker.stop(timeout=25)
        assert time.monotonic() - t_stop < 25
    finally:
        worker.stop()
