"""`intentflow demo`: the whole pipeline on the bundled samples, then a report.

A local broker, the real workers (stream + feature writer, generation on vLLM with the bundled
SmolLM2, filter stages), Feast with the SQLite online store; the sample events are replayed as live
traffic (stamped with the time they are sent), the pipeline is followed until every stage has
caught up, and the report says what happened at each stage, how fresh the features were, and shows
a few of them. Everything started is stopped at the end, on an error and on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from generators.relations import RELATIONS
from streams import status
from streams.stack import ROOT, Stack

SAMPLES = ROOT / "streams" / "samples"
# Small micro-batches: on a 2-core CPU a batch of 8 requests x 3 relations generates in ~10 s.
DEMO_ENV = {"INTENTFLOW_BATCH__MAX_SIZE": "8", "INTENTFLOW_BATCH__MAX_WAIT_MS": "500",
            "INTENTFLOW_FEATURES__OFFLINE_FLUSH_S": "2", "INTENTFLOW_LOG_LEVEL": "info"}


class _Stopped(Exception):
    pass


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class StageBehind(RuntimeError):
    """The pipeline stopped making progress: `behind` names each stage's lag, `why` what was seen."""

    def __init__(self, why: str, behind: dict[str, int]) -> None:
        super().__init__(why)
        self.why, self.behind = why, behind


def follow(stack: Stack, s, stall_s: float, timeout: float, tell) -> float:
    """Wait until every stage has caught up (and stays so for a few seconds); returns the seconds it
    took. Gives up with StageBehind when no stage commits anything for `stall_s` seconds (the wait
    follows the work: a slow CPU that keeps generating keeps the demo going) or after `timeout`."""
    t0 = time.monotonic()
    quiet_since = None
    last_lags: dict[str, int] | None = None
    progress_at = time.monotonic()
    while True:
        stack.check_alive()
        done, lags = status.caught_up(stack.broker, s.topics)
        if lags != last_lags:
            if last_lags is None or any(lags.get(k, 0) < v for k, v in last_lags.items()):
                progress_at = time.monotonic()
            last_lags = lags
        tell("behind: " + ", ".join(f"{k} {v}" for k, v in lags.items() if v) if not done else "caught up")
        if done:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 4:  # stays caught up: nothing more is coming
                return time.monotonic() - t0
        else:
            quiet_since = None
        now = time.monotonic()
        if now - progress_at > stall_s:
            raise StageBehind(f"no stage made progress for {stall_s:.0f} s", {k: v for k, v in lags.items() if v})
        if now - t0 > timeout:
            raise StageBehind(f"the pipeline did not catch up in {timeout:.0f} s", {k: v for k, v in lags.items() if v})
        time.sleep(1.0)


def run_demo(events: int | None = None, rate: float | None = None, timeout: float = 1800.0, keep: bool = False,
             progress: bool = True, data_dir: str | Path | None = None, critic: str | None = None,
             extra_env: dict[str, str] | None = None, stall_s: float = 300.0) -> dict:
    """Run the demo and return its report (`ok`, `text`, the numbers). Never raises for a slow or
    failed stage: the report then has ok=False, `behind` (stage -> lag) and `error`, with what was
    measured up to then; the CLI prints it and exits non-zero."""
    from streams.producer import EventProducer
    from streams.replay import replay
    from streams.settings import Settings

    t_start = time.monotonic()
    data_dir = Path(data_dir or Path(".intentflow") / "demo").resolve()

    def on_term(*_):
        raise _Stopped()

    old = signal.signal(signal.SIGTERM, on_term)
    stack = Stack(data_dir=data_dir, env_overrides={**DEMO_ENV, **(extra_env or {})}, critic_dir=critic)
    s = sent = producer = None
    t_ready = t_sent = None
    try:
        tell = stack.boot(lambda msg: _say(progress, msg))
        t_ready = time.monotonic()
        s = Settings(broker=stack.broker)
        producer = EventProducer(s)
        sent = Counter()
        for name in ("search_buy.jsonl", "co_purchase.jsonl"):
            counts = replay(SAMPLES / name, producer, limit=events, rate=rate, progress=progress, now=True)
            sent.update({k: v for k, v in counts.items() if isinstance(v, int)})
        t_sent = time.monotonic()
        _say(progress, f"replayed {sent['sent']} events ({sent['invalid']} invalid); following the pipeline")
        follow(stack, s, stall_s, timeout, tell)
        report = build_report(stack, s, sent)
        report["seconds"] = {"start_workers": round(t_ready - t_start, 1), "replay": round(t_sent - t_ready, 1),
                             "pipeline": round(time.monotonic() - t_sent, 1), "total": round(time.monotonic() - t_start, 1)}
        report["text"] = render(report)
        if keep:
            _say(progress, f"running: web page http://127.0.0.1:{stack.web_port}/ , broker {stack.broker}; Ctrl-C stops")
            print(report["text"], flush=True)
            while True:
                stack.check_alive()
                time.sleep(1)
        return report
    except (KeyboardInterrupt, _Stopped):
        _say(progress, "stopping")
        return {"ok": False, "text": "stopped", "stopped": True}
    except (StageBehind, RuntimeError, TimeoutError, OSError, subprocess.CalledProcessError) as e:
        return _failed(e, stack, s, sent, t_start)
    finally:
        # the producer goes before the broker, or librdkafka reconnects to it (and logs so) after the report
        producer = None  # noqa: F841
        stack.stop()
        signal.signal(signal.SIGTERM, old)


def _failed(e: BaseException, stack: Stack, s, sent: Counter | None, t_start: float) -> dict:
    """A readable report of what happened before the demo gave up, naming the stage behind."""
    behind = getattr(e, "behind", None) or {}
    why = getattr(e, "why", None) or str(e)
    lines = ["", "intentflow demo: did not finish", "=" * 52, f"reason               {why.splitlines()[0]}"]
    if behind:
        lines.append("behind               " + ", ".join(f"{k}: {v} messages not processed" for k, v in behind.items()))
        slow = next(iter(behind))
        logs = {"generate": "generate.log", "generate (priority)": "generate.log", "filter": "filter.log"}.get(slow, "stream.log")
        lines.append(f"                     the first stage behind is '{slow}'; its log: {stack.data_dir / 'logs' / logs}")
        if slow.startswith("generate"):
            lines.append("                     generation is the slow stage on CPU: `intentflow bench generate` measures "
                         "this machine; fewer events (`--events N`) or a longer `--timeout` let it finish")
    elif len(why.splitlines()) > 1:
        lines.append("details              " + "\n                     ".join(why.splitlines()[1:12]))
    partial: dict = {}
    if s is not None and sent is not None:
        try:
            partial = build_report(stack, s, sent)
            lines += ["", "what was done before it stopped:", *render(partial).splitlines()[3:12]]
        except Exception as inner:  # noqa: BLE001 - the broker may be what failed; say so, do not raise
            lines.append(f"(no partial report: {inner!r})")
    lines.append(f"time                 {time.monotonic() - t_start:.0f} s")
    return {**partial, "ok": False, "error": why, "behind": behind, "text": "\n".join(lines)}


def critic_info(edges: list[dict], setting: str | None) -> dict:
    """The critic that judged the edges: its version (from their lineage), kind and grouped-split
    accuracy per behaviour (from its critic.json), or why there is none."""
    versions = sorted({(e.get("lineage") or {}).get("critic_version") for e in edges} - {None})
    info: dict = {"setting": setting or "default", "versions": versions}
    try:
        from generators.critic import resolve

        path = resolve(setting or "default")
    except Exception as e:  # noqa: BLE001 - a report, not a gate: say what is missing
        info["error"] = repr(e)
        return info
    if path is None:
        info["off"] = True
        return info
    meta = json.loads((Path(path) / "critic.json").read_text())
    held = meta.get("heldout") or {}
    by = {k.split(":", 1)[1]: v for k, v in held.items() if k.startswith("behavior:")}
    gen = held.get("generated") or {}
    info.update({"path": str(path), "version": meta.get("version"), "kind": meta.get("kind"),
                 "accuracy": {k: v.get("accuracy") for k, v in by.items()} or meta.get("heldout_accuracy"),
                 "baseline_word_overlap": {k: v.get("word_overlap") for k, v in by.items()} or meta.get("baseline_word_overlap"),
                 # what it keeps of the generator's own held-out output, labelled by hand
                 "generated": {k: gen.get(k) for k in ("precision", "keeps_plausible", "rejects_implausible",
                                                       "plausible", "implausible")} if gen else None,
                 "split": "grouped by product, gold text and query" if (meta.get("split") or {}).get("holds") else None})
    return info


def score_summary(edges: list[dict]) -> dict:
    """How the admitted edges are scored: how many carry a score, its spread, and few-shot echoes."""
    from generators.prompts import fewshot_answers
    from generators.parsing import normalize
    from processors.filters import context_text, to_item

    scores = [e["score"] for e in edges if e.get("score") is not None]
    answers = fewshot_answers()
    echoes = [e["tail"] for e in edges
              if normalize(e["tail"]) in answers and normalize(context_text(to_item(e))) not in answers[normalize(e["tail"])]]
    mean = sum(scores) / len(scores) if scores else None
    return {"scored": len(scores), "unscored": len(edges) - len(scores),
            "min": round(min(scores), 3) if scores else None, "max": round(max(scores), 3) if scores else None,
            "mean": round(mean, 3) if mean is not None else None,
            "stdev": round((sum((x - mean) ** 2 for x in scores) / len(scores)) ** 0.5, 3) if scores else None,
            "distinct": len({round(x, 3) for x in scores}), "fewshot_echoes": echoes}


def build_report(stack: Stack, s, sent: Counter) -> dict:
    from feature_repo.client import FeatureReader, augmentation
    from feature_repo.store import open_store

    t = s.topics
    b = stack.broker
    ml = status.ML
    counts = status.topic_counts(b, [t.requests, t.priority_requests, t.batches, t.priority_batches, ml.candidates,
                                     t.edges, ml.rejected, t.feature_rows, *status.DLQS])
    batches = status.read_json(b, t.batches) + status.read_json(b, t.priority_batches)
    batched = [r["request_id"] for x in batches for r in x["requests"]]
    rejected_all = status.read_json(b, ml.rejected)
    rejected = Counter(r.get("stage") for r in rejected_all if r.get("kind") != "request")
    rejected_requests = sum(1 for r in rejected_all if r.get("kind") == "request")
    edges = status.read_json(b, t.edges)
    rows = status.read_json(b, t.feature_rows)
    fresh = status.percentiles(status.row_freshness(rows))
    by_view = Counter(r["view"] for r in rows)
    outcomes = {**rejected, "kept": counts[t.edges]}
    scraped = status.scrape(f"http://127.0.0.1:{stack.metrics['filter']}/metrics")
    cache = {dict(k[1]).get("result"): v for k, v in scraped.items() if k[0] == "intentflow_embedding_cache_total"}
    critic = critic_info(edges, stack.critic_dir or stack.env().get("INTENTFLOW_FILTER__CRITIC"))
    stages = [x for x in status.filter_pass_rates(outcomes)  # stages that ran (self-evaluation is off by default)
              if x["rejected"] or x["stage"] != "self_eval" and not (x["stage"] == "critic" and critic.get("off"))]
    redis_port = stack._redis_svc.port if stack._redis_svc else s.redis_port  # noqa: SLF001
    store = open_store(s.features.model_copy(update={"online": stack.online}), str(stack.data_dir), redis_port, apply=False)
    examples = _examples(rows, FeatureReader(store), augmentation)
    report = {
        "ok": counts[t.edges] > 0 and by_view["query_intents"] > 0,
        "events": {"sent": sent["sent"], "search_buy": sent["search_buy"], "co_purchase": sent["co_purchase"],
                   "invalid": sent["invalid"], "dead_letters": counts[t.dlq]},
        "sampled_requests": counts[t.requests] + counts[t.priority_requests],
        "batched_requests": len(set(batched)), "generation_batches": len(batches),
        "deduped_requests": counts[t.requests] + counts[t.priority_requests] - len(set(batched)),
        "rejected_requests": rejected_requests,
        "candidates": counts[ml.candidates], "generation_dead_letters": counts[ml.generation_dlq],
        "filter": stages, "critic": critic, "scores": score_summary(edges),
        "embedding_cache_hit_rate": round(cache.get("hit", 0) / max(1, cache.get("hit", 0) + cache.get("miss", 0)), 3),
        "edges": counts[t.edges],
        "kept_rate": round(counts[t.edges] / counts[ml.candidates], 3) if counts[ml.candidates] else None,
        "feature_rows": dict(by_view), "freshness_s": fresh, "examples": examples,
        "web": f"http://127.0.0.1:{stack.web_port}/",
    }
    return report


def _examples(rows: list[dict], reader, augmentation, n_queries: int = 3, n_products: int = 2) -> dict:
    latest: dict[tuple[str, str], dict] = {}
    for m in rows:
        r = m["row"]
        latest[(m["view"], r.get("query_id") or r.get("product_id") or r.get("pair_id"))] = m
    queries = sorted((m["row"] for (v, _), m in latest.items() if v == "query_intents"),
                     key=lambda r: (-len(r["intents"]), r["query_text"]))[:n_queries]
    products = sorted((m["row"] for (v, _), m in latest.items() if v == "product_knowledge"),
                      key=lambda r: (-r["n_edges"], r["product_id"]))[:n_products]
    out = {"queries": [], "products": []}
    for r in queries:
        f = reader.query(r["query_text"])
        qi = f.get("query_intents") or {}
        out["queries"].append({"query": r["query_text"], "intents": [
            {"tail": tail, "relation": rel, "score": round(float(sc), 3)} for tail, rel, sc in
            zip(qi.get("intents") or [], qi.get("intent_relations") or [], qi.get("intent_scores") or [])],
            "models": list(qi.get("models") or []), "prompt_versions": list(qi.get("prompt_versions") or []),
            "freshness_s": round(float(qi.get("freshness_s") or 0), 2), "augmentation": augmentation(f)})
    for r in products:
        f = reader.product(r["product_id"])
        pk = f.get("product_knowledge") or {}
        kv = {rel: list(v) for rel, v in pk.items() if rel in RELATIONS and v}
        out["products"].append({"product_id": r["product_id"], "title": pk.get("title"), "key_values": kv,
                                "subcategory": (f.get("product_subcategory") or {}).get("subcategory"),
                                "augmentation": augmentation(f)})
    return out


def _fmt(x) -> str:
    return "  -  " if x is None or x != x else f"{x:.2f}"  # NaN: no scorer ran


def _critic_line(c: dict) -> str:
    if c.get("off"):
        return "off (INTENTFLOW_FILTER__CRITIC=off): edges carry no score"
    if c.get("error"):
        return f"missing ({c['error'][:120]}); run `make models`"
    acc, base = c.get("accuracy"), c.get("baseline_word_overlap")
    if isinstance(acc, dict):
        acc = ", ".join(f"{k} {v:.2f}" for k, v in acc.items() if isinstance(v, (int, float)))
    if isinstance(base, dict):
        base = ", ".join(f"{k} {v:.2f}" for k, v in base.items() if isinstance(v, (int, float)))
    g = c.get("generated") or {}
    gen = (f"; on the generator's held-out output (labelled by hand) it keeps {g['keeps_plausible']:.0%} of the "
           f"plausible and {1 - g['rejects_implausible']:.0%} of the implausible: precision {g['precision']:.2f}"
           if g.get("precision") is not None else "")
    return (f"{c.get('version')} ({c.get('kind')}); grouped-split accuracy {acc}"
            + (f" (word overlap {base})" if base else "") + gen)


def _score_line(sc: dict) -> str:
    if not sc.get("scored"):
        return "no scores (no critic ran)"
    unscored = f", {sc['unscored']} unscored" if sc["unscored"] else ""
    return (f"critic scores {sc['min']:.2f}-{sc['max']:.2f}, mean {sc['mean']:.2f}{unscored}; "
            f"few-shot echoes admitted: {len(sc['fewshot_echoes'])}")


def render(r: dict) -> str:
    ev = r["events"]
    L = ["", "intentflow demo: behaviour -> knowledge -> features", "=" * 52,
         f"events in            {ev['sent']} ({ev['search_buy']} search-buy, {ev['co_purchase']} co-purchase); "
         f"{ev['dead_letters']} dead letters",
         f"sampled              {r['sampled_requests']} generation requests (pairs worth explaining)",
         f"deduped + batched    {r['batched_requests']} requests in {r['generation_batches']} micro-batches "
         f"({r['deduped_requests']} duplicates dropped)",
         f"generated            {r['candidates']} candidate explanations ({r['generation_dead_letters']} dead-lettered, "
         f"{r.get('rejected_requests', 0)} requests refused as instruction-like input)",
         "filter stages        " + "; ".join(f"{x['stage']} {x['pass_rate']:.0%} of {x['reached']}"
                                          for x in r["filter"] if x["pass_rate"] is not None),
         f"                     critic: {_critic_line(r['critic'])}",
         f"edges (knowledge)    {r['edges']} kept ({(r['kept_rate'] or 0):.0%} of candidates); {_score_line(r['scores'])}",
         "features pushed      " + ", ".join(f"{v} {n}" for v, n in sorted(r["feature_rows"].items())),
         f"freshness            p50 {r['freshness_s']['p50']} s, p95 {r['freshness_s']['p95']} s, "
         f"max {r['freshness_s']['max']} s (event time -> readable online, {r['freshness_s']['n']} updates)"]
    if "seconds" in r:
        sec = r["seconds"]
        L.append(f"time                 {sec['total']} s (workers up {sec['start_workers']} s, "
                 f"pipeline after replay {sec['pipeline']} s)")
    for q in r["examples"]["queries"]:
        L += ["", f'query "{q["query"]}"  (fresh in {q["freshness_s"]} s; {", ".join(Path(m).name for m in q["models"])}, '
                  f'{", ".join(q["prompt_versions"])})']
        L += [f"  {i['relation']:<20} {i['tail']:<40} {_fmt(i['score'])}" for i in q["intents"][:5]]
        L.append(f"  -> {q['augmentation']}")
    for p in r["examples"]["products"]:
        L += ["", f"product {p['product_id']}  {(p['title'] or '')[:70]}", f"  subcategory: {p['subcategory']}"]
        L += [f"  {rel:<20} {', '.join(v[:3])}" for rel, v in list(p["key_values"].items())[:6]]
        L.append(f"  -> {p['augmentation']}")
    L += ["", f"(workers stopped; `intentflow demo --keep` leaves them running with the web page at {r['web']})"]
    return "\n".join(L)
