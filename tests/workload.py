"""A reproducible behaviour workload and an independent reference of which pairs must be sampled.

The reference is written plainly from the rules' definitions (not from processors/), so the
integration tests check the streaming implementation against the specification.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

T0 = 1767225600  # 2026-01-01
SB = dict(min_events=3, min_purchases=1, min_purchase_rate=0.2, min_click_rate=0.3)
CP_MIN, MAX_TYPES = 2, 5
ENV = {
    "INTENTFLOW_SAMPLING__MIN_EVENTS": "3",
    "INTENTFLOW_SAMPLING__MIN_PURCHASES": "1",
    "INTENTFLOW_SAMPLING__MIN_PURCHASE_RATE": "0.2",
    "INTENTFLOW_SAMPLING__MIN_CLICK_RATE": "0.3",
    "INTENTFLOW_SAMPLING__MIN_CO_PURCHASES": str(CP_MIN),
    "INTENTFLOW_SAMPLING__MIN_TYPE_PAIR_SUPPORT": "1000",
    "INTENTFLOW_SAMPLING__MAX_PRODUCT_TYPES": str(MAX_TYPES),
    "INTENTFLOW_SAMPLING__EVENT_ID_TTL_S": "1000000",  # the reference remembers every id
    "INTENTFLOW_BATCH__MAX_SIZE": "16",
    "INTENTFLOW_BATCH__MAX_WAIT_MS": "200",
}
CATS = ["Shoes", "Kitchen", "Outdoors", "Pets", "Baby", "Home"]


@dataclass
class Msg:
    topic: str  # "sb" or "cp"
    value: bytes
    key: bytes | None
    event: dict | None = None  # None for invalid messages


@dataclass
class Workload:
    noise: list[Msg] = field(default_factory=list)  # co-purchases that make product NOISY noisy
    main: list[Msg] = field(default_factory=list)
    invalid: list[Msg] = field(default_factory=list)


def _sb(i: int, q: str, pid: str, cat: str, clicked: bool, purchased: bool) -> dict:
    return {"event_id": f"sb{i}", "event_time": T0 + i, "query": q,
            "product": {"product_id": pid, "title": f"{cat} product {pid}", "product_type": f"type-{pid[:2]}", "category": cat},
            "clicked": clicked, "purchased": purchased}


def _cp(i: int, a: tuple[str, str, str], b: tuple[str, str, str]) -> dict:
    prod = lambda p: {"product_id": p[0], "title": f"{p[2]} item {p[0]}", "product_type": p[1], "category": p[2]}
    return {"event_id": f"cp{i}", "event_time": T0 + i, "product_a": prod(a), "product_b": prod(b)}


def _msg(topic: str, ev: dict, keyed: bool = True) -> Msg:
    if topic == "sb":
        key = " ".join(ev["query"].lower().split())
    else:
        key = "cp|" + "|".join(sorted((ev["product_a"]["product_id"], ev["product_b"]["product_id"])))
    return Msg(topic, json.dumps(ev).encode(), key.encode() if keyed else None, ev)


def build(n_search: int = 3000, n_co: int = 600, seed: int = 11) -> Workload:
    rng = random.Random(seed)
    w = Workload()
    # search-buy: 40 queries x up to 8 products, Zipf-skewed popularity, per-pair propensities
    pairs = [(f"query {q} words", f"P{q:02d}{k}", CATS[q % len(CATS)], rng.choice([0.0, 0.05, 0.3, 0.6]),
              rng.choice([0.1, 0.5])) for q in range(40) for k in range(rng.randint(2, 8))]
    weights = [1 / (r + 1) ** 1.1 for r in range(len(pairs))]
    events = []
    for i in range(n_search):
        q, pid, cat, p_buy, p_click = rng.choices(pairs, weights)[0]
        buy = rng.random() < p_buy
        events.append(_msg("sb", _sb(i, q, pid, cat, rng.random() < p_click, buy)))
    # producer duplicates: the same event id again, later in the stream
    for m in rng.sample(events, len(events) // 20):
        events.insert(rng.randrange(events.index(m) + 1, len(events) + 1), Msg(m.topic, m.value, m.key, m.event))
    # unkeyed producers: order-independent outcomes (always bought / never bought)
    j = n_search
    for k in range(30):
        events.append(_msg("sb", _sb(j, "unkeyed always", f"UA{k % 5}", "Home", True, True), keyed=False))
        events.append(_msg("sb", _sb(j + 1, "unkeyed never", f"UN{k % 5}", "Home", True, False), keyed=False))
        j += 2
    # co-purchase: same-category (related) and cross-category (unrelated) pairs, some repeated
    # three categories of one type each: no ordinary product reaches MAX_TYPES partner types
    prods = [(f"C{c}{k:02d}", f"ctype{c}", CATS[c]) for c in range(3) for k in range(25)]
    cp = []
    for i in range(n_co):
        a = rng.choice(prods)
        same = rng.random() < 0.7
        b = rng.choice([p for p in prods if (p[2] == a[2]) == same and p != a])
        cp.append(_msg("cp", _cp(i, a, b)))
    # NOISY: co-purchased with 8 distinct types (noise phase), then repeated pairs that would qualify
    noisy = ("NOISY", "gadget", "Misc")
    for t in range(8):
        w.noise.append(_msg("cp", _cp(10_000 + t, noisy, (f"N{t}", f"ntype{t}", "Misc"))))
    for t in range(3):
        for r in range(2):
            cp.append(_msg("cp", _cp(20_000 + 2 * t + r, noisy, (f"N{t}", f"ntype{t}", "Misc"))))
    w.main = events + cp
    rng.shuffle(w.main)  # interleave; per-pair order is what the reference follows
    w.invalid = [
        Msg("sb", b"{not json", b"k"),
        Msg("sb", b"\xff\xfe\x00binary", None),
        Msg("sb", json.dumps({"event_id": "bad1", "event_time": T0, "query": "q"}).encode(), b"q"),
        Msg("sb", json.dumps({**_sb(1, "q", "P", "Home", True, True), "purchased": "often"}).encode(), b"q"),
        Msg("sb", json.dumps({**_sb(2, "", "P", "Home", True, True)}).encode(), b""),
        Msg("cp", json.dumps({"event_id": "bad2", "event_time": T0, "product_a": {"product_id": "A", "title": "a"}}).encode(), b"x"),
        Msg("cp", json.dumps(_cp(3, ("A", "t", "c"), ("A", "t", "c"))).encode(), b"cp|A|A"),
        Msg("cp", b"[]", None),
    ]
    return w


def expected_pairs(w: Workload) -> set[str]:
    sb: dict[str, dict] = {}
    cp: dict[str, int] = {}
    cp_events: dict[str, dict] = {}
    seen: set[str] = set()
    emitted: set[str] = set()
    for m in w.noise + w.main:
        ev = m.event
        if ev["event_id"] in seen:
            continue
        seen.add(ev["event_id"])
        if m.topic == "sb":
            key = f"sb|{' '.join(ev['query'].lower().split())}|{ev['product']['product_id']}"
            s = sb.setdefault(key, {"n": 0, "c": 0, "p": 0})
            s["n"] += 1
            s["c"] += ev["clicked"] or ev["purchased"]
            s["p"] += ev["purchased"]
            if (s["n"] >= SB["min_events"] and s["p"] >= SB["min_purchases"]
                    and s["p"] / s["n"] >= SB["min_purchase_rate"] and s["c"] / s["n"] >= SB["min_click_rate"]):
                emitted.add(key)
        else:
            a, b = ev["product_a"], ev["product_b"]
            key = "cp|" + "|".join(sorted((a["product_id"], b["product_id"])))
            cp[key] = cp.get(key, 0) + 1
            cp_events[key] = ev
    for key, n in cp.items():
        a, b = cp_events[key]["product_a"], cp_events[key]["product_b"]
        related = a["category"] == b["category"] or a["product_type"] == b["product_type"]
        if n >= CP_MIN and related and "NOISY" not in key:
            emitted.add(key)
    return emitted
