"""COSMO's two-tier serving cache, without the day.

Tier 1: an in-process map preloaded from the offline store with the latest rows of head queries
(and refreshed from the online store after `ttl_s`). Tier 2: the online store. A miss returns what
exists now (nothing) and, when the caller gives the behaviour context (the query and the product
shown, or two products), publishes a priority generation request; the stream dedups it against
pairs already generated, so repeated misses cost one request. The next read after the pipeline
catches up is fresh.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from feast import FeatureStore

from feature_repo.client import FeatureReader
from feature_repo.offline import folder
from processors.events import co_pair_key, normalize_query, search_pair_key
from processors.features import query_id


@dataclass
class Lookup:
    features: dict
    tier: str  # "tier1" | "online" | "miss"
    requested: bool = False
    request: dict | None = field(default=None, repr=False)


def miss_request(query: str | None = None, product: dict | None = None,
                 product_a: dict | None = None, product_b: dict | None = None, now: float | None = None) -> dict | None:
    """A priority GenerationRequest (JSON shape) for a cache miss, or None without enough context."""
    now = time.time() if now is None else now
    if query and normalize_query(query) and product:  # a query of spaces or marks only is no context
        key, behavior = search_pair_key(query, product["product_id"]), "search_buy"
        body = {"query": normalize_query(query), "product": product}
    elif product_a and product_b:
        key, behavior = co_pair_key(product_a["product_id"], product_b["product_id"]), "co_purchase"
        body = {"product_a": product_a, "product_b": product_b}
    else:
        return None
    rid = hashlib.blake2b(f"miss\x1f{key}\x1f{int(now // 60)}".encode(), digest_size=8).hexdigest()
    return {"request_id": rid, "pair_key": key, "behavior": behavior, "source": "cache_miss", "priority": 2.0,
            "event_id": f"cache-miss-{uuid.uuid4().hex}", "event_time": now, **body}


class KnowledgeCache:
    def __init__(self, store: FeatureStore, publish: Callable[[str, bytes], None] | None = None,
                 size: int = 10000, ttl_s: float = 60.0) -> None:
        self.reader = FeatureReader(store)
        self.store, self.publish, self.size, self.ttl_s = store, publish, size, ttl_s
        self.tier1: OrderedDict[str, tuple[float, dict]] = OrderedDict()
        self.counts = {"tier1": 0, "online": 0, "miss": 0, "requested": 0}

    def preload(self, head_queries: list[str]) -> int:
        """Load the latest offline row of each head query into tier 1; returns how many were found."""
        view = self.store.get_feature_view("query_intents")
        table = ds.dataset(str(folder(self.store.config, view.batch_source)), format="parquet").to_table()
        ids = {query_id(q): q for q in head_queries}
        table = table.filter(pc.is_in(table["query_id"], value_set=pa.array(list(ids))))
        latest: dict[str, dict] = {}
        for row in table.sort_by("event_timestamp").to_pylist():
            latest[row["query_id"]] = row
        now = time.monotonic()
        for qid, row in latest.items():
            self._put(f"q|{qid}", now, {"query_intents": {f: row.get(f) for f in row if f not in ("query_id", "event_timestamp")}})
        return len(latest)

    def _put(self, key: str, t: float, feats: dict) -> None:
        self.tier1[key] = (t, feats)
        self.tier1.move_to_end(key)
        while len(self.tier1) > self.size:
            self.tier1.popitem(last=False)

    def _lookup(self, key: str, read: Callable[[], dict], request: dict | None) -> Lookup:
        hit = self.tier1.get(key)
        if hit and time.monotonic() - hit[0] < self.ttl_s:
            self.counts["tier1"] += 1
            return Lookup(hit[1], "tier1")
        feats = read()
        if feats:
            self.counts["online"] += 1
            self._put(key, time.monotonic(), feats)
            return Lookup(feats, "online")
        self.counts["miss"] += 1
        if request and self.publish:
            self.publish(request["pair_key"], json.dumps(request).encode())
            self.counts["requested"] += 1
            return Lookup({}, "miss", True, request)
        return Lookup({}, "miss")

    def query(self, text: str, product: dict | None = None) -> Lookup:
        return self._lookup(f"q|{query_id(text)}", lambda: self.reader.query(text), miss_request(text, product))

    def pair(self, product_a: dict, product_b: dict) -> Lookup:
        return self._lookup(f"pp|{product_a['product_id']}|{product_b['product_id']}",
                            lambda: self.reader.pair(product_a["product_id"], product_b["product_id"]),
                            miss_request(product_a=product_a, product_b=product_b))

    def product(self, product_id: str) -> Lookup:
        return self._lookup(f"p|{product_id}", lambda: self.reader.product(product_id), None)
