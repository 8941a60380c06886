"""Correct end offsets on brokers that under-report them.

Tansu 0.6 (the local broker) answers ListOffsets(latest) with the base offset of the last record
batch + 1, not the offset after its last record: after a 5-record batch at offsets 0-4 it says 1.
Anything that trusts that number stops reading early: Faust's table recovery would drop the tail
of a changelog, and lag checks would see "caught up" too soon. We read the last batch itself and
take the offset after its last record. On a correct broker this changes nothing.
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaError, TopicPartition

from infra.kafka_conf import client_config


def true_end_offsets(bootstrap: str, ends: dict[tuple[str, int], int], timeout: float = 5.0,
                     security=None) -> dict[tuple[str, int], int]:
    """`security`: infra.settings.KafkaSecurity (None: INTENTFLOW_KAFKA__* from the environment)."""
    out = dict(ends)
    todo = {k: v for k, v in ends.items() if v and v > 0}
    if not todo:
        return out
    c = Consumer(client_config(bootstrap, security, {
        "group.id": "intentflow-end-probe", "enable.auto.commit": False, "enable.partition.eof": True,
        "fetch.wait.max.ms": 10, "auto.offset.reset": "latest"}))
    try:
        c.assign([TopicPartition(t, p, hw - 1) for (t, p), hw in todo.items()])
        pending = set(todo)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for m in c.consume(1000, 0.2):
                k = (m.topic(), m.partition())
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:  # noqa: SLF001 - confluent-kafka's name
                        pending.discard(k)
                    continue
                out[k] = max(out[k], m.offset() + 1)
    finally:
        c.close()
    return out


def end_offsets(bootstrap: str, topics: list[str], timeout: float = 10.0, security=None) -> dict[tuple[str, int], int]:
    c = Consumer(client_config(bootstrap, security, {"group.id": "intentflow-end-probe"}))
    try:
        ends = {}
        for t in topics:
            for p in c.list_topics(t, timeout=timeout).topics[t].partitions:
                ends[(t, p)] = c.get_watermark_offsets(TopicPartition(t, p), timeout=timeout)[1]
    finally:
        c.close()
    return true_end_offsets(bootstrap, ends, security=security)
