"""`intentflow bench e2e`: freshness, event time -> feature readable online, and where it breaks.

The whole pipeline runs as in the demo (local broker, the real stream, generation, filter and
feature workers; Redis online). A producer sends search-buy events at a steady rate, stamped with
the time they are sent. Most traffic is what a shop sees: repeat searches of pairs already
explained and browsing without purchases; new (query, product) pairs that earn generation (3
events with clicks and purchases) arrive at `new_pairs_per_s`, or, with `ramp`, at each rate of
the ramp in turn for `level_s` seconds. Freshness of each feature update = pushed online - event
time of the event that made its pair qualify.

Measured while it runs: every stage's committed offsets (its throughput: messages per second while
it had work), the stream stages' lag, and generation requests per second (from the candidates'
generation times). The saturation point is the highest new-pairs rate of the ramp whose updates
were readable within 30 s at p95, with the pipeline keeping up (the pairs introduced at that level
all got features by the end).
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


class _Sampler(threading.Thread):
    """Every `every_s`: the stream stages' lag and every stage's committed offsets (for throughput),
    without slowing the producer."""

    def __init__(self, broker: str, stream_stages, all_stages, every_s: float = 3.0) -> None:
        super().__init__(daemon=True)
        self.broker, self.stream_stages, self.all_stages, self.every_s = broker, stream_stages, all_stages, every_s
        self.samples: list[int] = []
        self.offsets: list[tuple[float, dict[str, int], dict[str, int]]] = []  # (t, committed, lag) per stage
        self.done = threading.Event()

    def sample(self) -> None:
        committed = {st: sum(status.committed(self.broker, g, ins).values()) for st, g, ins in self.all_stages}
        lags = status.lags(self.broker, self.all_stages)
        self.offsets.append((time.monotonic(), committed, lags))
        self.samples.append(sum(lags[st] for st, _, _ in self.stream_stages))

    def run(self) -> None:
        while not self.done.wait(self.every_s):
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a missed sample is not a failed benchmark
                continue


def stage_throughput(offsets: list[tuple[float, dict[str, int], dict[str, int]]]) -> dict[str, dict]:
    """Per stage, from committed offsets over time: messages processed, and messages per second over
    the sample windows in which it had work waiting (its capacity when busy; idle time excluded)."""
    out: dict[str, dict] = {}
    for (t0, c0, l0), (t1, c1, _) in zip(offsets, offsets[1:]):
        for st in c1:
            d = out.setdefault(st, {"processed": 0, "busy_s": 0.0, "peak_per_s": 0.0})
            done = c1[st] - c0.get(st, 0)
            d["processed"] += done
            if l0.get(st, 0) > 0 or done > 0:
                d["busy_s"] += t1 - t0
                d["peak_per_s"] = max(d["peak_per_s"], done / (t1 - t0))
    return {st: {"processed": d["processed"], "per_s_when_busy": round(d["processed"] / d["busy_s"], 2) if d["busy_s"] else None,
                 "peak_per_s": round(d["peak_per_s"], 2)} for st, d in out.items()}


def generation_rate(candidates: list[dict]) -> dict:
    """Generation requests per second, from the candidates' generation times: requests answered
    over the span from the first to the last answer."""
    done = {}
    for c in candidates:
        lin = c.get("lineage") or {}
        t = lin.get("generated_at")
        if t is not None:
            done[c["request_id"]] = min(done.get(c["request_id"], t), t)
    if len(done) < 2:
        return {"requests": len(done), "per_s": None}
    span = max(done.values()) - min(done.values())
    return {"requests": len(done), "span_s": round(span, 1), "per_s": round((len(done) - 1) / span, 3) if span else None}


def _event(i: int, query: str, pid: str, purchased: bool, clicked: bool) -> dict:
    title, ptype, cat = CATALOGUE[pid]
    return {"type": "search_buy", "event_id": f"e2e-{i}", "event_time": datetime.now(timezone.utc).isoformat(),
            "session_id": f"s-{i // 5}", "query": query,
            "product": {"product_id": pid, "title": title, "product_type": ptype, "category": cat},
            "clicked": clicked, "added_to_cart": purchased, "purchased": purchased}


def run_e2e_bench(rate: float = 50.0, duration_s: float = 180.0, new_pairs_per_s: float = 0.2, seed: int = 3,
                  drain_timeout_s: float = 300.0, progress: bool = True, data_dir: str | Path | None = None,
                  extra_env: dict[str, str] | None = None, ramp: tuple[float, ...] = (), level_s: float = 60.0,
                  spike: float = 0.0, spike_s: float = 60.0) -> dict:
    """Run the benchmark; returns the report (see the module docstring). With `ramp`, new pairs
    arrive at ramp[0] per second for `level_s`, then ramp[1], ...; `duration_s` is then the ramp's.
    With `spike` (a factor, e.g. 10), events arrive at spike x `rate` for `spike_s` seconds starting
    a third of the way in (loopback only); the report adds each worker's peak RSS and the time the
    stream stages took to drain the spike (lag back under 2 s of steady traffic)."""
    from streams.bench import machine
    from streams.producer import EventProducer
    from streams.settings import Settings

    data_dir = Path(data_dir or Path(".intentflow") / "bench-e2e").resolve()
    env = {"INTENTFLOW_BATCH__MAX_SIZE": "8", "INTENTFLOW_BATCH__MAX_WAIT_MS": "500", **(extra_env or {})}
    stack = Stack(data_dir=data_dir, env_overrides=env, online="redis")
    rng = random.Random(seed)
    pending = _pairs(seed)
    introduced: list[tuple[str, str]] = []
    levels = list(ramp) or [new_pairs_per_s]
    if ramp:
        duration_s = level_s * len(ramp)
    else:
        level_s = duration_s
    level_of: dict[tuple[str, str], int] = {}
    wall0 = time.time()
    try:
        stack.start()
        s = Settings(broker=stack.broker)
        producer = EventProducer(s)
        all_stages = status.stages(s.topics)
        stream_stages = [(st, g, ins) for st, g, ins in all_stages if g == s.app_id]
        sent, new_pairs, queue = 0, 0, []
        browse = _browse_pairs(seed)
        sampler = _Sampler(stack.broker, stream_stages, all_stages)
        sampler.start()
        t0 = time.monotonic()
        wall0 = time.time()
        next_new = t0
        next_send = t0
        spike_at = (t0 + duration_s / 3, t0 + duration_s / 3 + spike_s) if spike > 1 else (0.0, 0.0)
        spike_sent = 0
        bar = tqdm(total=int(rate * duration_s), unit="ev", desc="e2e events", disable=not progress)
        while (now := time.monotonic()) - t0 < duration_s:
            in_spike = spike_at[0] <= now < spike_at[1]
            level = min(int((now - t0) // level_s), len(levels) - 1)
            if now >= next_new and pending:  # a new pair earns generation: 3 events, clicked and bought
                pair = pending.pop()
                introduced.append(pair)
                level_of[pair] = level
                queue += [(pair, True, True)] * 3
                new_pairs += 1
                next_new += 1 / levels[level]
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
            spike_sent += in_spike
            bar.update(1)
            if sent % int(rate * 2) == 0:
                stack.check_alive()
            next_send += 1 / (rate * spike if in_spike else rate)
            ahead = next_send - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        producer.flush()
        bar.close()
        produced_s = time.monotonic() - t0
        sampler.done.set()
        sampler.join()
        lag_samples = sampler.samples
        deadline = time.monotonic() + drain_timeout_s
        drained, lags = False, {}
        while True:  # let every stage finish what was sent (and keep measuring throughput)
            stack.check_alive()
            drained, lags = status.caught_up(stack.broker, s.topics)
            if drained or time.monotonic() > deadline:
                break
            time.sleep(3)
            sampler.sample()
        sampler.sample()
        drain_s = time.monotonic() - t0 - produced_s
        rows = status.read_json(stack.broker, s.topics.feature_rows)
        fresh = status.percentiles(status.row_freshness(rows), ps=(50, 95, 99))
        counts = status.topic_counts(stack.broker, [s.topics.requests, s.topics.edges, status.ML.candidates])
        cands = status.read_json(stack.broker, status.ML.candidates)
        gen = generation_rate(cands)
        from processors.features import query_id

        per_level = []
        for i, lvl_rate in enumerate(levels):
            lo, hi = wall0 + i * level_s, wall0 + (i + 1) * level_s
            mine = [m["row"]["freshness_s"] for m in rows if m.get("view") == "query_intents"
                    and lo <= m["row"].get("last_event_time", 0) < hi]
            pairs = [p for p, lv in level_of.items() if lv == i]
            answered = {m["row"]["query_id"] for m in rows if m.get("view") == "query_intents"}
            covered = sum(1 for q, _ in pairs if query_id(q) in answered)
            f = status.percentiles(mine, ps=(50, 95))
            per_level.append({"new_pairs_per_s": lvl_rate, "new_pairs": len(pairs), "pairs_with_features": covered,
                              "freshness_s": f, "ok": f["p95"] is not None and f["p95"] <= 30
                              and covered >= 0.9 * len(pairs)})
        sustained = [lv["new_pairs_per_s"] for lv in per_level if lv["ok"]]
        saturation = None
        for lv in per_level:  # the ramp's highest rate before the first level that broke
            if not lv["ok"]:
                break
            saturation = lv["new_pairs_per_s"]
        out = {
            "machine": machine(), "rate": rate, "duration_s": duration_s, "events": sent,
            "producer_events_per_s": round(sent / produced_s, 1), "new_pairs": new_pairs,
            "new_pairs_per_s": levels if ramp else new_pairs_per_s, "generation_requests": counts[s.topics.requests],
            "generation_requests_per_s": gen, "candidates": counts[status.ML.candidates], "edges": counts[s.topics.edges],
            "feature_updates": fresh["n"], "freshness_s": fresh, "drained": drained,
            "behind_at_end": {k: v for k, v in lags.items() if v}, "drain_after_producing_s": round(drain_s, 1),
            "stages": stage_throughput(sampler.offsets),
            "stream_lag_max": max(lag_samples, default=0),
            "stream_lag_p50": sorted(lag_samples)[len(lag_samples) // 2] if lag_samples else 0,
            "batch": {"max_size": int(env["INTENTFLOW_BATCH__MAX_SIZE"]), "max_wait_ms": int(env["INTENTFLOW_BATCH__MAX_WAIT_MS"])},
        }
        if spike > 1:
            after = [(t, sum(lag[st] for st, _, _ in stream_stages)) for t, _, lag in sampler.offsets if t >= spike_at[1]]
            back = next((t for t, lag in after if lag <= 2 * rate), None)
            out["spike"] = {"factor": spike, "seconds": spike_s, "events": spike_sent,
                            "stream_drain_after_spike_s": round(back - spike_at[1], 1) if back is not None else None,
                            "peak_rss_mb": stack.peak_rss_mb()}
        if ramp:
            out.update({"ramp": per_level, "level_s": level_s, "saturation_new_pairs_per_s": saturation,
                        "levels_within_target": sustained})
        out["targets"] = {"p95_freshness_s<=30": fresh["p95"] is not None and fresh["p95"] <= 30,
                          "stream_never_behind_more_than_2s_of_events": out["stream_lag_max"] <= 2 * rate}
        return out
    finally:
        producer = None  # noqa: F841 - its broker connections go before the broker does
        stack.stop()
