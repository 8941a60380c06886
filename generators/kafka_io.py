"""Kafka plumbing the ML workers share."""

from __future__ import annotations

import logging

from confluent_kafka import Producer


def producer(bootstrap: str) -> Producer:
    """Idempotent, acks=all, murmur2 keys (the partitions every other client picks)."""
    return Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                     "partitioner": "murmur2_random"})


def deliver(p: Producer, records: list[tuple[str, str, bytes]], timeout: float = 60.0) -> None:
    """Produce (topic, key, value) records and wait until the broker has all of them; raise if not."""
    errors: list[str] = []

    def on_delivery(err, msg) -> None:
        if err is not None:
            errors.append(err.str())

    for topic, key, value in records:
        while True:
            try:
                p.produce(topic, value, key.encode(), on_delivery=on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain
                p.poll(0.05)
    left = p.flush(timeout)
    if errors or left:
        raise RuntimeError(f"{len(errors)} message(s) not delivered ({left} still queued): {errors[:1]}")


def log_assignment(consumer, partitions) -> None:
    """on_assign callback: says which partitions a worker got (operators and the demo read it)."""
    logging.getLogger("intentflow.kafka").info(
        "assigned %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "no partitions")


def read_json(bootstrap: str, topic: str, timeout: float = 60.0) -> list[dict]:
    """Every message of a topic, up to its end when called, as JSON (undecodable ones skipped)."""
    import json
    import time

    from confluent_kafka import Consumer, TopicPartition

    from infra.kafka_compat import end_offsets

    ends = {p: e for (_, p), e in end_offsets(bootstrap, [topic]).items() if e > 0}
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"intentflow-reader-{time.time_ns()}",
                  "enable.auto.commit": False})
    out: list[dict] = []
    try:
        c.assign([TopicPartition(topic, p, 0) for p in ends])
        deadline = time.monotonic() + timeout
        todo = set(ends)
        while todo and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if m.error() or m.offset() >= ends[m.partition()]:
                    continue
                try:
                    out.append(json.loads(m.value()))
                except (ValueError, TypeError):
                    pass
                if m.offset() + 1 >= ends[m.partition()]:
                    todo.discard(m.partition())
        if todo:
            raise TimeoutError(f"reading {topic}: partitions {sorted(todo)} not read to their end in {timeout} s")
    finally:
        c.close()
    return out
