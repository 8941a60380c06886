"""The filter worker: knowledge.candidates -> filter stages -> knowledge.edges / knowledge.rejected.

A confluent-kafka batch consumer (its own group) next to the models it needs. It takes micro-batches
(up to `batch_size` messages or `batch_wait_s`), runs the stages in order on each, publishes admitted
edges with every stage's score, an `edge_id` and the lineage, and rejected candidates with the stage
and reason; offsets are committed only after both are acknowledged. The generic stage's running
statistics are kept in a compacted topic (knowledge.tail_stats) and read back on start, so a
restarted worker keeps them. Edge ids are hash(head, relation, normalised tail): replays and
restarts produce the same ids, and the feature writer's writes are idempotent on them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import time
from collections import Counter

from confluent_kafka import Consumer, KafkaError, TopicPartition
from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram

from generators import kafka_io

from generators.parsing import normalize
from infra.kafka_compat import end_offsets
from processors.filters import FilterPipeline, TailStats, to_item

log = logging.getLogger("intentflow.filter")

VERDICTS = PromCounter("intentflow_filter_total", "filter outcomes: kept, or the stage that rejected", ["outcome"])
FILTER_SECONDS = Histogram("intentflow_filter_batch_seconds", "time to run the stages on one micro-batch",
                           buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30))


def edge_id(head: str, relation: str, tail: str) -> str:
    return hashlib.blake2b(f"{head}\x1f{relation}\x1f{normalize(tail)}".encode(), digest_size=8).hexdigest()


class TopicBackedStats(dict):
    """TailStats' store: a dict loaded from a compacted topic, with changed keys written back."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__()
        self.bootstrap, self.topic, self.dirty = bootstrap, topic, set()
        ends = {p: e for (_, p), e in end_offsets(bootstrap, [topic]).items()}
        if any(ends.values()):
            c = Consumer({"bootstrap.servers": bootstrap, "group.id": "intentflow-tail-stats-loader",
                          "enable.auto.commit": False})
            c.assign([TopicPartition(topic, p, 0) for p in ends])
            pos = {p: 0 for p in ends}
            while any(pos[p] < ends[p] for p in ends):
                for m in c.consume(1000, 1.0):
                    if m.error():
                        continue
                    pos[m.partition()] = m.offset() + 1
                    key = m.key().decode()
                    if m.value() is None:
                        super().pop(key, None)
                    else:
                        super().__setitem__(key, json.loads(m.value()))
            c.close()
        log.info("loaded %d tail statistics from %s", len(self), topic)

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self.dirty.add(key)

    def drain(self) -> list[tuple[str, bytes]]:
        out = [(k, json.dumps(self[k]).encode()) for k in self.dirty if k in self]
        self.dirty.clear()
        return out


class FilterWorker:
    def __init__(self, pipeline_factory, settings, group: str = "intentflow-filter", batch_size: int = 64,
                 batch_wait_s: float = 0.5, critic_version: str | None = None) -> None:
        self.s = settings
        t = settings.topics
        self.stats_store = TopicBackedStats(settings.broker, t.tail_stats)
        self.pipeline: FilterPipeline = pipeline_factory(TailStats(self.stats_store))
        self.critic_version = critic_version
        self.batch_size, self.batch_wait_s = batch_size, batch_wait_s
        self.consumer = Consumer({
            "bootstrap.servers": settings.broker, "group.id": group, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": int(settings.session_timeout_s * 1000),
            "max.poll.interval.ms": 900000})
        self.producer = kafka_io.producer(settings.broker)
        self.stats: Counter = Counter()
        self._stop = False

    def stop(self, *_: object) -> None:
        self._stop = True

    def handle(self, msgs: list) -> None:
        t = self.s.topics
        cands, records = [], []
        for m in msgs:
            try:
                c = json.loads(m.value())
                to_item(c)["tail"]  # noqa: B018 - must have the fields the stages read
                cands.append(c)
            except (ValueError, KeyError, TypeError) as e:
                records.append((t.filter_dlq, str(m.key() or b"", "utf-8", "replace"), json.dumps({
                    "error": f"undecodable candidate: {e!r}", "source_topic": m.topic(), "partition": m.partition(),
                    "offset": m.offset(), "value_text": (m.value() or b"").decode(errors="replace")}).encode()))
                self.stats["dead_letter"] += 1
                VERDICTS.labels("dead_letter").inc()
        t0 = time.perf_counter()
        verdicts = self.pipeline.run(cands) if cands else []
        secs = time.perf_counter() - t0
        FILTER_SECONDS.observe(secs)
        now = time.time()
        for c, v in zip(cands, verdicts):
            lineage = {**(c.get("lineage") or {}), "filtered_at": now, "critic_version": self.critic_version}
            out = {**c, "scores": {k: round(x, 4) for k, x in v.scores.items()}, "lineage": lineage}
            if v.kept:
                head = c.get("head") or c.get("pair_key") or ""
                out["edge_id"] = edge_id(head, c["relation"], c["tail"])
                records.append((t.edges, out["edge_id"], json.dumps(out).encode()))
                self.stats["kept"] += 1
                VERDICTS.labels("kept").inc()
            else:
                out.update(stage=v.stage, reason=v.reason)
                records.append((t.rejected, c.get("pair_key") or "", json.dumps(out).encode()))
                self.stats[f"rejected_{v.stage}"] += 1
                VERDICTS.labels(v.stage).inc()
        records += [(t.tail_stats, k, v) for k, v in self.stats_store.drain()]
        kafka_io.deliver(self.producer, records)
        self.stats["candidates"] += len(cands)
        log.info("filtered %d candidates in %.2fs", len(cands), secs)

    def run(self, max_candidates: int | None = None, idle_exit_s: float | None = None) -> Counter:
        signal.signal(signal.SIGTERM, self.stop)
        self.consumer.subscribe([self.s.topics.candidates], on_assign=kafka_io.log_assignment)
        idle_since = time.monotonic()
        try:
            while not self._stop:
                msgs = []
                for m in self.consumer.consume(self.batch_size, self.batch_wait_s):
                    if not m.error():
                        msgs.append(m)
                    elif m.error().code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer error: %s", m.error())
                if not msgs:
                    if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                        break
                    continue
                self.handle(msgs)
                self.consumer.commit(asynchronous=False)  # after edges, rejections and stats are acked
                idle_since = time.monotonic()
                if max_candidates is not None and self.stats["candidates"] + self.stats["dead_letter"] >= max_candidates:
                    break
        finally:
            self.consumer.close()
            self.producer.close()  # everything was flushed per batch; this stops its broker connections
        return self.stats
