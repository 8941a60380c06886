"""Where the pipeline stands: per-stage throughput, consumer lag, dead letters, pass rates, freshness.

Everything is read from the broker (topic end offsets, committed offsets of each stage's consumer
group, the tail of features.rows; every client with the INTENTFLOW_KAFKA__* TLS/SASL options) and, when given, from the workers' Prometheus endpoints (filter
outcomes per stage). `intentflow status` prints it; the demo builds its report from the same parts.
"""

from __future__ import annotations

import time
import urllib.request

from confluent_kafka import Consumer, TopicPartition

from infra.kafka_compat import end_offsets
from infra.kafka_conf import client_config
from infra.topics import existing, read_json
from processors.filters import STAGES as FILTER_STAGES
from streams.settings import get_settings

ML = get_settings().topics  # the one topic registry (infra/settings.Topics): the ML workers' topics too
DLQS = ML.dead_letters()


def stages(t, settings=None) -> list[tuple[str, str, list[str]]]:
    """(stage, consumer group, input topics) in pipeline order; `t` is infra.settings.Topics, the
    groups are `settings.consumer_groups` (default: the environment's): INTENTFLOW_APP_ID for the
    stream workers, INTENTFLOW_GROUPS__* for the ML workers."""
    g = (settings or get_settings()).consumer_groups
    return [
        ("sample", g["stream"], [t.search_buy, t.co_purchase, t.by_product]),
        ("dedup + batch", g["stream"], [t.requests, t.priority_requests]),
        ("generate", g["generate"], [t.batches]),
        ("generate (priority)", g["generate_priority"], [t.priority_batches]),
        ("filter", g["filter"], [t.candidates]),
        ("features", g["stream"], [t.edges, t.entity_updates]),
        ("offline writer", g["stream"], [t.feature_rows]),
    ]


def topic_counts(broker: str, topics: list[str]) -> dict[str, int]:
    have = existing(broker, topics)
    ends = end_offsets(broker, have) if have else {}
    out = {t: 0 for t in topics}
    for (t, _), n in ends.items():
        out[t] += n
    return out


def committed(broker: str, group: str, topics: list[str], timeout: float = 20.0) -> dict[str, int]:
    have = existing(broker, topics)
    if not have:
        return {t: 0 for t in topics}
    parts = [TopicPartition(t, p) for (t, p) in end_offsets(broker, have)]
    # OffsetFetch as the group, without joining it (no subscribe): the workers are not disturbed.
    c = Consumer(client_config(broker, None, {"group.id": group, "enable.auto.commit": False}))
    try:
        got = c.committed(parts, timeout=timeout)
    finally:
        c.close()
    out = {t: 0 for t in topics}
    for tp in got:
        out[tp.topic] += max(tp.offset, 0)
    return out


def lags(broker: str, stage_list: list[tuple[str, str, list[str]]]) -> dict[str, int]:
    """Messages each stage's group has not committed yet on its inputs (`stage_list` from stages())."""
    return {st: sum(topic_counts(broker, ins).values()) - sum(committed(broker, g, ins).values())
            for st, g, ins in stage_list}


def caught_up(broker: str, topics, settings=None) -> tuple[bool, dict[str, int]]:
    """Whether every stage has committed all its inputs, and the lag of each (groups as in stages())."""
    lag = lags(broker, stages(topics, settings))
    return all(v == 0 for v in lag.values()), lag


def percentiles(xs: list[float], ps=(50, 95, 99)) -> dict[str, float | None]:
    xs = sorted(xs)
    out: dict[str, float | None] = {}
    for p in ps:
        out[f"p{p}"] = round(xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))], 2) if xs else None
    out["max"] = round(xs[-1], 2) if xs else None
    out["n"] = len(xs)
    return out


def row_freshness(rows: list[dict]) -> list[float]:
    """Freshness of each feature update (one value per pushed entity row, product subcategory rows skipped
    as they repeat their product_knowledge row)."""
    return [m["row"]["freshness_s"] for m in rows if m.get("view") != "product_subcategory"]


def scrape(url: str, timeout: float = 2.0) -> dict[tuple[str, tuple], float]:
    """A Prometheus text endpoint as {(sample name, sorted labels): value}; {} when unreachable."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = urllib.request.urlopen(url, timeout=timeout).read().decode()
    except OSError:
        return {}
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def filter_pass_rates(outcomes: dict[str, float]) -> list[dict]:
    """Per stage, in order: candidates that reached it, rejected there, pass rate (a stage that is
    switched off, e.g. self-evaluation by default, passes everything)."""
    reached = sum(outcomes.values()) - outcomes.get("dead_letter", 0)
    out = []
    for stage in FILTER_STAGES:
        rejected = outcomes.get(stage, 0)
        out.append({"stage": stage, "reached": int(reached), "rejected": int(rejected),
                    "pass_rate": round(1 - rejected / reached, 3) if reached else None})
        reached -= rejected
    return out


def snapshot(broker: str, topics, window_s: float = 2.0, metrics_urls: dict[str, str] | None = None,
             settings=None) -> dict:
    """The status report: counts, lag and throughput per stage over `window_s`, DLQs, pass rates,
    freshness. `settings` names the consumer groups (stages()); `topics` the topics."""
    plan = stages(topics, settings)
    dlqs = topics.dead_letters()
    all_topics = sorted({x for _, _, ts in plan for x in ts} | set(dlqs) |
                        {topics.edges, topics.rejected, topics.feature_rows})
    c0 = {(st, g): committed(broker, g, ts) for st, g, ts in plan}
    t0 = time.monotonic()
    time.sleep(window_s)
    counts = topic_counts(broker, all_topics)
    dt = time.monotonic() - t0
    out: dict = {"broker": broker, "window_s": round(dt, 2), "stages": []}
    for st, g, ts in plan:
        c1 = committed(broker, g, ts)
        done = sum(c1.values())
        out["stages"].append({"stage": st, "group": g, "inputs": ts, "in": sum(counts[x] for x in ts),
                              "processed": done, "lag": sum(counts[x] for x in ts) - done,
                              "per_s": round((done - sum(c0[(st, g)].values())) / dt, 1)})
    out["dlq"] = {d: counts[d] for d in dlqs}
    out["topics"] = counts
    cands = counts[topics.candidates]
    out["kept_rate"] = round(counts[topics.edges] / cands, 3) if cands else None
    outcomes: dict[str, float] = {}
    for url in (metrics_urls or {}).values():
        for (name, labels), v in scrape(url).items():
            if name == "intentflow_filter_total":
                outcomes[dict(labels)["outcome"]] = outcomes.get(dict(labels)["outcome"], 0) + v
    if not outcomes:  # no filter metrics endpoint: count the audit topic (exact, costs a read)
        for r in read_json(broker, topics.rejected):
            outcomes[r.get("stage") or "unknown"] = outcomes.get(r.get("stage") or "unknown", 0) + 1
        outcomes["kept"] = counts[topics.edges]
    out["filter"] = filter_pass_rates(outcomes)
    out["freshness_s"] = percentiles(row_freshness(read_json(broker, topics.feature_rows, tail=500)))
    return out


def render(s: dict) -> str:
    lines = [f"broker {s['broker']} (rates over {s['window_s']} s)", "",
             f"{'stage':<16}{'group':<22}{'in':>9}{'done':>9}{'lag':>8}{'per s':>9}"]
    for x in s["stages"]:
        lines.append(f"{x['stage']:<16}{x['group']:<22}{x['in']:>9}{x['processed']:>9}{x['lag']:>8}{x['per_s']:>9}")
    lines += ["", "dead letters: " + ", ".join(f"{k} {v}" for k, v in s["dlq"].items())]
    if s["filter"]:
        lines.append("filter pass rates: " + ", ".join(f"{f['stage']} {f['pass_rate']:.0%}" for f in s["filter"]
                                                     if f["pass_rate"] is not None))
    if s["kept_rate"] is not None:
        cands = sum(x["in"] for x in s["stages"] if x["stage"] == "filter")
        lines.append(f"kept: {s['kept_rate']:.0%} of {cands} candidates")
    f = s["freshness_s"]
    if f["n"]:
        lines.append(f"freshness (last {f['n']} feature updates): p50 {f['p50']} s, p95 {f['p95']} s, max {f['max']} s")
    return "\n".join(lines)
