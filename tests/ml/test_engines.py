"""Real engines on CPU with the bundled SmolLM2 (no hub): vLLM in process, transformers, and a
real `vllm serve` behind the OpenAI-compatible engine, including a server restart mid-request."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from generators import prompts
from generators.engines import GenParams, OpenAIEngine, TransformersEngine
from generators.parsing import parse_list
from infra.services import free_port

REQ = {"request_id": "r1", "behavior": "search_buy", "query": "camping essentials",
       "product": {"product_id": "P1", "title": "Coleman Sundome 4-Person Camping Tent", "category": "Outdoors"}}
PROMPTS = [p.text for p in prompts.build(REQ, ("used_for_event", "used_for_audience"))]
PARAMS = GenParams(max_tokens=32, temperature=0.0)


def test_vllm_generates_a_batch_with_logprobs(vllm_engine):
    outs = vllm_engine.generate(PROMPTS, PARAMS)
    assert len(outs) == 2
    for o in outs:
        assert o.text.strip() and o.n_tokens > 0
        assert len(o.token_logprobs) == o.n_tokens and all(lp <= 0 for lp in o.token_logprobs)
    assert sum(len(parse_list(o.text).items) for o in outs) >= 1


def test_vllm_yes_no_scores(vllm_engine):
    q = [prompts.self_eval_prompt({"query": "camping", "title": "tent"}, "search_buy", "used_for_event", t)
         for t in ("a camping trip", "brushing teeth")]
    scores = vllm_engine.yes_no(q)
    assert len(scores) == 2 and all(-1.0 <= s <= 1.0 for s in scores)
    assert any(s != 0.0 for s in scores)  # YES/NO are among the top tokens


def test_transformers_engine_batched_left_padded(smollm2):
    eng = TransformersEngine(smollm2, batch_size=2)
    outs = eng.generate(PROMPTS + [PROMPTS[0][-200:]], PARAMS)  # different lengths: padding matters
    assert len(outs) == 3 and all(o.text.strip() for o in outs)
    assert all(len(o.token_logprobs) == o.n_tokens for o in outs)
    assert len(eng.yes_no(PROMPTS[:1])) == 1


def _serve(model: str, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--served-model-name", "smollm2",
         "--host", "127.0.0.1", "--port", str(port), "--dtype", "bfloat16", "--max-model-len", "2048", "--enforce-eager",
         "--gpu-memory-utilization", "0.3"],  # on CPU: the share of host memory it reserves
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2"})


def _wait_up(port: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "vllm serve exited"
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return
        except OSError:
            time.sleep(1)
    raise TimeoutError("vllm serve not up")


@pytest.mark.slow
def test_openai_engine_against_real_vllm_serve_survives_a_restart(smollm2):
    port = free_port()
    server = _serve(smollm2, port)
    try:
        _wait_up(port, server)
        eng = OpenAIEngine(f"http://127.0.0.1:{port}", "smollm2", retry_for_s=300)
        outs = eng.generate(PROMPTS, PARAMS)
        assert len(outs) == 2 and all(o.text.strip() for o in outs) and outs[0].token_logprobs
        assert len(eng.yes_no(PROMPTS[:1])) == 1
        # the server goes down; a batch sent meanwhile waits for the restarted server
        server.terminate()
        server.wait(60)
        result: dict = {}
        t = threading.Thread(target=lambda: result.update(outs=eng.generate(PROMPTS, PARAMS)))
        t.start()
        time.sleep(2)
        assert t.is_alive()  # retrying, not failed
        server = _serve(smollm2, port)
        t.join(300)
        assert len(result["outs"]) == 2 and all(o.text.strip() for o in result["outs"])
    finally:
        server.terminate()
        server.wait(60)


def test_chat_style_uses_the_models_template(vllm_engine):
    from dataclasses import replace

    outs = vllm_engine.generate(PROMPTS[:1], replace(PARAMS, chat=True))
    assert outs[0].text.strip()
