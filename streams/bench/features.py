"""`intentflow bench features`: Feast push rows/s and online read latency on a private Redis.

In one run: feature rows made by the real processors (product_knowledge: 40 list columns, the
widest view; query_intents) are pushed (a) online in micro-batches, (b) online one row per push
(the baseline a naive writer gets), (c) online + offline in micro-batches (offline: one Parquet
part per batch), (d) through Feast's own `store.push` and (d') Feast's RedisOnlineStore
`online_write_batch` fed the same protos (the baselines for our lean Redis writer), (e) online
without Feast's read-before-write order check. Then `get_online_features` latency for 1 and 100 entities, against raw redis-py
HGETALL of the same keys (the floor). Product reads are of the widest view.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from infra import services
from processors import features
from processors.features import FeatureConfig

RELS = ["used_for_function", "used_for_audience", "used_in_location", "xWant", "capableOf", "isA"]


def make_rows(n_products: int, cfg: FeatureConfig, t0: float) -> dict[str, list[dict]]:
    """Realistic rows: each product with 3 queries x 6 relations x 2 tails of knowledge."""
    by_view: dict[str, list[dict]] = {}
    for i in range(n_products):
        prod = {"product_id": f"B{i:08d}", "title": f"Product {i} non-slip walking shoe", "product_type": "walking shoes"}
        st: dict = {}
        qst: dict = {}
        for q in range(3):
            query = f"query {i % 5000} variant {q}"
            for r in RELS:
                for t in range(2):
                    e = {"edge_id": f"{i:08x}{q:02x}{RELS.index(r):02x}{t:04x}", "relation": r, "tail": f"tail {r} {t} {q}",
                         "behavior": "search_buy", "query": query, "product": prod, "scores": {"critic": 0.5 + t / 10},
                         "lineage": {"event_time": t0 - q, "filtered_at": t0, "model": "smollm2", "prompt_version": "p1",
                                     "critic_version": "critic-v1"}}
                    (qk, qc), (pk, pc) = features.contributions(e)
                    st, _ = features.apply(st or None, pc, cfg)
                    qst[qk], _ = features.apply(qst.get(qk), qc, cfg)
        for view, row in features.rows(f"product|{prod['product_id']}", st, cfg):
            by_view.setdefault(view, []).append(row)
        if i < 5000:
            for qk, s in qst.items():
                for view, row in features.rows(qk, s, cfg):
                    by_view.setdefault(view, []).append(row)
    return by_view


def _stamp(by_view: dict[str, list[dict]]) -> dict[str, list[dict]]:
    now = time.time()
    return {v: [features.stamp(r, now) for r in rows] for v, rows in by_view.items()}


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def run_features_bench(rows: int = 20000, batch: int = 2000, single: int = 500, reads: int = 2000,
                       progress: bool = True, freeze: bool = True) -> dict:
    from feast.data_source import PushMode

    from feature_repo.client import FeatureReader, Pusher, frame
    from feature_repo.store import open_store
    from streams.bench import machine

    tmp = Path(tempfile.mkdtemp(prefix="intentflow-bench-features-"))
    port = services.free_port()
    redis = services.redis_up(port, tmp / "run")
    try:
        cfg = FeatureConfig(online="redis", repo_dir=str(tmp / "feast"), redis=f"127.0.0.1:{port}")
        store = open_store(cfg, str(tmp), port)
        pusher = Pusher(store)
        fast = Pusher(open_store(cfg.model_copy(update={"online_order_check": False}), str(tmp), port, apply=False))
        feast_writer = Pusher(store, lean=False)
        import gc

        t0 = time.time() - 60
        made = make_rows(rows, cfg, t0)
        if freeze:  # as the stream worker does after start-up (settings.gc_freeze)
            gc.collect()
            gc.freeze()
        out: dict = {"machine": machine(), "rows_per_view": {v: len(r) for v, r in made.items()}, "batch": batch,
                     "gc_freeze": freeze}

        def timed(view: str, rows_: list[dict], step: int, how: str) -> float:
            chunks = [rows_[i:i + step] for i in range(0, len(rows_), step)]
            start = time.perf_counter()
            for chunk in tqdm(chunks, desc=f"{view}: {how}", disable=not progress, unit="push"):
                for r in chunk:
                    r["row_ts"] += 1e-3  # newer than what is stored, so Redis writes it
                stamped = {view: _stamp({"v": chunk})["v"]}
                if how == "online, no order check":
                    fast.push(stamped, "online")
                elif how == "feast online_write_batch":
                    feast_writer.push(stamped, "online")
                elif how == "feast store.push":
                    dense = [{**{f: [] for f in lists}, **r} for r in stamped[view]]  # Feast needs every column
                    store.push(f"{view}_push", frame(dense), to=PushMode.ONLINE)
                else:
                    pusher.push(stamped, "online")
                    if how == "online+offline":
                        pusher.push(stamped, "offline")
            return len(rows_) / (time.perf_counter() - start)

        for view in ("query_intents", "product_knowledge"):
            rs = made[view]
            lists = [f.name for f in store.get_feature_view(view).features if str(f.dtype).startswith("Array")]
            r = {"features": len(store.get_feature_view(view).features)}
            r["online_rows_per_s"] = round(timed(view, rs, batch, "online"))
            r["feast_push_rows_per_s"] = round(timed(view, rs, batch, "feast store.push"))
            r["online_vs_feast_push"] = round(r["online_rows_per_s"] / r["feast_push_rows_per_s"], 2)
            r["feast_write_batch_rows_per_s"] = round(timed(view, rs, batch, "feast online_write_batch"))
            r["online_vs_feast_write_batch"] = round(r["online_rows_per_s"] / r["feast_write_batch_rows_per_s"], 2)
            r["online_no_order_check_rows_per_s"] = round(timed(view, rs, batch, "online, no order check"))
            r["online_single_rows_per_s"] = round(timed(view, rs[:single], 1, "online"))
            r["batched_vs_single"] = round(r["online_rows_per_s"] / r["online_single_rows_per_s"], 1)
            r["online_offline_rows_per_s"] = round(timed(view, rs, batch, "online+offline"))
            out[view] = r
        pk = made["product_knowledge"]

        reader = FeatureReader(store)
        import redis as redis_py

        from feast.infra.online_stores.redis import _redis_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        client = redis_py.Redis(host="127.0.0.1", port=port)
        ids = [r["product_id"] for r in pk]

        def rkey(pid: str) -> bytes:
            return _redis_key("intentflow", EntityKey(join_keys=["product_id"], entity_values=[Value(string_val=pid)]),
                              entity_key_serialization_version=3)

        for n in (1, 100):
            lat, raw = [], []
            for i in tqdm(range(reads if n == 1 else reads // 10), desc=f"reads of {n}", disable=not progress):
                sample = [ids[(i * 7919 + j * 104729) % len(ids)] for j in range(n)]
                s = time.perf_counter()
                got = reader._read(["product_knowledge"], [{"product_id": p} for p in sample])  # noqa: SLF001
                lat.append((time.perf_counter() - s) * 1000)
                assert all(g for g in got), "a pushed product was not readable"
                keys = [rkey(p) for p in sample]
                s = time.perf_counter()
                with client.pipeline(transaction=False) as pipe:
                    for k in keys:
                        pipe.hgetall(k)
                    pipe.execute()
                raw.append((time.perf_counter() - s) * 1000)
            out[f"read_{n}_p50_ms"] = round(statistics.median(lat), 3)
            out[f"read_{n}_p99_ms"] = round(_pct(lat, 99), 3)
            out[f"read_{n}_raw_redis_p99_ms"] = round(_pct(raw, 99), 3)
            out[f"read_{n}_p99_vs_raw_redis"] = round(out[f"read_{n}_p99_ms"] / max(out[f"read_{n}_raw_redis_p99_ms"], 1e-6), 1)
        # Reads above ran in this process's collector state (frozen after load with `freeze`, as a
        # worker does). Without the freeze, the 100-entity p99 is the collector rescanning Feast's
        # long-lived objects: measured here too, for the comparison.
        if freeze:
            gc.unfreeze()
            lat = []
            for i in range(reads // 10):
                sample = [ids[(i * 7919 + j * 104729) % len(ids)] for j in range(100)]
                s = time.perf_counter()
                reader._read(["product_knowledge"], [{"product_id": p} for p in sample])  # noqa: SLF001
                lat.append((time.perf_counter() - s) * 1000)
            out["read_100_not_frozen_p50_ms"] = round(statistics.median(lat), 3)
            out["read_100_not_frozen_p99_ms"] = round(_pct(lat, 99), 3)
        out["targets"] = {"read_1_p99_ms<=5": out["read_1_p99_ms"] <= 5,
                          **{f"{v}_online_rows_per_s>=10000": out[v]["online_rows_per_s"] >= 10000
                             for v in ("query_intents", "product_knowledge")}}
        return out
    finally:
        services.down(redis)
