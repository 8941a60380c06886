"""`intentflow bench filter`: candidates/s through the filter stages, batched vs one at a time.

Candidates are built from the shipped search-buy sample and a vocabulary of tails (good ones,
restatements, run-on text), so every stage has work. Both runs use the same pipeline and models.
"""

from __future__ import annotations

import os
import platform
import random
import resource
import time

TAILS = ["pregnant women", "nurses on long shifts", "a camping trip", "keep the wearer warm", "cook without oil",
         "new parents", "people who stand all day", "walking the dog", "a small apartment", "training for a race",
         "because they like them", "used for the same reason", "the kitchen", "gifts for a father", "rainy days"]
RELATIONS = ["used_for_audience", "used_for_event", "capableOf", "used_for_function", "xWant", "used_in_location"]


def candidates(n: int, seed: int = 0) -> list[dict]:
    from processors.samples import search_buy_events

    rng = random.Random(seed)
    evs = list(search_buy_events(400, seed=seed))
    out = []
    for i in range(n):
        ev = rng.choice(evs)
        tail = rng.choice(TAILS + [ev["query"], " ".join(["very"] * 14)])
        out.append({"behavior": "search_buy", "query": ev["query"], "product_title": ev["product"]["title"],
                    "product_type": ev["product"]["product_type"], "category": ev["product"]["category"],
                    "relation": rng.choice(RELATIONS), "tail": tail})
    return out


def run(n: int, batch: int, critic_dir: str | None) -> dict:
    from generators.cli import filter_pipeline
    from generators.config import MLSettings
    from processors.filters import TailStats

    s = MLSettings()
    make, version = filter_pipeline(s, critic_dir or s.filter.critic)
    items = candidates(n)
    make(TailStats({})).run(items[:8])  # warm-up
    pipe = make(TailStats({}))
    t0 = time.perf_counter()
    kept = 0
    stages: dict[str, int] = {}
    for i in range(0, n, batch):
        for v in pipe.run(items[i : i + batch]):
            kept += v.kept
            stages[v.stage or "kept"] = stages.get(v.stage or "kept", 0) + 1
    batched = n / (time.perf_counter() - t0)
    m = min(n, 200)
    pipe = make(TailStats({}))
    t0 = time.perf_counter()
    for it in items[:m]:
        pipe.run([it])
    single = m / (time.perf_counter() - t0)
    return {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "candidates": n, "batch_size": batch, "stages": "1-5" if version else "1-4 (no critic given)",
            "critic_version": version, "batched_candidates_per_s": round(batched, 1),
            "one_at_a_time_candidates_per_s": round(single, 1), "one_at_a_time_sample": m,
            "ratio": round(batched / single, 2), "outcomes": stages, "target_candidates_per_s": 500,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "command": f"intentflow bench filter --candidates {n} --batch {batch} --critic DIR --json"}
