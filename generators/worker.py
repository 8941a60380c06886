"""The generation worker: generation.batches -> engine -> parse -> knowledge.candidates.

A plain confluent-kafka batch consumer in its own consumer group, so GPU workers scale apart from
the stream workers. One engine call per micro-batch. Offsets are committed only after every
candidate of the batch is acknowledged by the broker; a batch that cannot be decoded, or fails in
the engine `retries + 1` times, goes to generation.dlq with the reason instead of blocking its
partition. Requests seen recently are skipped (at-least-once upstream may repeat a request);
candidate ids are deterministic, so a repeat that slips through changes nothing downstream.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError
from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram

from generators import kafka_io, parsing, prompts
from generators.config import MLSettings
from generators.engines import Engine, GenParams

log = logging.getLogger("intentflow.generate")

EVENTS = PromCounter("intentflow_generation_total", "generation worker counts by kind", ["kind"])
ENGINE_SECONDS = Histogram("intentflow_engine_batch_seconds", "engine time per micro-batch",
                           buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300))


def candidate_id(request_id: str, relation: str, tail: str) -> str:
    return hashlib.blake2b(f"{request_id}\x1f{relation}\x1f{parsing.normalize(tail)}".encode(), digest_size=8).hexdigest()


@dataclass
class BatchResult:
    candidates: list[dict]
    dropped: Counter
    seconds: float
    output_tokens: int


def generate_batch(batch: dict, engine: Engine, settings: MLSettings) -> BatchResult:
    """Pure enough to test without Kafka: one engine call for every (request, relation) prompt."""
    g = settings.generation
    reqs = batch["requests"]
    all_prompts = [p for r in reqs for p in prompts.build(r, g.relations)]
    by_id = {r["request_id"]: r for r in reqs}
    params = GenParams(max_tokens=g.max_tokens, temperature=g.temperature, top_p=g.top_p, seed=g.seed,
                       chat=g.prompt_style == "chat")
    t0 = time.perf_counter()
    outs = engine.generate([p.text for p in all_prompts], params) if all_prompts else []
    secs = time.perf_counter() - t0
    now = time.time()
    cands, dropped, tokens = [], Counter(), 0
    for p, out in zip(all_prompts, outs):
        tokens += out.n_tokens
        parsed = parsing.parse_list(out.text, g.max_items, g.max_words)
        dropped.update(parsed.dropped)
        if not parsed.items:
            dropped["no_items"] += 1
        r = by_id[p.request_id]
        for rank, tail in parsed.items:
            cands.append({
                "candidate_id": candidate_id(r["request_id"], p.relation, tail),
                "request_id": r["request_id"], "pair_key": r["pair_key"], "behavior": r["behavior"],
                "head": r.get("query") if r["behavior"] == "search_buy" else r["pair_key"],
                "relation": p.relation, "tail": tail, "rank": rank, "raw": out.text,
                "query": r.get("query"), "product": r.get("product"),
                "product_a": r.get("product_a"), "product_b": r.get("product_b"),
                "lineage": {
                    "batch_id": batch["batch_id"], "event_id": r["event_id"], "event_time": r["event_time"],
                    "model": engine.model, "engine": engine.name, "prompt_version": f"{p.version}/{g.prompt_style}",
                    "generated_at": now, "generation_seconds": round(secs, 3),
                    "mean_logprob": out.mean_logprob, "finish_reason": out.finish_reason,
                },
            })
    return BatchResult(cands, dropped, secs, tokens)


class GenerationWorker:
    def __init__(self, engine: Engine, settings: MLSettings | None = None, group: str = "intentflow-generate") -> None:
        self.s = settings or MLSettings()
        self.engine = engine
        self.consumer = Consumer({
            "bootstrap.servers": self.s.broker, "group.id": group, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": int(self.s.session_timeout_s * 1000),
            "max.poll.interval.ms": 900000,  # a CPU engine may take minutes per batch
        })
        self.producer = kafka_io.producer(self.s.broker)
        self.recent: OrderedDict[str, None] = OrderedDict()  # request ids done lately
        self.stats: Counter = Counter()
        self._stop = False

    def stop(self, *_: object) -> None:
        self._stop = True

    def _dead_letter(self, msg, error: str) -> None:
        env = {"error": error, "source_topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(),
               "failed_at": time.time(), "value_text": (msg.value() or b"").decode(errors="replace")}
        kafka_io.deliver(self.producer, [(self.s.topics.generation_dlq, str(msg.key() or b"", "utf-8", "replace"),
                                          json.dumps(env).encode())])
        self.stats["dead_letter"] += 1
        EVENTS.labels("dead_letter").inc()

    def handle(self, msg) -> None:
        try:
            batch = json.loads(msg.value())
            reqs = [r for r in batch["requests"] if r["request_id"] not in self.recent]
        except (ValueError, KeyError, TypeError) as e:
            self._dead_letter(msg, f"undecodable batch: {e!r}")
            return
        self.stats["duplicate_request"] += len(batch["requests"]) - len(reqs)
        batch = {**batch, "requests": reqs}
        for attempt in range(self.s.generation.retries + 1):
            try:
                res = generate_batch(batch, self.engine, self.s)
                break
            except (ValueError, KeyError, TypeError) as e:  # a malformed request: not worth a retry
                self._dead_letter(msg, f"bad request in batch: {e!r}")
                return
            except Exception as e:  # engine failure: retry, then dead-letter
                log.warning("batch %s failed in the engine (attempt %d): %r", batch.get("batch_id"), attempt + 1, e)
                if attempt == self.s.generation.retries:
                    self._dead_letter(msg, f"engine failed: {e!r}")
                    return
        kafka_io.deliver(self.producer, [(self.s.topics.candidates, c["pair_key"], json.dumps(c).encode())
                                         for c in res.candidates])
        for r in reqs:
            self.recent[r["request_id"]] = None
        while len(self.recent) > 100_000:
            self.recent.popitem(last=False)
        counts = {"batches": 1, "requests": len(reqs), "candidates": len(res.candidates),
                  "output_tokens": res.output_tokens, **{f"dropped_{k}": v for k, v in res.dropped.items()}}
        self.stats.update(counts)
        for kind, n in counts.items():
            EVENTS.labels(kind).inc(n)
        ENGINE_SECONDS.observe(res.seconds)
        log.info("batch %s: %d requests -> %d candidates in %.1fs", batch["batch_id"], len(reqs),
                 len(res.candidates), res.seconds)

    def run(self, max_batches: int | None = None, idle_exit_s: float | None = None) -> Counter:
        signal.signal(signal.SIGTERM, self.stop)
        self.consumer.subscribe([self.s.topics.batches], on_assign=kafka_io.log_assignment)
        idle_since = time.monotonic()
        try:
            while not self._stop:
                msg = self.consumer.poll(0.5)
                if msg is None:
                    if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                        break
                    continue
                if msg.error():
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer error: %s", msg.error())
                    continue
                self.handle(msg)
                self.consumer.commit(message=msg, asynchronous=False)  # only after the output is acked
                idle_since = time.monotonic()
                if max_batches is not None and self.stats["batches"] + self.stats["dead_letter"] >= max_batches:
                    break
        finally:
            self.consumer.close()
            self.producer.close()  # everything was flushed per batch; this stops its broker connections
        return self.stats
