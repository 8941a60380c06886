"""Which behaviour is worth explaining (COSMO's sampling rules), as pure functions over state.

State lives in plain mutable mappings of JSON-able values (Faust tables in production, dicts in
tests). Each event is applied at most once per state. The pair remembers the source offset of the
last event it counted, and the dedup state each event id with the offset it was counted at: a
message at or before the pair's offset whose id is remembered at that very offset is a redelivery
(a worker crashed or lost its partitions before committing) and is not counted twice; one whose id
is not remembered was never counted (handed over after a newer event of its pair) and is counted,
unless its id may have expired from the dedup state (see `SeenIds.horizon`). A *new* message
carrying an already-seen event id is a producer duplicate and is ignored. The stream worker writes
the dedup state to its changelog (acknowledged) before the pair counts, so a counted pair's ids are
always remembered after a crash.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal, MutableMapping

from processors.config import SamplingConfig
from processors.events import CoPurchaseEvent, Product, SearchBuyEvent, join_key, normalize_query, stable_id
from processors.requests import GenerationRequest

State = MutableMapping[str, dict]


@dataclass
class Emit:
    """Something a stage wants published: to which stream, under which key."""

    to: Literal["request", "product"]
    key: str
    value: dict


@dataclass
class Result:
    outcome: str
    emits: list[Emit] = field(default_factory=list)


# A remembered event id: [partition, offset, event time] (a list: the commonest table row, kept small)
PT, OFF, TS = 0, 1, 2


def _seen_before(seen: State, event_id: str, partition: int, offset: int) -> bool:
    """True for a producer duplicate (same id, another message); False for first sight or redelivery."""
    s = seen.get(event_id)
    return s is not None and (s[PT] != partition or s[OFF] != offset)


def _remember(seen: State, event_id: str, partition: int, offset: int, ts: float) -> None:
    seen[event_id] = [partition, offset, ts]


class SeenIds:
    """Event ids remembered for dedup, stored in a table as one block per partition and micro-batch.

    The sampler reads and writes single ids (`seen.get(id)`, `seen[id] = [partition, offset, ts]`);
    the table holds blocks {"ids": {id: [partition, offset, ts]}} under "partition:first offset:ns",
    so a micro-batch of 1,000 events writes one changelog record instead of 1,000 (and one
    tombstone when it expires instead of 1,000). A block is deleted once its newest id is older
    than the TTL (event time), so ids live at least the TTL; "now" for that is the newest event time
    of the micro-batch but never later than the wall clock (`wall`), so one event dated in the future
    (the producer's clock, or garbage) cannot expire the ids remembered. The id index is read from the table
    when `stale` (at start, and after every assignment: recovery has refilled the table by the
    time events flow again), from the blocks of the `owned` partitions only (None: all): the
    table also holds standby copies of other workers' partitions, which are theirs to expire.

    `table` needs `put(key, value, partition)`, `delete(key, partition)`, `get(key)` and `items()`
    (streams.state.TrackedTable; a dict-backed one in tests).
    """

    def __init__(self, table, clock=time.time_ns, wall=time.time, ttl_s: float | None = None) -> None:
        self.table, self.clock, self.wall, self.ttl_s = table, clock, wall, ttl_s
        self.newest = float("-inf")  # the newest event time remembered (epoch s)
        self.index: dict[str, list] = {}
        self.blocks: dict[str, float] = {}  # block key -> its newest event time
        self.order: deque[tuple[float, str]] = deque()  # blocks in arrival order, for expiry
        self.pending: dict[int, tuple[str, dict[str, list]]] = {}
        self.stale = True
        self.owned: set[int] | None = None

    def get(self, event_id: str, default=None):
        return self.index.get(event_id, default)

    @property
    def horizon(self) -> float:
        """Event time (epoch s) before which a remembered id may have expired: the newest event time
        remembered (in this process, or in an earlier one: a restart re-reads the ids from the
        table) minus the TTL; +inf while the TTL is not known (`ttl_s`, or the last commit's)."""
        return float("inf") if self.ttl_s is None else self.newest - self.ttl_s

    def __contains__(self, event_id: str) -> bool:
        return event_id in self.index

    def __setitem__(self, event_id: str, value: list) -> None:
        self.index[event_id] = value
        if value[TS] > self.newest:
            self.newest = value[TS]
        pt = value[PT]
        block = self.pending.get(pt)
        if block is None:
            block = self.pending[pt] = (f"{pt}:{value[OFF]}:{self.clock()}", {})
        block[1][event_id] = value

    def begin(self) -> None:
        """Before a micro-batch: re-read the table if it was recovered since."""
        if self.stale:
            self.index.clear()
            self.blocks.clear()
            owned = self.owned
            for key, block in self.table.items():
                if owned is not None and int(key.split(":", 1)[0]) not in owned:
                    continue
                ids = block["ids"]
                self.index.update(ids)
                self.blocks[key] = max((v[TS] for v in ids.values()), default=0.0)
            self.order = deque(sorted((ts, key) for key, ts in self.blocks.items()))
            self.newest = max(self.blocks.values(), default=float("-inf"))
            self.stale = False

    def commit(self, now_ts: float, ttl_s: float) -> None:
        """After a micro-batch: its blocks into the table; blocks older than now - ttl_s out.

        `now_ts`: the newest event time of the batch (epoch seconds); the watermark used is
        min(now_ts, wall clock), so an event time ahead of the wall clock expires nothing early."""
        now_ts = min(now_ts, self.wall())
        self.ttl_s = ttl_s
        for pt, (key, ids) in self.pending.items():
            self.table.put(key, {"ids": ids}, pt)
            newest = max(v[TS] for v in ids.values())
            self.blocks[key] = newest
            self.order.append((newest, key))
        self.pending.clear()
        cutoff, q = now_ts - ttl_s, self.order
        while q and q[0][0] < cutoff:
            _, key = q.popleft()
            if self.blocks.pop(key, None) is None:
                continue
            block = self.table.get(key)
            self.table.delete(key, int(key.split(":", 1)[0]))
            for event_id in (block or {}).get("ids", ()):
                v = self.index.get(event_id)
                if v is not None and v[TS] < cutoff:  # not remembered again since
                    del self.index[event_id]


class MemoryTable(dict):
    """A table for SeenIds held in memory only (tests, benchmarks)."""

    def put(self, key: str, value, partition: int) -> None:
        self[key] = value

    def delete(self, key: str, partition: int) -> None:
        self.pop(key, None)


def _redelivered(pair: dict, partition: int, offset: int, seen: State, event_id: str, ts: float) -> bool:
    """Whether this message was counted already (module docstring): at or before the pair's last
    counted offset, and its id remembered at this offset or possibly expired (older than
    `seen.horizon`). An id remembered at another offset is a producer duplicate (`_seen_before`)."""
    if pair.get("pt") != partition or offset > pair.get("off", -1):
        return False
    s = seen.get(event_id)
    if s is not None:
        return s[PT] == partition and s[OFF] == offset
    return ts < getattr(seen, "horizon", float("-inf"))


def _advance(pair: dict, partition: int, offset: int) -> None:
    """The pair's last counted offset: an event counted late (an older offset) does not move it back."""
    if pair.get("pt") == partition and offset < pair.get("off", -1):
        return
    pair.update(pt=partition, off=offset)


def _due(pair: dict, ts: float, ttl_s: float) -> bool:
    return pair.get("rid") is None or ts - pair["rat"] >= ttl_s


def _stamp(pair: dict, pair_key: str, event_id: str, offset: int, ts: float) -> str:
    rid = stable_id(pair_key, event_id)
    pair.update(rid=rid, rat=ts, roff=offset)
    return rid


# --- search-buy ---------------------------------------------------------------------------


def query_specificity(qstate: dict | None, cfg: SamplingConfig) -> float:
    """1 - normalised entropy of the product types bought under a query (0 broad, 1 specific).

    COSMO prefers broad queries ("gifts for dad"): the gap between what is typed and what is bought
    is widest there. Until the query has specificity_min_purchases purchases we do not know: 0.5.
    """
    if not qstate or qstate["n"] < cfg.specificity_min_purchases:
        return 0.5
    n = qstate["n"]
    h = -sum((c / n) * math.log2(c / n) for c in qstate["t"].values() if c)
    return round(1.0 - min(1.0, h / math.log2(cfg.specificity_broad_types)), 4)


def _type_of(p: Product) -> str:
    return (p.product_type or p.category or "?").casefold()


def _count_query_purchase(qstate: dict, ptype: str, cfg: SamplingConfig) -> None:
    types = qstate["t"]
    if ptype not in types and len(types) >= cfg.max_query_types:
        ptype = "*other*"
    types[ptype] = types.get(ptype, 0) + 1
    qstate["n"] += 1


def search_request(ev: SearchBuyEvent, pair: dict, specificity: float) -> GenerationRequest:
    return GenerationRequest(
        request_id=pair["rid"],
        pair_key=ev.pair_key,
        behavior="search_buy",
        query=ev.query,
        product=ev.product,
        priority=round(1.0 - specificity, 4),
        query_specificity=specificity,
        event_id=ev.event_id,
        event_time=ev.ts,
        signals={"events": pair["n"], "clicks": pair["c"], "purchases": pair["p"]},
    )


def search_qualifies(pair: dict, cfg: SamplingConfig) -> str | None:
    """None when the pair passes COSMO's behaviour thresholds, else the reason it does not."""
    n = pair["n"]
    if n < cfg.min_events:
        return "few_events"
    if pair["p"] < cfg.min_purchases:
        return "few_purchases"
    if pair["p"] / n < cfg.min_purchase_rate:
        return "low_purchase_rate"
    if pair["c"] / n < cfg.min_click_rate:
        return "low_click_rate"
    return None


def sample_search_buy(
    ev: SearchBuyEvent, partition: int, offset: int, pairs: State, queries: State, seen: State, cfg: SamplingConfig
) -> Result:
    pk = ev.pair_key
    qk = normalize_query(ev.query)
    pair = pairs.get(pk)
    if pair is not None and _redelivered(pair, partition, offset, seen, ev.event_id, ev.ts):
        if pair.get("roff") == offset:  # its request may not have been delivered: send again
            req = search_request(ev, pair, query_specificity(queries.get(qk), cfg))
            return Result("redelivered", [Emit("request", pk, req.model_dump(mode="json"))])
        return Result("redelivered")
    if _seen_before(seen, ev.event_id, partition, offset):
        return Result("duplicate_event")
    _remember(seen, ev.event_id, partition, offset, ev.ts)

    pair = pair if pair is not None else {"n": 0, "c": 0, "p": 0}
    pair["n"] += 1
    pair["c"] += ev.clicked or ev.purchased  # a purchase from a result implies it was clicked
    pair["p"] += ev.purchased
    _advance(pair, partition, offset)
    if ev.purchased:
        q = queries.get(qk) or {"n": 0, "t": {}}
        _count_query_purchase(q, _type_of(ev.product), cfg)
        queries[qk] = q

    outcome = search_qualifies(pair, cfg)
    emits = []
    if outcome is None:
        spec = query_specificity(queries.get(qk), cfg)
        if spec > cfg.max_query_specificity:
            outcome = "too_specific"
        elif not _due(pair, ev.ts, cfg.pair_ttl_s):
            outcome = "recently_emitted"
        else:
            _stamp(pair, pk, ev.event_id, offset, ev.ts)
            emits.append(Emit("request", pk, search_request(ev, pair, spec).model_dump(mode="json")))
            outcome = "emitted"
    pairs[pk] = pair
    return Result(outcome, emits)


# --- co-purchase --------------------------------------------------------------------------


def _type_pair_key(partition: int, ta: str, tb: str) -> str:
    lo, hi = sorted((ta, tb))
    # Per-partition statistics (a sample of all pairs): the partition in the key keeps each
    # partition's keys distinct in the table, so recovery never merges two partitions' counts.
    # Parts escaped: types may contain "|" ("a|b" + "c" is not "a" + "b|c").
    return join_key(str(partition), lo, hi)


def types_related(ev: CoPurchaseEvent, type_pairs: State, partition: int, cfg: SamplingConfig) -> bool:
    a, b = ev.product_a, ev.product_b
    ta, tb = _type_of(a), _type_of(b)
    if ta == tb or "?" in (ta, tb):
        return True  # same type, or nothing to check against
    if a.category and b.category and a.category.casefold() == b.category.casefold():
        return True
    s = type_pairs.get(_type_pair_key(partition, ta, tb))
    return bool(s) and s["n"] >= cfg.min_type_pair_support


def co_request(ev: CoPurchaseEvent, pair: dict) -> GenerationRequest:
    a, b = sorted((ev.product_a, ev.product_b), key=lambda p: p.product_id)
    return GenerationRequest(
        request_id=pair["rid"],
        pair_key=ev.pair_key,
        behavior="co_purchase",
        product_a=a,
        product_b=b,
        priority=0.5,
        event_id=ev.event_id,
        event_time=ev.ts,
        signals={"co_purchases": pair["n"]},
    )


def product_check(req: GenerationRequest) -> Emit:
    """Route a qualified pair through the product-keyed stage, which checks each product's degree."""
    a, b = req.product_a.product_id, req.product_b.product_id
    return Emit("product", a, {"kind": "check", "remaining": [a, b], "request": req.model_dump(mode="json")})


def sample_co_purchase(
    ev: CoPurchaseEvent, partition: int, offset: int, pairs: State, type_pairs: State, seen: State, cfg: SamplingConfig
) -> Result:
    pk = ev.pair_key
    pair = pairs.get(pk)
    if pair is not None and _redelivered(pair, partition, offset, seen, ev.event_id, ev.ts):
        if pair.get("roff") == offset:
            return Result("redelivered", [product_check(co_request(ev, pair))])
        return Result("redelivered")
    if _seen_before(seen, ev.event_id, partition, offset):
        return Result("duplicate_event")
    _remember(seen, ev.event_id, partition, offset, ev.ts)

    first = pair is None
    pair = pair if pair is not None else {"n": 0}
    pair["n"] += 1
    _advance(pair, partition, offset)
    a, b = ev.product_a, ev.product_b
    emits = [
        Emit("product", a.product_id, {"kind": "observe", "product": a.product_id, "other_type": _type_of(b)}),
        Emit("product", b.product_id, {"kind": "observe", "product": b.product_id, "other_type": _type_of(a)}),
    ]
    ta, tb = _type_of(a), _type_of(b)
    if first and ta != tb:
        tk = _type_pair_key(partition, ta, tb)
        s = type_pairs.get(tk)
        type_pairs[tk] = {"n": (s["n"] if s else 0) + 1}

    if pair["n"] < cfg.min_co_purchases:
        outcome = "few_co_purchases"
    elif not types_related(ev, type_pairs, partition, cfg):
        outcome = "unrelated_types"
    elif not _due(pair, ev.ts, cfg.pair_ttl_s):
        outcome = "recently_emitted"
    else:
        _stamp(pair, pk, ev.event_id, offset, ev.ts)
        emits.append(product_check(co_request(ev, pair)))
        outcome = "emitted"
    pairs[pk] = pair
    return Result(outcome, emits)


def product_degree_step(msg: dict, products: State, cfg: SamplingConfig) -> Result:
    """The product-keyed hop: remember which product types a product is bought with; pass a
    pair on only if neither product is co-purchased with too many distinct types (noise)."""
    if msg["kind"] == "observe":
        pid, t = msg["product"], msg["other_type"]
        st = products.get(pid) or {"types": []}
        if t not in st["types"] and len(st["types"]) <= cfg.max_product_types:
            products[pid] = {"types": [*st["types"], t]}
        return Result("observed")
    here, *rest = msg["remaining"]
    st = products.get(here)
    if st and len(st["types"]) > cfg.max_product_types:
        return Result("noisy_product")
    if rest:
        return Result("checked", [Emit("product", rest[0], {**msg, "remaining": rest})])
    return Result("emitted", [Emit("request", msg["request"]["pair_key"], msg["request"])])
