"""Push feature rows into Feast and read them back (with E-CARE style augmentation text).

`Pusher` retries a failing store (Redis down, file system full) with capped exponential backoff
and never drops rows: the stream's offsets do not move past rows that are not stored.
`FeatureReader` reads a query's, product's or product pair's features from the online store.
"""

from __future__ import annotations

import logging
import math
import threading
from datetime import datetime, timezone
from typing import Callable

import pandas as pd
from feast import FeatureStore
from feast.data_source import PushMode
from feast.infra.online_stores.redis import RedisOnlineStoreConfig
from feast.protos.feast.types.Value_pb2 import FloatList, StringList, Value
from feast.types import Array, Float32, Float64, Int64, String

from feature_repo import definitions
from feature_repo.redis_layout import RedisLayoutWriter, entity_key
from generators.relations import RELATIONS
from processors.features import pair_id, query_id

log = logging.getLogger("intentflow.features")


def frame(rows: list[dict], columns: list[str] | None = None) -> pd.DataFrame:
    """Rows (from processors.features.rows + stamp) as the push DataFrame: row_ts -> event_timestamp.

    `columns`: every column of the view; those a sparse row leaves out are null."""
    df = pd.DataFrame([{k: v for k, v in r.items() if k != "row_ts"} for r in rows])
    for c in columns or []:
        if c not in df:
            df[c] = None
    df["event_timestamp"] = [datetime.fromtimestamp(r["row_ts"], tz=timezone.utc) for r in rows]
    return df


_EMPTY = {"string_list_val": Value(string_list_val=StringList()), "float_list_val": Value(float_list_val=FloatList())}
_PROTO = {String: ("string_val", None), Float32: ("float_val", None), Float64: ("double_val", None),
          Int64: ("int64_val", None), Array(String): ("string_list_val", StringList),
          Array(Float32): ("float_list_val", FloatList)}


def _converter(dtype) -> Callable[[object], Value]:
    field, wrap = _PROTO[dtype]
    if wrap is None:
        return lambda v: Value(**{field: v})
    empty = _EMPTY[field]

    def convert(v) -> Value:
        if not v:
            return empty
        out = Value()
        getattr(out, field).val.extend(v)  # half the cost of Value(field=List(val=v)) with upb
        return out

    return convert


class Pusher:
    """Online: rows become protos directly, not row dicts -> DataFrame -> Arrow -> protos as in
    `store.push` (docs/BENCHMARKS.md); to Redis through `RedisLayoutWriter` (Feast's layout, byte for
    byte), to other online stores through the store's own `online_write_batch`. Offline: `store.push`."""

    def __init__(self, store: FeatureStore, retry_max_s: float = 30.0,
                 on_retry: Callable[[str, BaseException], None] | None = None, lean: bool = True) -> None:
        """`lean`: write Redis through RedisLayoutWriter (False: Feast's online_write_batch, the bench's baseline)."""
        self.store, self.retry_max_s, self.on_retry = store, retry_max_s, on_retry
        self.lean = lean and isinstance(store.config.online_store, RedisOnlineStoreConfig)
        self.stopping = threading.Event()
        self._views: dict[str, tuple] = {}
        self._writers: dict[str, RedisLayoutWriter] = {}

    def _view(self, name: str) -> tuple:
        if name not in self._views:
            fv = self.store.get_feature_view(name)
            self._views[name] = (fv, fv.entity_columns[0].name, [(f.name, _converter(f.dtype)) for f in fv.features])
        return self._views[name]

    def _online(self, view: str, rows: list[dict]) -> None:
        fv, key, convs = self._view(view)
        if self.lean:
            if view not in self._writers:
                online = self.store._get_provider().online_store
                self._writers[view] = RedisLayoutWriter(self.store.config, online._get_client(self.store.config.online_store),
                                                        fv, convs)
            self._writers[view].write(rows)
            return
        data = [(entity_key(key, r[key]), {n: c(r[n]) for n, c in convs if n in r},
                 datetime.fromtimestamp(r["row_ts"], tz=timezone.utc), None) for r in rows]
        self.store._get_provider().online_write_batch(self.store.config, fv, data, None)

    def push(self, rows_by_view: dict[str, list[dict]], to: str) -> int:
        """Push each view's rows ('online' or 'offline'); returns rows pushed. Retries until stored."""
        if to not in ("online", "offline"):
            raise ValueError(f"push to 'online' or 'offline', not {to!r}")
        n = 0
        for view, rows in rows_by_view.items():
            if not rows:
                continue
            if to == "online":
                self._retry(f"online push to {view}", lambda: self._online(view, rows))
            else:
                df = frame(rows, [f.name for f in self._view(view)[0].features])
                self._retry(f"offline push to {view}", lambda: self.store.push(f"{view}_push", df, to=PushMode.OFFLINE))
            n += len(rows)
        return n

    def _retry(self, what: str, fn: Callable[[], object]) -> None:
        delay = 0.1
        while True:
            try:
                fn()
                return
            except Exception as e:  # noqa: BLE001 - any store failure: wait and try again, never drop
                if self.stopping.is_set():
                    raise
                log.warning("%s failed (%s: %s); retrying in %.1fs", what, type(e).__name__, e, delay)
                if self.on_retry:
                    self.on_retry(what, e)
                self.stopping.wait(delay)
                delay = min(self.retry_max_s, delay * 2)


_VIEW_FEATURES = {name: [f.name for f in view.features] for name, (_, _, view) in definitions.VIEWS.items()}
_LIST_FEATURES = {name: [f.name for f in view.features if str(f.dtype).startswith("Array")]
                  for name, (_, _, view) in definitions.VIEWS.items()}
SCOPE_PHRASES = {"utility": "can be used for", "who": "used by", "where_when": "used in or when",
                 "why_need": "with intention of"}


class FeatureReader:
    def __init__(self, store: FeatureStore) -> None:
        self.store = store

    def _read(self, views: list[str], rows: list[dict]) -> list[dict]:
        refs = [f"{v}:{f}" for v in views for f in _VIEW_FEATURES[v]]
        got = self.store.get_online_features(features=refs, entity_rows=rows, full_feature_names=True).to_dict()
        out = []
        for i in range(len(rows)):
            rec: dict = {}
            for v in views:
                vals = {f: got[f"{v}__{f}"][i] for f in _VIEW_FEATURES[v]}
                for f in _LIST_FEATURES[v]:  # null list: no knowledge of that kind (sparse rows)
                    if vals[f] is None:
                        vals[f] = []
                if vals.get("n_edges") is not None:  # present in the online store
                    rec[v] = vals
            out.append(rec)
        return out

    def queries(self, texts: list[str]) -> list[dict]:
        return self._read(["query_intents"], [{"query_id": query_id(t)} for t in texts])

    def query(self, text: str) -> dict:
        return self.queries([text])[0]

    def products(self, ids: list[str]) -> list[dict]:
        return self._read(["product_knowledge", "product_subcategory"], [{"product_id": p} for p in ids])

    def product(self, product_id: str) -> dict:
        return self.products([product_id])[0]

    def pair(self, a: str, b: str) -> dict:
        return self._read(["co_purchase_reasons"], [{"pair_id": pair_id(a, b)}])[0]


def plain(v, digits: int = 6):
    """Features as JSON-safe values: numpy arrays and scalars to Python, floats rounded (NaN/inf to
    null), times to ISO."""
    if isinstance(v, dict):
        return {str(k): plain(x, digits) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x, digits) for x in v]
    if isinstance(v, datetime):
        return v.isoformat()
    if hasattr(v, "tolist"):  # numpy
        return plain(v.tolist(), digits)
    if isinstance(v, float):
        return None if math.isnan(v) or math.isinf(v) else round(v, digits)
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    return v


def augmentation(features: dict, per_scope: int = 3) -> str:
    """E-CARE style text for a frozen encoder: 'can be used for [...], used by [...], ...'."""
    by_scope: dict[str, list[str]] = {}

    def add(rel: str, tail: str) -> None:
        scope = RELATIONS[rel].scope if rel in RELATIONS else "utility"
        tails = by_scope.setdefault(scope, [])
        if tail not in tails and len(tails) < per_scope:
            tails.append(tail)

    qi = features.get("query_intents")
    if qi:
        for rel, tail in zip(qi["intent_relations"] or [], qi["intents"] or []):
            add(rel, tail)
    pk = features.get("product_knowledge")
    if pk:
        for rel in RELATIONS:
            for tail in pk.get(rel) or []:
                add(rel, tail)
    cp = features.get("co_purchase_reasons")
    if cp:
        for rel, tail in zip(cp["reason_relations"] or [], cp["reasons"] or []):
            add(rel, tail)
    parts = [f"{SCOPE_PHRASES[s]} [{', '.join(by_scope[s])}]" for s in SCOPE_PHRASES if by_scope.get(s)]
    sub = (features.get("product_subcategory") or {}).get("subcategory")
    if sub:
        parts.insert(0, f"is a kind of [{sub}]")
    return ", ".join(parts)
