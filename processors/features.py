"""Knowledge to features: which entities an admitted edge informs, and each entity's feature rows.

An edge (from knowledge.edges) is split into contributions, one per entity it says something about:
a search-buy edge informs the query (its intents) and the product (key-values per relation); a
co-purchase edge informs the pair (reasons) and both products. The stream keeps per-entity state
(retained edges plus every edge id ever applied), so applying the same edge twice changes nothing,
and turns state into rows: top-k tails per relation by score decayed with age, a semantic
subcategory, and lineage. Rows are deterministic functions of the state, apart from push times.
"""

from __future__ import annotations

import hashlib
import math
from typing import Iterable

from pydantic import BaseModel, Field

from processors.events import join_key, normalize_id, normalize_query

QUERY, PRODUCT, PAIR = "query", "product", "pair"
SUBCATEGORY_ISA = ("isA", "is_a")
SUBCATEGORY_FOR = ("used_for_event", "used_for_audience", "used_in_location")  # noun phrases: "<type> for <tail>"


class FeatureConfig(BaseModel):
    enabled: bool = Field(True, description="run the feature writer agents in the stream worker")
    top_k: int = Field(5, ge=1, description="tails kept per relation in product key-values")
    intents_k: int = Field(10, ge=1, description="intents kept per query and reasons per product pair")
    half_life_s: float = Field(30 * 86400, gt=0, description="an edge's score halves for every this many seconds it is older than the entity's newest edge")
    max_edges: int = Field(100, ge=1, description="edges retained per entity (lowest decayed scores are dropped)")
    max_seen: int = Field(1000, ge=1, description="edge ids remembered per entity so a replay changes nothing")
    online: str = Field("redis", pattern="^(redis|sqlite)$", description="Feast online store: redis (production) or sqlite (embedded demo)")
    online_order_check: bool = Field(True, description="Redis: Feast's read-before-write check that a row is newer than the stored one (guards against a stale writer during a rebalance); off: one round trip less per push, ~1.5x rows/s")
    redis: str = Field("", description="Redis connection string host:port[,db=N]; empty: the local Redis on INTENTFLOW_REDIS_PORT")
    repo_dir: str = Field("", description="Feast registry and offline Parquet folder; empty: <data_dir>/feast")
    push_batch: int = Field(2000, ge=1, description="entity updates per online push")
    push_wait_ms: int = Field(200, ge=1, description="flush a partial online push after this long")
    offline_flush_rows: int = Field(20000, ge=1, description="feature rows per offline write")
    offline_flush_s: float = Field(5.0, gt=0, description="flush pending offline rows after this long")
    offline_compact_parts: int = Field(64, ge=0, description="each offline flush adds a Parquet part per view; once a view has this many parts under offline_compact_part_mb they are merged into one (0: never)")
    offline_compact_part_mb: int = Field(256, ge=1, description="offline parts of this size (MiB) or more are not merged again, so a compaction's cost does not grow with the view's history")
    retry_max_s: float = Field(30.0, gt=0, description="longest backoff between retries when a store fails (retries never give up)")
    cache_size: int = Field(10000, ge=1, description="tier-1 cache entries in a reading client")


def query_id(text: str) -> str:
    """The query entity's join key: 16 hex digits of a hash of the key form of the text
    (events.normalize_query: NFKC, invisible characters removed, case-folded), so every way of
    typing one query reads the same row. Stable across processes. Raises ValueError on text that
    is not Unicode (a lone surrogate)."""
    return hashlib.blake2b(normalize_query(text).encode(), digest_size=8).hexdigest()


def pair_id(a: str, b: str) -> str:
    """The product_pair entity's join key: the two normalised product ids sorted, "lo|hi", with `\\`
    and `|` inside an id escaped as `\\\\` and `\\|` (events.join_key), so ("a|b", "c") and
    ("a", "b|c") are two pairs. Order-free. Raises ValueError on an id with a control character."""
    lo, hi = sorted((normalize_id(a), normalize_id(b)))
    return join_key(lo, hi)


def edge_score(edge: dict) -> float | None:
    """The edge's confidence in [0, 1]: its `score` (the critic's plausibility, set by the filter
    worker), else the critic's or self-evaluation's stage score, else None: no scorer judged it,
    and the features say so (a NaN score, read back as null) instead of showing a placeholder."""
    if edge.get("score") is not None:
        return float(edge["score"])
    scores = edge.get("scores") or {}
    if scores.get("critic") is not None:
        return float(scores["critic"])
    if scores.get("self_eval") is not None:
        return (float(scores["self_eval"]) + 1) / 2
    return None


def contributions(edge: dict) -> list[tuple[str, dict]]:
    """(entity key, contribution) for every entity the edge informs. Raises KeyError/TypeError on bad edges."""
    lin = edge.get("lineage") or {}
    c = {"id": edge["edge_id"], "rel": edge["relation"], "tail": edge["tail"],
         "score": None if (sc := edge_score(edge)) is None else round(sc, 4),
         "ts": float(lin.get("event_time") or 0.0), "at": float(lin.get("filtered_at") or lin.get("generated_at") or 0.0),
         "model": lin.get("model") or "", "prompt": lin.get("prompt_version") or "",
         "critic": lin.get("critic_version") or ""}
    out = []
    if edge["behavior"] == "search_buy":
        q, p = edge["query"], edge["product"]
        out.append((f"{QUERY}|{query_id(q)}", {**c, "meta": {"query_text": normalize_query(q)}}))
        out.append((f"{PRODUCT}|{p['product_id']}", {**c, "meta": _product_meta(p)}))
    elif edge["behavior"] == "co_purchase":
        a, b = edge["product_a"], edge["product_b"]
        out.append((f"{PAIR}|{pair_id(a['product_id'], b['product_id'])}",
                     {**c, "meta": {"product_a_id": a["product_id"], "product_b_id": b["product_id"]}}))
        for p in (a, b):
            out.append((f"{PRODUCT}|{p['product_id']}", {**c, "meta": _product_meta(p)}))
    else:
        raise KeyError(f"unknown behavior {edge['behavior']!r}")
    return out


def _product_meta(p: dict) -> dict:
    return {"title": p.get("title") or "", "product_type": p.get("product_type") or ""}


def apply(state: dict | None, contrib: dict, cfg: FeatureConfig) -> tuple[dict, bool]:
    """Add one contribution to an entity's state; (state, changed). Seen edge ids change nothing."""
    state = state or {"seen": [], "edges": {}, "meta": {}, "row_ts": 0.0, "last_event": 0.0}
    if contrib["id"] in state["edges"] or contrib["id"] in state["seen"]:
        return state, False
    state["seen"].append(contrib["id"])
    del state["seen"][:-cfg.max_seen]
    state["edges"][contrib["id"]] = [contrib[k] for k in ("rel", "tail", "score", "ts", "at", "model", "prompt", "critic")]
    state["meta"].update({k: v for k, v in contrib["meta"].items() if v})
    state["last_event"] = contrib["ts"]
    if len(state["edges"]) > cfg.max_edges:
        ranked = _ranked(state, cfg.half_life_s)
        state["edges"] = {e["id"]: state["edges"][e["id"]] for e in ranked[:cfg.max_edges]}
    return state, True


def _ranked(state: dict, half_life_s: float) -> list[dict]:
    edges = [dict(zip(("rel", "tail", "score", "ts", "at", "model", "prompt", "critic"), v), id=k)
             for k, v in state["edges"].items()]
    ref = max((e["ts"] for e in edges), default=0.0)
    for e in edges:
        # unscored edges (no critic ran) rank after every scored one and show NaN (null when read)
        e["weight"] = math.nan if e["score"] is None else round(e["score"] * 0.5 ** (max(0.0, ref - e["ts"]) / half_life_s), 6)
    return sorted(edges, key=lambda e: (e["score"] is None, -(0.0 if e["score"] is None else e["weight"]), e["id"]))


def rows(key: str, state: dict, cfg: FeatureConfig) -> list[tuple[str, dict]]:
    """(feature view, row) for an entity's current state, without push times (see stamp()).

    It also advances `state`: its row clock (`row_ts`) and, for products, the relations written so
    far; so call it once per push, and store the state after the rows (as the feature writer does)."""
    kind, ident = key.split("|", 1)
    # Feast's online store keeps a row only if its timestamp is newer than the stored one: make it
    # strictly increasing per entity, and deterministic (the newest edge's filter time).
    newest = max((v[4] for v in state["edges"].values()), default=0.0)
    state["row_ts"] = max(newest, state.get("row_ts", 0.0) + 1e-6)
    edges = _ranked(state, cfg.half_life_s)
    meta = state["meta"]
    if kind == QUERY:
        top = _dedup_tails(edges)[:cfg.intents_k]
        return [("query_intents", {"query_id": ident, "query_text": meta.get("query_text", ""),
                                   "intents": [e["tail"] for e in top], "intent_relations": [e["rel"] for e in top],
                                   "intent_scores": [e["weight"] for e in top], **_lineage(top, state)})]
    if kind == PAIR:
        top = _dedup_tails(edges)[:cfg.intents_k]
        return [("co_purchase_reasons", {"pair_id": ident, "product_a_id": meta.get("product_a_id", ""),
                                         "product_b_id": meta.get("product_b_id", ""),
                                         "reasons": [e["tail"] for e in top], "reason_relations": [e["rel"] for e in top],
                                         "reason_scores": [e["weight"] for e in top], **_lineage(top, state)})]
    if kind == PRODUCT:
        from generators.relations import RELATIONS

        kv: dict = {"product_id": ident, "title": meta.get("title", ""), "product_type": meta.get("product_type", "")}
        kept: list[dict] = []
        # Sparse: a relation the entity never had knowledge for is left out of the row (null in
        # the stores: "no knowledge"); once it had some, it is always written, so an emptied
        # relation overwrites what was stored. Most products have a few of the 19 relations.
        had = state.setdefault("relations", [])
        for rel in RELATIONS:
            top = _dedup_tails([e for e in edges if e["rel"] == rel])[:cfg.top_k]
            if not top and rel not in had:
                continue
            if rel not in had:
                had.append(rel)
            kv[rel] = [e["tail"] for e in top]
            kv[f"{rel}_scores"] = [e["weight"] for e in top]
            kept += top
        sub = subcategory(edges, meta.get("product_type", ""))
        subrow = {"product_id": ident, "subcategory": sub[0], "subcategory_relation": sub[1],
                  "subcategory_score": sub[2], **_lineage([e for e in edges if e["id"] == sub[3]], state)}
        return [("product_knowledge", {**kv, **_lineage(kept, state)}), ("product_subcategory", subrow)]
    raise KeyError(f"unknown entity kind {kind!r}")


def subcategory(edges: list[dict], product_type: str) -> tuple[str, str, float, str]:
    """COSMO's semantic subcategory: the best isA tail, else '<product type> for <best use>'."""
    for group, label in ((SUBCATEGORY_ISA, "{tail}"), (SUBCATEGORY_FOR, "{ptype} for {tail}")):
        best = next((e for e in edges if e["rel"] in group), None)
        if best and (product_type or "{ptype}" not in label):
            return label.format(tail=best["tail"], ptype=product_type), best["rel"], best["weight"], best["id"]
    return "", "", 0.0, ""


def _dedup_tails(edges: Iterable[dict]) -> list[dict]:
    """The best-ranked edge per gist (stemmed content words): near-duplicates show once."""
    from processors.filters import gist

    seen, out = set(), []
    for e in edges:
        t = gist(e["tail"]) or " ".join(e["tail"].lower().split())
        if t not in seen:
            seen.add(t)
            out.append(e)
    return out


def _lineage(edges: list[dict], state: dict) -> dict:
    return {"edge_ids": [e["id"] for e in edges], "models": sorted({e["model"] for e in edges if e["model"]}),
            "prompt_versions": sorted({e["prompt"] for e in edges if e["prompt"]}),
            "critic_versions": sorted({e["critic"] for e in edges if e["critic"]}),
            "n_edges": len(state["edges"]), "event_time": max((e["ts"] for e in edges), default=0.0),
            "generated_at": max((e["at"] for e in edges), default=0.0),
            "row_ts": state["row_ts"], "last_event_time": state.get("last_event", 0.0)}


# The entity id field of each view's rows (feature_repo/definitions.py names the same entities).
ENTITY_FIELD = {"query_intents": "query_id", "co_purchase_reasons": "pair_id",
                "product_knowledge": "product_id", "product_subcategory": "product_id"}
# The views whose rows feed intentflow_freshness_seconds: one row per entity update (a product has
# two views; its subcategory row stands for it).
FRESHNESS_VIEWS = ("query_intents", "product_subcategory", "co_purchase_reasons")


def row_key(view: str, row: dict) -> str:
    """The Kafka key of a row on features.rows: "<view>|<entity id>". KeyError for an unknown view."""
    return f"{view}|{row[ENTITY_FIELD[view]]}"


def stamp(row: dict, pushed_at: float) -> dict:
    """Push time and freshness (pushed - event time of the edge that caused this update)."""
    return {**row, "pushed_at": pushed_at, "freshness_s": max(0.0, pushed_at - row["last_event_time"])}
