"""Read a topic to its true end (see kafka_compat) as JSON: the status report, the demo and the
annotation sampler all need "what is in this topic now"."""

from __future__ import annotations

import json
import time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from infra.kafka_compat import end_offsets
from infra.kafka_conf import client_config


def existing(bootstrap: str, topics: list[str], security=None) -> list[str]:
    """`security`: generators.config.KafkaSecurity (None: INTENTFLOW_KAFKA__* from the environment)."""
    md = AdminClient(client_config(bootstrap, security)).list_topics(timeout=10).topics
    return [t for t in topics if t in md]


def read_records(bootstrap: str, topic: str, tail: int | None = None, timeout: float = 30.0,
                 complete: bool = False, security=None) -> list[tuple[bytes | None, bytes | None]]:
    """(key, value) of every message of a topic up to its end when called (or the last `tail` per
    partition), partition by partition in offset order; a tombstone's value is None. With
    `complete`, not reaching the end in time is an error."""
    have = existing(bootstrap, [topic], security)
    if not have:
        return []
    ends = end_offsets(bootstrap, have, security=security)
    starts = {k: max(0, e - tail) if tail else 0 for k, e in ends.items()}
    todo = {k for k in ends if ends[k] > starts[k]}
    if not todo:
        return []
    c = Consumer(client_config(bootstrap, security, {"group.id": f"intentflow-reader-{time.time_ns()}",
                                                     "enable.auto.commit": False}))
    out: dict[int, list[tuple[bytes | None, bytes | None]]] = {}
    try:
        c.assign([TopicPartition(t, p, starts[(t, p)]) for (t, p) in todo])
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if m.error():
                    continue
                k = (m.topic(), m.partition())
                if m.offset() < ends[k]:
                    out.setdefault(m.partition(), []).append((m.key(), m.value()))
                if m.offset() + 1 >= ends[k]:
                    todo.discard(k)
        if complete and todo:
            raise TimeoutError(f"reading {topic}: partitions {sorted(p for _, p in todo)} not read to their end in {timeout} s")
    finally:
        c.close()
    return [r for p in sorted(out) for r in out[p]]


def read_json(bootstrap: str, topic: str, tail: int | None = None, timeout: float = 30.0,
              complete: bool = False, security=None) -> list[dict]:
    """Every message of a topic up to its end when called (or the last `tail` per partition), as
    JSON; undecodable ones are skipped. With `complete`, not reaching the end in time is an error."""
    out = []
    for _, value in read_records(bootstrap, topic, tail, timeout, complete, security):
        try:
            out.append(json.loads(value))
        except (ValueError, TypeError):
            pass
    return out
