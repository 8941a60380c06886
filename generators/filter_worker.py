"""The filter worker: knowledge.candidates -> filter stages -> knowledge.edges / knowledge.rejected.

A confluent-kafka batch consumer (its own group) next to the models it needs. It takes micro-batches
(up to `batch_size` messages or `batch_wait_s`), validates each candidate against its contract
(processors/contracts.Candidate; what fails goes to filter.dlq with the reason), runs the stages
in order, publishes admitted edges with every stage's score, their `score` (the critic's
plausibility; null where no scorer ran), an `edge_id` and the lineage, and rejected candidates
with the stage and reason; offsets are committed only after all of it is acknowledged.

The generic stage's statistics are observations (tail, head, product types), each published once
to a compacted topic (knowledge.tail_stats, key "tail\\x1fhead"): a worker loads them on start and
keeps reading what other filter workers add, so workers merge their statistics instead of
overwriting each other's. Edge ids are hash(head, relation, normalised tail): replays and restarts
produce the same ids, and the feature writer's writes are idempotent on them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter

from confluent_kafka import Consumer, TopicPartition
from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram
from pydantic import ValidationError

from generators import kafka_io
from generators.parsing import normalize
from infra.kafka_compat import end_offsets
from processors.contracts import Candidate, Rejection
from processors.dlq import envelope
from processors.filters import FilterPipeline, TailStats

log = logging.getLogger("intentflow.filter")

VERDICTS = PromCounter("intentflow_filter_total", "filter outcomes: kept, or the stage that rejected", ["outcome"])
FILTER_SECONDS = Histogram("intentflow_filter_batch_seconds", "time to run the stages on one micro-batch",
                           buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30))


def edge_id(head: str, relation: str, tail: str) -> str:
    return hashlib.blake2b(f"{head}\x1f{relation}\x1f{normalize(tail)}".encode(), digest_size=8).hexdigest()


def edge_score(scores: dict, critic_version: str | None) -> tuple[float | None, str | None]:
    """(score, scorer): the critic's plausibility, else self-evaluation mapped to [0, 1], else
    (None, None): an edge no scorer judged says so instead of carrying a placeholder."""
    if scores.get("critic") is not None:
        return round(float(scores["critic"]), 4), f"critic:{critic_version or 'unknown'}"
    if scores.get("self_eval") is not None:
        return round((float(scores["self_eval"]) + 1) / 2, 4), "self_eval"
    return None, None


class SharedTailStats:
    """TailStats' observations on a compacted topic: loaded on start, new ones published with the
    batch's output, other workers' ones merged as they arrive (`refresh`)."""

    def __init__(self, settings, topic: str) -> None:
        self.settings, self.topic = settings, topic
        self.outbox: list[tuple[str, str, bytes]] = []
        self.stats = TailStats(on_new=lambda t, h, k: self.outbox.append(
            (topic, f"{t}\x1f{h}", json.dumps({"k": k}).encode())))
        ends = {p: e for (_, p), e in end_offsets(settings.broker, [topic]).items()}
        self.reader = Consumer(kafka_io.consumer_config(settings, "intentflow-tail-stats-reader",
                                                        enable_partition_eof=False))
        self.reader.assign([TopicPartition(topic, p, 0) for p in ends])
        pos = {p: 0 for p in ends}
        while any(pos[p] < ends[p] for p in ends):
            for m in self.reader.consume(1000, 1.0):
                if not m.error():
                    pos[m.partition()] = m.offset() + 1
                    self._apply(m)
        self.outbox.clear()  # loaded observations are not new
        log.info("loaded %d tail statistics (%d heads) from %s", len(self.stats.tails), len(self.stats.kinds), topic)

    def _apply(self, m) -> None:
        if m.value() is None or m.key() is None:
            return
        tail, _, head = m.key().decode(errors="replace").partition("\x1f")
        try:
            kind = str(json.loads(m.value()).get("k", "?"))
        except (ValueError, AttributeError):
            return
        if head:
            self.stats.add(tail, head, kind)

    def refresh(self) -> None:
        """Merge what other workers (and this one, idempotently) published since the last call."""
        for m in self.reader.consume(5000, 0):
            if not m.error():
                self._apply(m)

    def drain(self) -> list[tuple[str, str, bytes]]:
        out, self.outbox = self.outbox, []
        return out

    def close(self) -> None:
        self.reader.close()


class FilterWorker(kafka_io.Worker):
    def __init__(self, pipeline_factory, settings, group: str | None = None, batch_size: int = 64,
                 batch_wait_s: float = 0.5, critic_version: str | None = None) -> None:
        super().__init__()
        self.s = settings
        t = settings.topics
        kafka_io.require_topics(settings, [t.candidates, t.edges, t.rejected, t.filter_dlq, t.tail_stats])
        self.shared = SharedTailStats(settings, t.tail_stats)
        self.pipeline: FilterPipeline = pipeline_factory(self.shared.stats)
        self.critic_version = critic_version
        self.batch_size, self.batch_wait_s = batch_size, batch_wait_s
        self.consumer = Consumer(kafka_io.consumer_config(settings, group or settings.groups.filter,
                                                          max_poll_interval_ms=900000))
        self.consumers = {"candidates": self.consumer}
        self.producer = kafka_io.producer(settings)
        self.stats: Counter = Counter()

    def close_extra(self) -> None:
        self.shared.close()

    def handle(self, msgs: list) -> None:
        t = self.s.topics
        cands, records = [], []
        for m in msgs:
            try:
                cands.append(Candidate.model_validate_json(m.value() or b"").model_dump(mode="json"))
            except ValidationError as e:
                reason = "; ".join(f"{'.'.join(map(str, x['loc'])) or 'candidate'}: {x['msg']}"
                                   for x in e.errors(include_url=False))
                records.append((t.filter_dlq, str(m.key() or b"", "utf-8", "replace"), envelope(
                    source_topic=m.topic(), partition=m.partition(), offset=m.offset(), key=m.key(), value=m.value(),
                    error=f"invalid candidate: {reason}", kind="invalid_candidate", stage="filter")))
                self.stats["dead_letter"] += 1
                VERDICTS.labels("dead_letter").inc()
        self.shared.refresh()
        t0 = time.perf_counter()
        verdicts = self.pipeline.run(cands) if cands else []
        secs = time.perf_counter() - t0
        FILTER_SECONDS.observe(secs)
        now = time.time()
        for c, v in zip(cands, verdicts):
            lineage = {**(c.get("lineage") or {}), "filtered_at": now, "critic_version": self.critic_version}
            scores = {k: round(x, 4) for k, x in v.scores.items()}
            out = {**c, "scores": scores, "lineage": lineage}
            if v.kept:
                head = c.get("head") or c.get("pair_key") or ""
                out["edge_id"] = edge_id(head, c["relation"], c["tail"])
                out["score"], out["scorer"] = edge_score(scores, self.critic_version)
                records.append((t.edges, out["edge_id"], json.dumps(out).encode()))
                self.stats["kept"] += 1
                VERDICTS.labels("kept").inc()
            else:
                out.update(stage=v.stage, reason=v.reason)
                records.append((t.rejected, c.get("pair_key") or "", Rejection(**out).model_dump_json().encode()))
                self.stats[f"rejected_{v.stage}"] += 1
                VERDICTS.labels(v.stage).inc()
        records += self.shared.drain()
        kafka_io.deliver(self.producer, records)
        self.stats["candidates"] += len(cands)
        log.info("filtered %d candidates in %.2fs", len(cands), secs)

    def run(self, max_candidates: int | None = None, idle_exit_s: float | None = None) -> Counter:
        self.consumer.subscribe([self.s.topics.candidates], on_assign=kafka_io.log_assignment)
        with self.running():  # SIGTERM stops after the current batch
            while not self.stopping:
                msgs = [m for m in self.consumer.consume(self.batch_size, self.batch_wait_s) if self.usable(m)]
                if not msgs:
                    if self.idle_for(idle_exit_s):
                        break
                    continue
                self.handle(msgs)
                self.consumer.commit(asynchronous=False)  # after edges, rejections and stats are acked
                self.busy()
                if max_candidates is not None and self.stats["candidates"] + self.stats["dead_letter"] >= max_candidates:
                    break
        return self.stats
