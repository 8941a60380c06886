"""The generation worker: generation.batches (+ .priority) -> engine -> parse -> knowledge.candidates.

A confluent-kafka consumer in its own consumer group, so GPU workers scale apart from the stream
workers. The engine is fed continuously: each request's prompts are submitted as soon as its
micro-batch arrives, while earlier ones decode (vLLM's continuous batching; `engines.streaming`),
up to `generation.max_inflight_requests`. Priority batches (serving cache misses) come from their
own topic and consumer group, are read first, and are scheduled ahead of waiting requests.

Delivery: a micro-batch's candidates are acknowledged by the broker before its offset is
committed, and offsets are committed in order per partition (a batch that finishes early waits for
the ones before it), so a crash re-generates, never skips. Requests are handled one by one inside
a batch: a request whose input reads like an instruction to the model is rejected (to
knowledge.rejected, stage "input"); one whose prompt does not fit the model's context, or that
fails in the engine `retries + 1` times, goes to generation.dlq alone, with the reason, and the
rest of its batch goes on. Requests seen recently are skipped (at-least-once upstream may repeat
one); candidate ids are deterministic, so a repeat that slips through changes nothing downstream.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field

from confluent_kafka import Consumer, TopicPartition
from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram

from generators import kafka_io, parsing, prompts
from generators.config import MLSettings
from generators.engines import Completion, Engine, GenParams, streaming
from infra.settings import priority_group
from processors.contracts import Rejection
from processors.dlq import envelope
from processors.filters import gist
from processors.safety import request_reasons

log = logging.getLogger("intentflow.generate")

EVENTS = PromCounter("intentflow_generation_total", "generation worker counts by kind", ["kind"])
ENGINE_SECONDS = Histogram("intentflow_engine_batch_seconds", "time from a micro-batch's arrival to its last completion",
                           buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300))


def candidate_id(request_id: str, relation: str, tail: str) -> str:
    return hashlib.blake2b(f"{request_id}\x1f{relation}\x1f{parsing.normalize(tail)}".encode(), digest_size=8).hexdigest()


def gen_params(settings: MLSettings) -> GenParams:
    g = settings.generation
    # stop where the model starts another example or item the parser would drop: no tokens for them
    stop = ("\n\n", "Search:", "\nBought", "\nThe product", "\nBoth products", f"\n{g.max_items + 1}.")
    return GenParams(max_tokens=g.max_tokens, temperature=g.temperature, top_p=g.top_p, seed=g.seed, stop=stop,
                     chat=g.prompt_style == "chat")


def candidates_for(request: dict, plist: list[prompts.Prompt], outs: list[Completion], batch_id: str,
                   engine: Engine, settings: MLSettings, seconds: float) -> tuple[list[dict], Counter, int]:
    """Parse one request's completions into candidates with lineage: (candidates, dropped, tokens).

    Each candidate's `mean_logprob` is its own item's tokens' mean log-prob (the span the parser
    took it from), so fluency judges the item, not the list it was in; `logprob_scope` says
    "item", or "completion" where the engine gave no token offsets."""
    g = settings.generation
    now = time.time()
    cands, dropped, tokens = [], Counter(), 0
    for p, out in zip(plist, outs):
        tokens += out.n_tokens
        parsed = parsing.parse_list(out.text, g.max_items, g.max_words)
        dropped.update(parsed.dropped)
        if not parsed.items:
            dropped["no_items"] += 1
        seen: set[frozenset[str]] = set()
        for (rank, tail), (a, b) in zip(parsed.items, parsed.spans):
            key = gist(tail)
            if key and key in seen:  # the same words again in another order or with other articles
                dropped["near_duplicate"] += 1
                continue
            seen.add(key)
            lp = out.span_logprob(a, b)
            cands.append({
                "candidate_id": candidate_id(request["request_id"], p.relation, tail),
                "request_id": request["request_id"], "pair_key": request["pair_key"], "behavior": request["behavior"],
                "head": request.get("query") if request["behavior"] == "search_buy" else request["pair_key"],
                "relation": p.relation, "tail": tail, "rank": rank, "raw": out.text,
                "query": request.get("query"), "product": request.get("product"),
                "product_a": request.get("product_a"), "product_b": request.get("product_b"),
                "lineage": {
                    "batch_id": batch_id, "event_id": request["event_id"], "event_time": request["event_time"],
                    "model": engine.model, "engine": engine.name, "prompt_version": f"{p.version}/{g.prompt_style}",
                    "generated_at": now, "generation_seconds": round(seconds, 3),
                    "mean_logprob": lp if lp is not None else out.mean_logprob,
                    "logprob_scope": "item" if lp is not None else "completion",
                    "finish_reason": out.finish_reason,
                },
            })
    return cands, dropped, tokens


@dataclass
class BatchResult:
    candidates: list[dict]
    dropped: Counter
    seconds: float
    output_tokens: int


def generate_batch(batch: dict, engine: Engine, settings: MLSettings) -> BatchResult:
    """One blocking engine call for a whole micro-batch (tests and the benchmark's baseline); the
    worker itself streams requests through `GenerationWorker`."""
    reqs = batch["requests"]
    plists = [prompts.build(r, settings.generation.relations) for r in reqs]
    flat = [p for pl in plists for p in pl]
    t0 = time.perf_counter()
    outs = engine.generate([p.text for p in flat], gen_params(settings)) if flat else []
    secs = time.perf_counter() - t0
    res = BatchResult([], Counter(), secs, 0)
    k = 0
    for r, pl in zip(reqs, plists):
        cands, dropped, toks = candidates_for(r, pl, outs[k : k + len(pl)], batch["batch_id"], engine, settings, secs)
        k += len(pl)
        res.candidates += cands
        res.dropped.update(dropped)
        res.output_tokens += toks
    return res


@dataclass
class Job:
    """One micro-batch message in flight."""
    source: str  # "priority" | "normal": which consumer it came from
    msg: object
    batch_id: str
    arrived: float
    requests: dict[str, dict] = field(default_factory=dict)  # group key -> request
    prompts: dict[str, list] = field(default_factory=dict)
    attempts: Counter = field(default_factory=Counter)
    records: list[tuple[str, str, bytes]] = field(default_factory=list)  # output, delivered when all are done
    counts: Counter = field(default_factory=Counter)
    waiting: set[str] = field(default_factory=set)
    done: bool = False


class GenerationWorker(kafka_io.Worker):
    def __init__(self, engine: Engine, settings: MLSettings | None = None, group: str | None = None) -> None:
        super().__init__()
        self.s = settings or MLSettings()
        t = self.s.topics
        kafka_io.require_topics(self.s, [t.batches, t.priority_batches, t.candidates, t.rejected, t.generation_dlq])
        self.engine = engine
        self.stream = streaming(engine)
        self.params = gen_params(self.s)
        group = group or self.s.groups.generate
        conf = kafka_io.consumer_config(self.s, group, max_poll_interval_ms=900000)  # a CPU engine may take minutes
        self.consumers = {"priority": Consumer({**conf, "group.id": priority_group(group)}), "normal": Consumer(conf)}
        self.producer = kafka_io.producer(self.s)
        self.recent: OrderedDict[str, None] = OrderedDict()  # request ids done lately, or in flight
        self.jobs: dict[str, Job] = {}  # group key -> its job
        self.order: dict[tuple[str, str, int], deque[Job]] = {}  # (source, topic, partition) -> jobs by offset
        self.stats: Counter = Counter()
        self._seq = 0
        self._count_tokens = getattr(engine, "prompt_tokens", None)  # caps untrusted fields in tokens
        self.first_admit_at = self.last_commit_at = 0.0  # monotonic; for benchmarks

    # --- intake ---------------------------------------------------------------------------

    def _inflight(self) -> int:
        return len(self.jobs)

    def _poll(self, block: float) -> tuple[str, object] | None:
        for source, timeout in (("priority", 0.0), ("normal", block)):
            msg = self.consumers[source].poll(timeout)
            if self.usable(msg):
                return source, msg
        return None

    def _dead_letter(self, job: Job, error: str, kind: str, value: bytes | None = None, **extra) -> None:
        m = job.msg
        job.records.append((self.s.topics.generation_dlq, job.batch_id or str(m.key() or b"", "utf-8", "replace"),
                            envelope(source_topic=m.topic(), partition=m.partition(), offset=m.offset(), key=m.key(),
                                     value=m.value() if value is None else value, error=error, kind=kind,
                                     stage="generate", **extra)))
        job.counts["dead_letter"] += 1

    def _admit(self, source: str, msg) -> None:
        job = Job(source, msg, "", time.monotonic())
        self.first_admit_at = self.first_admit_at or job.arrived
        self.order.setdefault((source, msg.topic(), msg.partition()), deque()).append(job)
        try:
            batch = json.loads(msg.value())
            job.batch_id = str(batch["batch_id"])
            reqs = list(batch["requests"])
        except (ValueError, KeyError, TypeError) as e:
            self._dead_letter(job, f"undecodable batch: {e!r}", "invalid_batch")
            job.counts["dead_letter_batches"] += 1
            job.done = True
            return
        job.counts["batches"] += 1
        for i, r in enumerate(reqs):
            raw = json.dumps(r).encode() if isinstance(r, dict) else b""
            try:
                rid = str(r["request_id"])
            except (KeyError, TypeError) as e:
                self._dead_letter(job, f"bad request in batch: {e!r}", "invalid_request", raw, batch_id=job.batch_id)
                continue
            if rid in self.recent:
                job.counts["duplicate_request"] += 1
                continue
            why = request_reasons(r)
            if why:  # steered input: no knowledge from it, however fluent
                job.records.append((self.s.topics.rejected, str(r.get("pair_key") or rid), Rejection(
                    kind="request", request_id=rid, pair_key=_text(r.get("pair_key")), behavior=r.get("behavior"),
                    stage="input", reason="; ".join(why), request=r, batch_id=job.batch_id).model_dump_json().encode()))
                job.counts["rejected_input"] += 1
                self._remember(rid)
                continue
            try:
                plist = prompts.build(r, self.s.generation.relations, self._count_tokens)
            except (KeyError, TypeError, ValueError) as e:
                self._dead_letter(job, f"bad request in batch: {e!r}", "invalid_request", raw, batch_id=job.batch_id,
                                  request_id=rid)
                continue
            self._seq += 1
            key = f"{job.batch_id}/{i}/{self._seq}"
            job.requests[key], job.prompts[key] = r, plist
            if self._submit(job, key):
                self._remember(rid)
        job.done = not job.waiting

    def _submit(self, job: Job, key: str) -> bool:
        r = job.requests[key]
        try:
            self.stream.submit(key, [p.text for p in job.prompts[key]], self.params,
                               priority=-1 if job.source == "priority" else 0)
        except ValueError as e:  # does not fit the model's context: this request only
            self._dead_letter(job, f"request {r['request_id']}: {e}", "too_long", json.dumps(r).encode(),
                              batch_id=job.batch_id, request_id=r["request_id"])
            return False
        job.waiting.add(key)
        self.jobs[key] = job
        return True

    def _remember(self, rid: str) -> None:
        self.recent[rid] = None
        self.recent.move_to_end(rid)
        while len(self.recent) > 100_000:
            self.recent.popitem(last=False)

    # --- completion -----------------------------------------------------------------------

    def _complete(self, key: str, result) -> None:
        job = self.jobs.pop(key)
        job.waiting.discard(key)
        r = job.requests[key]
        if isinstance(result, BaseException):
            job.attempts[key] += 1
            log.warning("request %s failed in the engine (attempt %d): %r", r["request_id"], job.attempts[key], result)
            if job.attempts[key] <= self.s.generation.retries and self._submit(job, key):
                return
            if job.attempts[key] > self.s.generation.retries:
                self._dead_letter(job, f"engine failed: {result!r}", "engine_failed", json.dumps(r).encode(),
                                  batch_id=job.batch_id, request_id=r["request_id"])
        else:
            secs = time.monotonic() - job.arrived
            cands, dropped, toks = candidates_for(r, job.prompts[key], result, job.batch_id, self.engine, self.s, secs)
            job.records += [(self.s.topics.candidates, c["pair_key"], json.dumps(c).encode()) for c in cands]
            job.counts.update({"requests": 1, "candidates": len(cands), "output_tokens": toks,
                               **{f"dropped_{k}": v for k, v in dropped.items()}})
        job.done = not job.waiting

    def _finish_ready(self) -> int:
        """Deliver and commit, per partition in offset order, the jobs that are done."""
        finished = 0
        for (source, topic, part), q in self.order.items():
            last = None
            while q and q[0].done:
                job = q.popleft()
                kafka_io.deliver(self.producer, job.records)  # acknowledged before the offset moves
                self._count(job)
                last = job.msg
                finished += 1
            if last is not None:
                self.consumers[source].commit(offsets=[TopicPartition(topic, part, last.offset() + 1)],
                                              asynchronous=False)
                self.last_commit_at = time.monotonic()
        return finished

    def _count(self, job: Job) -> None:
        self.stats.update(job.counts)
        for kind, n in job.counts.items():
            EVENTS.labels(kind).inc(n)
        if job.counts["batches"]:
            ENGINE_SECONDS.observe(time.monotonic() - job.arrived)
            log.info("batch %s: %d requests -> %d candidates in %.1fs%s", job.batch_id, job.counts["requests"],
                     job.counts["candidates"], time.monotonic() - job.arrived,
                     " (priority)" if job.source == "priority" else "")

    # --- the loop -------------------------------------------------------------------------

    def run(self, max_batches: int | None = None, idle_exit_s: float | None = None) -> Counter:
        t = self.s.topics
        self.consumers["priority"].subscribe([t.priority_batches], on_assign=kafka_io.log_assignment)
        self.consumers["normal"].subscribe([t.batches], on_assign=kafka_io.log_assignment)
        cap = self.s.generation.max_inflight_requests
        taken = 0
        with self.running():  # SIGTERM stops after the batches in flight
            while not self.stopping:
                while self._inflight() < cap and (max_batches is None or taken < max_batches):
                    got = self._poll(0.0 if self._inflight() else 0.25)
                    if got is None:
                        break
                    self._admit(*got)
                    taken += 1
                for key, result in self.stream.poll():
                    self._complete(key, result)
                if self._finish_ready():
                    self.busy()
                if self._inflight():
                    self.busy()
                    continue
                done = self.stats["batches"] + self.stats["dead_letter_batches"]
                if max_batches is not None and done >= max_batches:
                    break
                if self.idle_for(idle_exit_s):
                    break
        return self.stats


def _text(v) -> str | None:
    """A field of an unvalidated request as text for a rejection (None stays None)."""
    return None if v is None else str(v)
