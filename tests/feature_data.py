"""Admitted edges as the filter worker publishes them (knowledge.edges), for feature tests."""

from __future__ import annotations

import hashlib

from processors import features
from processors.events import co_pair_key, search_pair_key
from processors.features import FeatureConfig


def _eid(head: str, rel: str, tail: str) -> str:
    return hashlib.blake2b(f"{head}\x1f{rel}\x1f{tail}".encode(), digest_size=8).hexdigest()


def product(pid: str, title: str, ptype: str) -> dict:
    return {"product_id": pid, "title": title, "product_type": ptype, "category": "Shoes"}


def search_edge(query: str, prod: dict, rel: str, tail: str, critic: float, event_time: float,
                filtered_at: float | None = None) -> dict:
    return {"candidate_id": _eid("c" + query, rel, tail), "request_id": "r-" + query, "behavior": "search_buy",
            "pair_key": search_pair_key(query, prod["product_id"]), "head": query, "relation": rel, "tail": tail, "rank": 1,
            "query": query, "product": prod, "product_a": None, "product_b": None,
            "scores": {"fluency": -1.2, "restatement": 0.1, "generic": 0.0, "paraphrase": 0.3, "critic": critic},
            "edge_id": _eid(query, rel, tail),
            "lineage": {"batch_id": "b-" + query, "event_id": "e-" + query, "event_time": event_time,
                        "model": "smollm2", "engine": "vllm",
                        "prompt_version": "p1-2026-11/plain", "generated_at": event_time + 1,
                        "filtered_at": filtered_at or event_time + 2, "critic_version": "critic-test"}}


def co_edge(a: dict, b: dict, rel: str, tail: str, critic: float, event_time: float) -> dict:
    key = co_pair_key(a["product_id"], b["product_id"])
    return {"candidate_id": _eid("c" + key, rel, tail), "request_id": "r-" + key, "behavior": "co_purchase",
            "pair_key": key, "head": key, "relation": rel, "tail": tail, "rank": 1, "query": None, "product": None,
            "product_a": a, "product_b": b, "scores": {"critic": critic}, "edge_id": _eid(key, rel, tail),
            "lineage": {"batch_id": "b-" + key, "event_id": "e-" + key, "event_time": event_time, "model": "smollm2",
                        "engine": "vllm",
                        "prompt_version": "p1-2026-11/plain", "generated_at": event_time + 1,
                        "filtered_at": event_time + 2, "critic_version": "critic-test"}}


def reference(edges: list[dict]) -> dict:
    """What the feature rows must say: the pure processors applied to the same edges in one process."""
    cfg, states = FeatureConfig(), {}
    for e in edges:
        for key, c in features.contributions(e):
            states[key], _ = features.apply(states.get(key), c, cfg)
    return {key: dict(features.rows(key, st, cfg)) for key, st in states.items()}
