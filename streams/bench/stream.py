"""`intentflow bench stream`: events/s through sample + dedup + batch on a real broker.

In one run, on a private Tansu broker: produce N search-buy events over P distinct pairs (skewed
popularity); read them back with a plain confluent-kafka consumer (the baseline: what the broker
and client can deliver with no processing); then let one stream worker process them and time it
from its Prometheus counters until every emitted request has passed dedup + batching; `runs` times,
each with a fresh consumer group and fresh tables, reporting the median (on 2 shared cores one run
moves by +-10%). Separately,
the state the sampler keeps is measured per million distinct pairs (tracemalloc).
"""

from __future__ import annotations

import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
import urllib.request
from collections import defaultdict
from pathlib import Path

from confluent_kafka import Consumer, Producer
from tqdm import tqdm

from infra import procs, services
from processors.config import SamplingConfig
from processors.events import parse_search_buy
from processors.sampling import MemoryTable, SeenIds, sample_search_buy
from streams.producer import producer_config
from streams.bench import machine
from streams.settings import Topics

T0 = 1767225600


def synthetic_events(n: int, pairs: int, seed: int = 1):
    """Search-buy events over `pairs` distinct (query, product) pairs, Zipf-like popularity."""
    rng = random.Random(seed)
    weights = [1 / (i + 1) ** 0.8 for i in range(pairs)]
    picks = rng.choices(range(pairs), weights, k=n)
    for i, p in enumerate(picks):
        q = f"query {p // 5}"
        buy = rng.random() < 0.15
        yield q, json.dumps({
            "event_id": f"b{i}", "event_time": T0 + i / 1000, "query": q,
            "product": {"product_id": f"P{p}", "title": f"Product {p} title", "product_type": f"type {p % 40}"},
            "clicked": buy or rng.random() < 0.3, "purchased": buy}).encode()


def _scrape(port: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = defaultdict(dict)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    for line in text.splitlines():
        if line.startswith("intentflow_events_total{"):
            labels, value = line[len("intentflow_events_total{"):].rsplit("} ", 1)
            d = dict(kv.split("=", 1) for kv in labels.split(","))
            out[d["stage"].strip('"')][d["outcome"].strip('"')] = float(value)
    return out


def _raw_consume(bootstrap: str, topic: str, n: int, group: str = "bench-raw") -> float:
    from infra.kafka_conf import client_config

    c = Consumer(client_config(bootstrap, None, {"group.id": group, "auto.offset.reset": "earliest",
                                                 "enable.auto.commit": False}))
    c.subscribe([topic])
    got, t0 = 0, None
    while got < n:
        msgs = c.consume(10000, 1.0)
        if msgs and t0 is None:
            t0 = time.perf_counter()
        got += sum(1 for m in msgs if not m.error())
    rate = n / (time.perf_counter() - t0)
    c.close()
    return rate


def state_memory(pairs: int, progress: bool) -> dict:
    """Bytes the sampler's state holds per distinct pair (pair counts, query stats, event ids)."""
    cfg = SamplingConfig()
    gc.collect()
    tracemalloc.start()
    tables: list = [{}, {}]
    seen = SeenIds(MemoryTable())  # the index and its blocks, as the worker holds them
    for i in tqdm(range(pairs), disable=not progress, desc="state memory", unit="pair"):
        raw = json.dumps({"event_id": f"m{i}", "event_time": T0 + i / 1000, "query": f"query {i // 5}",
                          "product": {"product_id": f"P{i}", "title": "t", "product_type": f"type {i % 40}"},
                          "clicked": True, "purchased": i % 3 == 0}).encode()
        if i % 1000 == 0:
            seen.commit(T0, cfg.event_id_ttl_s)  # micro-batches of 1,000 events
            seen.begin()
        sample_search_buy(parse_search_buy(raw), 0, i, *tables, seen, cfg)  # one event per distinct pair
    seen.commit(T0, cfg.event_id_ttl_s)
    gc.collect()
    total, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n_pairs = len(tables[0])
    return {"memory_pairs": n_pairs, "state_bytes_per_pair": round(total / n_pairs, 1),
            "state_mb_per_million_pairs": round(total / n_pairs * 1e6 / 2**20, 1),
            "state_note": "pair counts + query type counts + one remembered event id per pair"}


_DOWNSTREAM = ("dlq", "by_product", "requests", "priority_requests", "batches")  # fields of settings.Topics


def _worker_run(bootstrap: str, tmp: str, events: int, app_id: str, progress: bool):
    """One stream worker over the produced events until all are sampled and their requests batched:
    (events/s, its counters, peak RSS MB). The worker is stopped when this returns."""
    mport = services.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTENTFLOW_") or k.startswith("INTENTFLOW_GC_")}
    env.update(INTENTFLOW_BROKER=bootstrap, INTENTFLOW_DATA_DIR=f"{tmp}/{app_id}", INTENTFLOW_METRICS_PORT=str(mport),
               INTENTFLOW_SESSION_TIMEOUT_S="6", INTENTFLOW_LOG_LEVEL="warn", INTENTFLOW_APP_ID=app_id)
    # the run's own downstream topics, so that it batches only the requests it emitted itself
    defaults = Topics()
    own = {f"INTENTFLOW_TOPICS__{t.upper()}": f"{getattr(defaults, t)}.{app_id}" for t in _DOWNSTREAM}
    services.ensure_topics(bootstrap, list(own.values()), 4)
    env.update(own)
    exe = str(Path(sys.executable).parent / "intentflow")
    log_path = Path(tmp) / f"{app_id}.log"
    worker = procs.spawn([exe, "worker"], log_path, env=env)  # app_id is new per run: a fresh log
    try:
        bar = tqdm(total=events, disable=not progress, desc=f"stream worker ({app_id})", unit="ev")
        t_first = t_done = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited: {log_path.read_text()[-3000:]}")
            try:
                m = _scrape(mport)
            except OSError:
                time.sleep(0.2)
                continue
            sampled = sum(m.get("sample_search_buy", {}).values())
            emitted = m.get("sample_search_buy", {}).get("emitted", 0)
            batched = sum(m.get("batch_requests", {}).values())
            now = time.perf_counter()
            if sampled and t_first is None:
                t_first = now
            bar.n = int(sampled)
            bar.refresh()
            if sampled >= events and batched >= emitted:
                t_done = now
                break
            time.sleep(0.25)
        bar.close()
        if t_done is None:
            raise RuntimeError("the stream worker did not finish within 600 s")
        with open(f"/proc/{worker.pid}/status") as f:
            rss = round(int(next(l for l in f if l.startswith("VmHWM")).split()[1]) / 1024, 1)
        # the first counted micro-batch was processed before t_first: count from after it
        first_batch = 1000
        return (events - first_batch) / max(t_done - t_first, 1e-6), m, rss
    finally:
        procs.stop(worker, 20)


def run_stream_bench(events: int, pairs: int, memory_pairs: int, progress: bool = True, runs: int = 3) -> dict:
    out: dict = {"machine": machine(), "events": events, "distinct_pairs_target": pairs}
    with tempfile.TemporaryDirectory(prefix="intentflow-bench-") as tmp:
        port = services.free_port()
        svc = services.broker_up(port, Path(tmp) / "run")
        bootstrap = f"127.0.0.1:{port}"
        source = Topics()  # the worker's inputs, as it reads them by default
        try:
            services.ensure_topics(bootstrap, [source.search_buy, source.co_purchase], 4)
            p = Producer(producer_config(bootstrap, **{"linger.ms": 20}))
            t0 = time.perf_counter()
            for key, raw in tqdm(synthetic_events(events, pairs), total=events, disable=not progress, desc="produce",
                                 unit="ev"):
                while True:
                    try:
                        p.produce(source.search_buy, raw, key.encode())
                        break
                    except BufferError:
                        p.poll(0.05)
                p.poll(0)
            p.flush(60)
            del p
            out["produce_events_per_s"] = round(events / (time.perf_counter() - t0))

            rates, raws = [], []
            for r in range(runs):  # each run: a fresh consumer group and fresh tables, same events
                raws.append(_raw_consume(bootstrap, source.search_buy, events, f"bench-raw-{r}"))
                rate, m, rss = _worker_run(bootstrap, tmp, events, f"bench{r}", progress)
                rates.append(rate)
            out["stream_events_per_s"] = round(statistics.median(rates))
            out["stream_events_per_s_runs"] = [round(x) for x in rates]
            out["raw_consume_events_per_s"] = round(statistics.median(raws))
            out["ratio_stream_to_raw"] = round(out["stream_events_per_s"] / out["raw_consume_events_per_s"], 3)
            out["outcomes"] = {k: int(v) for k, v in m["sample_search_buy"].items()}
            out["requests_batched"] = int(sum(m.get("batch_requests", {}).values()))
            out["worker_peak_rss_mb"] = rss
        finally:
            services.down(svc)
    if memory_pairs:
        out.update(state_memory(memory_pairs, progress))
    out["target_events_per_s"] = 20000
    out["runs"] = runs
    out["command"] = (f"intentflow bench stream --events {events} --pairs {pairs} --memory-pairs {memory_pairs} "
                      f"--runs {runs} --json")
    return out
