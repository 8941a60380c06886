"""`intentflow bench filter`: candidates/s through the filter stages, batched vs one at a time.

The headline runs on recorded generation output: candidates SmolLM2 wrote for the bundled samples
(search-buy and co-purchase; generators/data/real_candidates.jsonl), in the order the worker
wrote them, in micro-batches as the filter worker takes them, with the embedding cache starting
empty, so its hit rate is the one real traffic gives. They carry the per-item log-probs their
generation produced (fluency then costs nothing). Where the recording carries hand labels
(`plausible`), the report adds the precision and recall of what the default pipeline admits.

`--synthetic N` runs the older synthetic candidates instead (search-buy only, a small vocabulary
of tails: a cache-friendly stand-in, kept to compare with earlier numbers); `--lm-fluency` scores
fluency with the LM, as `intentflow filter` does for hand-written candidates.
"""

from __future__ import annotations

import json
import random
import resource
import time

import click

from streams.bench import machine

TAILS = ["pregnant women", "nurses on long shifts", "a camping trip", "keep the wearer warm", "cook without oil",
         "new parents", "people who stand all day", "walking the dog", "a small apartment", "training for a race",
         "because they like them", "used for the same reason", "the kitchen", "gifts for a father", "rainy days"]
MODS = ["", "at home", "in winter", "on weekends", "for beginners", "every day", "after work", "with kids",
        "in the city", "on vacation", "for long hours", "in small spaces", "outdoors", "at night", "for seniors",
        "in the rain", "for comfort", "on a budget", "for safety", "in the office"]
RELATIONS = ["used_for_audience", "used_for_event", "capableOf", "used_for_function", "xWant", "used_in_location"]


def candidates(n: int, seed: int = 0, with_logprob: bool = True) -> list[dict]:
    from processors.samples import search_buy_events

    rng = random.Random(seed)
    evs = list(search_buy_events(400, seed=seed))
    out = []
    for i in range(n):
        ev = rng.choice(evs)
        # mostly distinct tails (as real candidates are), some restatements and run-on text
        tail = rng.choice([f"{rng.choice(TAILS)} {rng.choice(MODS)}".strip()] * 8 + [ev["query"], " ".join(["very"] * 14)])
        out.append({"behavior": "search_buy", "query": ev["query"], "product_title": ev["product"]["title"],
                    "product_type": ev["product"]["product_type"], "category": ev["product"]["category"],
                    "relation": rng.choice(RELATIONS), "tail": tail,
                    **({"mean_logprob": round(rng.uniform(-9.0, -0.5), 3)} if with_logprob else {})})
    return out


RECORDED = __import__("pathlib").Path(__file__).resolve().parents[2] / "generators" / "data" / "real_candidates.jsonl"


def recorded(path=RECORDED) -> list[dict]:
    """The recorded candidates as the filter worker receives them (labels kept aside in `_label`)."""
    import json

    out = []
    for line in open(path, encoding="utf-8"):
        if line.strip():
            c = json.loads(line)
            c["_label"] = c.pop("plausible", None)
            out.append(c)
    return out


def run_recorded(batch: int, critic_dir: str | None, path=RECORDED) -> dict:
    from generators.cli import filter_pipeline
    from generators.config import MLSettings
    from generators.hardware import describe
    from processors.filters import TailStats

    s = MLSettings()
    make, version = filter_pipeline(s, critic_dir or s.filter.critic)
    items = recorded(path)
    labels = [c.pop("_label") for c in items]
    make(TailStats()).run([dict(c) for c in items[:8]])  # warm-up (models loaded, first calls done)
    emb = make.embedder
    emb.cache.clear()
    emb.hits = emb.misses = 0
    pipe = make(TailStats())
    t0 = time.perf_counter()
    verdicts = []
    for i in range(0, len(items), batch):
        verdicts += pipe.run([dict(c) for c in items[i : i + batch]])
    batched = len(items) / (time.perf_counter() - t0)
    hit_rate = emb.hits / max(1, emb.hits + emb.misses)
    emb.cache.clear()
    m = min(len(items), 200)
    pipe = make(TailStats())
    t0 = time.perf_counter()
    for it in items[:m]:
        pipe.run([dict(it)])
    single = m / (time.perf_counter() - t0)
    stages: dict[str, int] = {}
    by_behavior: dict[str, dict[str, int]] = {}
    for c, v, y in zip(items, verdicts, labels):
        stages[v.stage or "kept"] = stages.get(v.stage or "kept", 0) + 1
        b = by_behavior.setdefault(c["behavior"], {"candidates": 0, "kept": 0, "labelled": 0, "kept_plausible": 0,
                                                   "plausible": 0})
        b["candidates"] += 1
        b["kept"] += v.kept
        if y is not None:
            b["labelled"] += 1
            b["plausible"] += bool(y)
            b["kept_plausible"] += bool(y) and v.kept
    quality = {}
    for name, b in by_behavior.items():
        kept_labelled = sum(1 for c, v, y in zip(items, verdicts, labels) if c["behavior"] == name and v.kept and y is not None)
        quality[name] = {"candidates": b["candidates"], "kept_rate": round(b["kept"] / b["candidates"], 3),
                         "precision_of_kept": round(b["kept_plausible"] / kept_labelled, 3) if kept_labelled else None,
                         "recall_of_plausible": round(b["kept_plausible"] / b["plausible"], 3) if b["plausible"] else None}
    return {"machine": describe(s.dtype), "source": str(path.name), "candidates": len(items), "batch_size": batch,
            "critic_version": version, "fluency": "generation log-probs (per item)",
            "batched_candidates_per_s": round(batched, 1), "one_at_a_time_candidates_per_s": round(single, 1),
            "one_at_a_time_sample": m, "ratio": round(batched / single, 2), "outcomes": stages,
            "by_behavior": quality, "encoder_dtype": str(make.embedder.model.dtype).removeprefix("torch."),
            "embedding_cache_hit_rate": round(hit_rate, 3), "target_candidates_per_s": 500,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "command": f"intentflow bench filter --batch {batch} --json"}


def run(n: int, batch: int, critic_dir: str | None, lm_fluency: bool = False) -> dict:
    from generators.cli import filter_pipeline
    from generators.config import MLSettings
    from processors.filters import TailStats

    s = MLSettings()
    make, version = filter_pipeline(s, critic_dir or s.filter.critic)
    items = candidates(n, with_logprob=not lm_fluency)
    make(TailStats()).run(items[:8])  # warm-up
    emb = make.embedder
    emb.cache.clear()
    emb.hits = emb.misses = 0
    pipe = make(TailStats())
    t0 = time.perf_counter()
    kept = 0
    stages: dict[str, int] = {}
    for i in range(0, n, batch):
        for v in pipe.run(items[i : i + batch]):
            kept += v.kept
            stages[v.stage or "kept"] = stages.get(v.stage or "kept", 0) + 1
    batched = n / (time.perf_counter() - t0)
    hit_rate = emb.hits / max(1, emb.hits + emb.misses)
    emb.cache.clear()
    m = min(n, 200)
    pipe = make(TailStats())
    t0 = time.perf_counter()
    for it in items[:m]:
        pipe.run([it])
    single = m / (time.perf_counter() - t0)
    return {"machine": machine(),
            "candidates": n, "batch_size": batch, "stages": "1-5" if version else "1-4 (no critic given)",
            "critic_version": version, "fluency": "LM pass" if lm_fluency else "generation log-probs",
            "batched_candidates_per_s": round(batched, 1),
            "one_at_a_time_candidates_per_s": round(single, 1), "one_at_a_time_sample": m,
            "ratio": round(batched / single, 2), "outcomes": stages,
            "encoder_dtype": str(make.embedder.model.dtype).removeprefix("torch."),
            "embedding_cache_hit_rate": round(hit_rate, 3), "target_candidates_per_s": 500,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "command": f"intentflow bench filter --synthetic {n} --batch {batch}"
                       f"{' --lm-fluency' if lm_fluency else ''} --json"}


@click.command()
@click.option("--synthetic", "n", type=int, default=None, help="N synthetic search-buy candidates instead of the recorded generation output")
@click.option("--batch", default=64, show_default=True)
@click.option("--critic", "critic_dir", default=None, help="critic folder, 'default' or 'off' (default: INTENTFLOW_FILTER__CRITIC)")
@click.option("--lm-fluency", is_flag=True, help="score fluency with the LM (synthetic candidates only)")
@click.option("--json", "as_json", is_flag=True)
def main(n: int | None, batch: int, critic_dir: str | None, lm_fluency: bool, as_json: bool) -> None:
    """Candidates/s through the filter stages on recorded generation output (both behaviours, the
    real embedding-cache hit rate), batched vs one at a time; precision of what is kept where labelled."""
    out = run(n, batch, critic_dir, lm_fluency) if n else run_recorded(batch, critic_dir)
    click.echo(json.dumps(out) if as_json else json.dumps(out, indent=2))


if __name__ == "__main__":
    main(prog_name="intentflow bench filter")
