"""Push feature rows into Feast and read them back (with E-CARE style augmentation text).

`Pusher` retries a failing store (Redis down, SQLite busy, file system full) with capped exponential
backoff until it is stored or the pusher is stopped: the stream's offsets do not move past rows
that are not stored. A row that can never be stored (a TypeError or ValueError from building or
writing it) is isolated from its batch and reported, so the feature writer dead-letters it
instead of stalling its partition.
`FeatureReader` reads a query's, product's or product pair's features from the online store.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

import pandas as pd
from feast import FeatureStore
from feast.data_source import PushMode
from feast.errors import FeatureViewNotFoundException
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


class PushStopped(RuntimeError):
    """The pusher was stopped (the worker is stopping) while a store was failing: rows not stored."""


@dataclass
class Rejected:
    """A row that failed deterministically: `index` is its place in the view's list as given."""
    view: str
    index: int
    row: dict
    reason: str


class RowsRejected(Exception):
    """Some rows failed deterministically and were left out; every other row is stored."""

    def __init__(self, rejected: list[Rejected], stored: int) -> None:
        super().__init__(f"{len(rejected)} row(s) rejected, {stored} stored; first: {rejected[0].view}: {rejected[0].reason}")
        self.rejected, self.stored = rejected, stored


_REDIS_TRANSIENT = ("MISCONF", "LOADING", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "NOREPLICAS", "READONLY", "OOM")


def transient(e: BaseException) -> bool:
    """A failure that can pass on retry: the store or the network, not the row. OSError (connection
    refused or reset, timeouts, a full disk), Redis unreachable, loading, busy, read-only during a
    failover or out of memory, SQLite busy or locked."""
    if isinstance(e, OSError):
        return True
    try:
        import redis.exceptions as rx
    except ImportError:  # pragma: no cover - redis is a dependency of Feast's Redis store
        rx = None
    if rx is not None and isinstance(e, rx.RedisError):
        if isinstance(e, (rx.AuthenticationError, getattr(rx, "AuthorizationError", rx.AuthenticationError))):
            return False  # a wrong password does not pass on retry
        if isinstance(e, (rx.ConnectionError, rx.TimeoutError, rx.BusyLoadingError, rx.ReadOnlyError,
                          rx.TryAgainError, rx.ClusterDownError, rx.OutOfMemoryError)):
            return True
        return isinstance(e, rx.ResponseError) and str(e).upper().startswith(_REDIS_TRANSIENT)
    import sqlite3

    if isinstance(e, sqlite3.OperationalError):
        msg = str(e).lower()
        return "locked" in msg or "busy" in msg or "disk i/o" in msg
    return False


def deterministic(e: BaseException) -> bool:
    """A failure the row itself causes (building or writing it): the same row fails again."""
    if transient(e):
        return False
    if isinstance(e, (TypeError, ValueError, OverflowError, KeyError)):  # pyarrow's Arrow{Type,Invalid} too
        return True
    try:
        import redis.exceptions as rx
    except ImportError:  # pragma: no cover
        return False
    return isinstance(e, rx.DataError)


def _why(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:1000]


class Pusher:
    """Online: rows become protos directly, not row dicts -> DataFrame -> Arrow -> protos as in
    `store.push` (docs/BENCHMARKS.md); to Redis through `RedisLayoutWriter` (Feast's layout, byte for
    byte), to other online stores through the store's own `online_write_batch`. Offline: `store.push`.

    Failures: what can pass on retry (`transient`: the store down or busy) is retried with
    exponential backoff up to `retry_max_s` between tries, until it passes or `stop()` is called
    (then PushStopped). A row that fails deterministically (`deterministic`: TypeError, ValueError...
    from building or writing it) is isolated from its batch by halving (the rest is written without
    it) and reported: `push` raises RowsRejected after storing every other row. Anything else is
    raised as it is."""

    def __init__(self, store: FeatureStore, retry_max_s: float = 30.0,
                 on_retry: Callable[[str, BaseException], None] | None = None, lean: bool = True) -> None:
        """`lean`: write Redis through RedisLayoutWriter (False: Feast's online_write_batch, the bench's baseline)."""
        self.store, self.retry_max_s, self.on_retry = store, retry_max_s, on_retry
        self.lean = lean and isinstance(store.config.online_store, RedisOnlineStoreConfig)
        self.stopping = threading.Event()
        self._views: dict[str, tuple] = {}
        self._writers: dict[str, RedisLayoutWriter] = {}

    def stop(self) -> None:
        """End any retry loop now (from any thread): the push in progress raises PushStopped."""
        self.stopping.set()

    def _view(self, name: str) -> tuple:
        if name not in self._views:
            fv = self.store.get_feature_view(name)
            self._views[name] = (fv, fv.entity_columns[0].name, [(f.name, _converter(f.dtype)) for f in fv.features])
        return self._views[name]

    def _online(self, view: str, rows: list[dict]) -> None:
        fv, key, convs = self._view(view)
        if self.lean:
            if view not in self._writers:
                online = self.store._get_provider().online_store  # noqa: SLF001 - Feast: no public online client
                self._writers[view] = RedisLayoutWriter(self.store.config, online._get_client(self.store.config.online_store),  # noqa: SLF001
                                                        fv, convs)
            self._writers[view].write(rows)
            return
        data = [(entity_key(key, r[key]), {n: c(r[n]) for n, c in convs if n in r},
                 datetime.fromtimestamp(r["row_ts"], tz=timezone.utc), None) for r in rows]
        self.store._get_provider().online_write_batch(self.store.config, fv, data, None)  # noqa: SLF001

    def _offline(self, view: str, rows: list[dict]) -> None:
        df = frame(rows, [f.name for f in self._view(view)[0].features])
        self.store.push(f"{view}_push", df, to=PushMode.OFFLINE)

    def push(self, rows_by_view: dict[str, list[dict]], to: str) -> int:
        """Push each view's rows ('online' or 'offline'); returns rows stored. Retries what can pass
        on retry; raises RowsRejected (after storing the others) when rows fail deterministically,
        PushStopped when stopped while retrying."""
        if to not in ("online", "offline"):
            raise ValueError(f"push to 'online' or 'offline', not {to!r}")
        write = self._online if to == "online" else self._offline
        n, rejected = 0, []
        for view, rows in rows_by_view.items():
            if not rows:
                continue
            try:
                self._view(view)
            except FeatureViewNotFoundException as e:  # an unknown view: every row of it is unusable
                rejected += [Rejected(view, i, r, _why(e)) for i, r in enumerate(rows)]
                continue
            bad = self._isolate(f"{to} push to {view}", lambda chunk: write(view, chunk), rows, 0)
            rejected += [Rejected(view, i, rows[i], why) for i, why in bad]
            n += len(rows) - len(bad)
        if rejected:
            for r in rejected[:10]:
                log.error("%s row %d of %s rejected: %s", to, r.index, r.view, r.reason)
            raise RowsRejected(rejected, n)
        return n

    def _isolate(self, what: str, write: Callable[[list[dict]], object], rows: list[dict],
                 start: int) -> list[tuple[int, str]]:
        """Write rows (retrying transient failures); on a deterministic failure, the halves apart,
        down to the single rows that fail. Returns (index, reason) of those rows."""
        try:
            self._retry(what, lambda: write(rows))
            return []
        except Exception as e:
            if not deterministic(e):
                raise
            if len(rows) == 1:
                return [(start, _why(e))]
            mid = len(rows) // 2
            return (self._isolate(what, write, rows[:mid], start) +
                    self._isolate(what, write, rows[mid:], start + mid))

    def _retry(self, what: str, fn: Callable[[], object]) -> None:
        delay = 0.1
        while True:
            try:
                fn()
                return
            except Exception as e:
                if not transient(e):
                    raise
                if self.stopping.is_set():
                    raise PushStopped(f"{what}: stopped while the store was failing ({_why(e)})") from e
                log.warning("%s failed (%s: %s); retrying in %.1fs", what, type(e).__name__, e, delay)
                if self.on_retry:
                    self.on_retry(what, e)
                if self.stopping.wait(delay):
                    raise PushStopped(f"{what}: stopped while the store was failing ({_why(e)})") from e
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

    def knowledge(self, kind: str, value: str | tuple[str, str], digits: int = 6) -> dict:
        """What a reader of one entity is shown (the CLI's `features`, the operator page): {"kind",
        "value" (a pair as a list), "found", "features" (plain(), JSON-safe), "augmentation" (E-CARE
        text, "" when none)}. `kind`: "query" (a query text), "product" (an id) or "pair" (two ids).
        Raises ValueError for another kind."""
        if kind == "query":
            feats = self.query(str(value))
        elif kind == "product":
            feats = self.product(str(value))
        elif kind == "pair":
            a, b = value
            feats = self.pair(a, b)
        else:
            raise ValueError(f"kind {kind!r}: query, product or pair")
        return {"kind": kind, "value": list(value) if kind == "pair" else value, "found": bool(feats),
                "features": plain(feats, digits), "augmentation": augmentation(feats) if feats else ""}


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
