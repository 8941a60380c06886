"""`intentflow bench e2e`: sustained events/s and freshness, event time -> feature readable online.

The whole pipeline runs as in the demo (local broker, the real stream, generation, filter and
feature workers; Redis online). A producer sends search-buy events at a steady rate for a fixed
time, stamped with the time they are sent. Most traffic is what a shop sees: repeat searches of
pairs already explained and browsing without purchases; new (query, product) pairs that earn
generation (3 events with clicks and purchases) arrive at `new_pairs_per_s`. Freshness of each
feature update = pushed online - event time of the event that made its pair qualify. While it
runs, the stream stages' consumer lag is sampled, to show whether they ever fall behind.
"""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from processors.events import parse_search_buy
from processors.samples import CATALOGUE, QUERIES
from streams import status
from streams.stack import Stack

MODIFIERS = ["", "best", "cheap", "for women", "for men", "gift", "2026", "on sale", "top rated", "for travel",
             "for beginners", "durable", "lightweight", "for home", "for kids", "premium", "compact", "quiet"]


def _pairs(seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = [(f"{q} {m}".strip(), pid) for q, (prods, _) in QUERIES.items() for m in MODIFIERS for pid, _ in prods]
    rng.shuffle(out)
    return out


def _browse_pairs(seed: int) -> list[tuple[str, str]]:
    """Pairs shoppers look at and never buy (a product that is not among the query's results)."""
    rng = random.Random(seed + 1)
    return [(f"{q} {rng.choice(MODIFIERS)}".strip(), pid) for q, (prods, _) in QUERIES.items()
            for pid in rng.sample([p for p in CATALOGUE if p not in dict(prods)], 5)]


class _LagSampler(threading.Thread):
    """Samples the stream stages' consumer lag every `every_s` without slowing the producer."""

    def __init__(self, broker: str, stages, every_s: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.broker, self.stages, self.every_s = broker, stages, every_s
        self.samples: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every_s):
            self.samples.append(sum(status.lags(self.broker, self.stages).values()))


def _event(i: int, query: str, pid: str, purchased: bool, clicked: bool) -> dict:
    title, ptype, cat = CATALOGUE[pid]
    return {"type": "search_buy", "event_id": f"e2e-{i}", "event_time": datetime.now(timezone.utc).isoformat(),
            "session_id": f"s-{i // 5}", "query": query,
            "product": {"product_id": pid, "title": title, "product_type": ptype, "category": cat},
            "clicked": clicked, "added_to_cart": purchased, "purchased": purchased}


def run_e2e_bench(rate: float = 50.0, duration_s: float = 180.0, new_pairs_per_s: float = 0.2, seed: int = 3,
                  drain_timeout_s: float = 300.0, progress: bool = True, data_dir: str | Path | None = None,
                  extra_env: dict[str, str] | None = None) -> dict:
    from streams.bench import machine
    from streams.producer import EventProducer
    from streams.settings import Settings

    data_dir = Path(data_dir or Path(".intentflow") / "bench-e2e").resolve()
    env = {"INTENTFLOW_BATCH__MAX_SIZE": "8", "INTENTFLOW_BATCH__MAX_WAIT_MS": "500", **(extra_env or {})}
    stack = Stack(data_dir=data_dir, env_overrides=env, online="redis")
    rng = random.Random(seed)
    pending = _pairs(seed)
    introduced: list[tuple[str, str]] = []
    try:
        stack.start()
        s = Settings(broker=stack.broker)
        producer = EventProducer(s)
        stream_stages = [(st, g, ins) for st, g, ins in status.stages(s.topics) if g == "intentflow"]
        sent, new_pairs, queue = 0, 0, []
        browse = _browse_pairs(seed)
        sampler = _LagSampler(stack.broker, stream_stages)
        sampler.start()
        t0 = time.monotonic()
        next_new = t0
        bar = tqdm(total=int(rate * duration_s), unit="ev", desc="e2e events", disable=not progress)
        while (now := time.monotonic()) - t0 < duration_s:
            if now >= next_new and pending:  # a new pair earns generation: 3 events, clicked and bought
                pair = pending.pop()
                introduced.append(pair)
                queue += [(pair, True, True)] * 3
                new_pairs += 1
                next_new += 1 / new_pairs_per_s
            if queue:
                (q, pid), bought, clicked = queue.pop(0)
            elif introduced and rng.random() < 0.5:  # repeat traffic of pairs already explained
                q, pid = rng.choice(introduced)
                bought, clicked = rng.random() < 0.3, True
            else:  # browsing: never bought, never qualifies
                q, pid = rng.choice(browse)
                bought, clicked = False, rng.random() < 0.2
            producer.send(parse_search_buy(json.dumps(_event(sent, q, pid, bought, clicked)).encode()))
            sent += 1
            bar.update(1)
            if sent % int(rate * 2) == 0:
                stack.check_alive()
            ahead = sent / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
        producer.flush()
        bar.close()
        produced_s = time.monotonic() - t0
        sampler.done.set()
        sampler.join()
        lag_samples = sampler.samples
        deadline = time.monotonic() + drain_timeout_s
        while True:  # let every stage finish what was sent
            stack.check_alive()
            done, lags = status.caught_up(stack.broker, s.topics)
            if done:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"pipeline did not drain in {drain_timeout_s} s: {lags}")
            time.sleep(1)
        drain_s = time.monotonic() - t0 - produced_s
        rows = status.read_json(stack.broker, s.topics.feature_rows)
        fresh = status.percentiles(status.row_freshness(rows), ps=(50, 95, 99))
        counts = status.topic_counts(stack.broker, [s.topics.requests, s.topics.edges, status.ML.candidates])
        out = {
            "machine": machine(), "rate": rate, "duration_s": duration_s, "events": sent,
            "sustained_events_per_s": round(sent / produced_s, 1), "new_pairs": new_pairs,
            "new_pairs_per_s": new_pairs_per_s, "generation_requests": counts[s.topics.requests],
            "candidates": counts[status.ML.candidates], "edges": counts[s.topics.edges],
            "feature_updates": fresh["n"], "freshness_s": fresh, "drain_after_producing_s": round(drain_s, 1),
            "stream_lag_max": max(lag_samples, default=0),
            "stream_lag_p50": sorted(lag_samples)[len(lag_samples) // 2] if lag_samples else 0,
            "batch": {"max_size": int(env["INTENTFLOW_BATCH__MAX_SIZE"]), "max_wait_ms": int(env["INTENTFLOW_BATCH__MAX_WAIT_MS"])},
        }
        out["targets"] = {"p95_freshness_s<=30": fresh["p95"] is not None and fresh["p95"] <= 30,
                          "stream_never_behind_more_than_2s_of_events": out["stream_lag_max"] <= 2 * rate}
        return out
    finally:
        stack.stop()
