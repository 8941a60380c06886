"""Producing behaviour events and knowledge requests to Kafka (confluent-kafka).

Events are keyed by the key of the partition that owns their pair (see processors/events.py), with
the Java client's murmur2 partitioner so that keys land where Faust (aiokafka) and any other Kafka
client would put them. The producer is idempotent (no duplicates from its own retries, order kept);
delivery errors are collected and raised by flush().
"""

from __future__ import annotations

import functools
from typing import Any

from aiokafka.partitioner import murmur2
from confluent_kafka import KafkaError, Producer

from processors.events import CoPurchaseEvent, SearchBuyEvent, to_json
from processors.requests import GenerationRequest
from streams.settings import Settings, get_settings


@functools.lru_cache(maxsize=1 << 16)
def owner_partition(key: bytes, partitions: int) -> int:
    """The partition (0 .. partitions-1) that owns a key: murmur2(key) & 0x7fffffff mod the topic's
    partition count, as the Java client, librdkafka's `murmur2_random` (our producers) and
    aiokafka (Faust, streams.state.send_keyed) compute it. Keys repeat (queries, product pairs),
    so results are cached. Raises ValueError when partitions < 1."""
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, not {partitions}")
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def misrouted(msg_key: bytes | None, msg_partition: int, key: bytes, partitions: int) -> bool:
    """True when a message must be routed again: it is not keyed by `key` (its pair's owner), or it
    is but sits on another partition than the key's (a producer with another partitioner, e.g.
    librdkafka's default consistent_random, CRC32)."""
    return msg_key != key or msg_partition != owner_partition(key, partitions)


class DeliveryError(RuntimeError):
    def __init__(self, errors: list[str]):
        super().__init__(f"{len(errors)} message(s) not delivered; first: {errors[0]}")
        self.errors = errors


def producer_config(bootstrap: str, security=None, **overrides: Any) -> dict:
    """`security`: infra.settings.KafkaSecurity (None: INTENTFLOW_KAFKA__* from the environment).
    `overrides`: librdkafka options (**{"linger.ms": 20})."""
    from infra.kafka_conf import client_config

    cfg = client_config(bootstrap, security)
    cfg.update({
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 200000,
        "partitioner": "murmur2_random",
        "message.timeout.ms": 30000,
    })
    cfg.update(overrides)
    return cfg


class EventProducer:
    def __init__(self, settings: Settings | None = None, **config: Any) -> None:
        self.settings = settings or get_settings()
        self.topics = self.settings.topics
        self._p = Producer(producer_config(self.settings.broker, self.settings.kafka, **config))
        self.delivered = 0
        self.errors: list[str] = []

    def _on_delivery(self, err: KafkaError | None, msg) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.errors.append(f"{msg.topic()}: {err.str()}")

    def send_raw(self, topic: str, value: bytes, key: bytes | None = None, timestamp_ms: int | None = None) -> None:
        while True:
            try:
                self._p.produce(topic, value, key, on_delivery=self._on_delivery,
                                **({"timestamp": timestamp_ms} if timestamp_ms else {}))
                break
            except BufferError:  # local queue full: let deliveries drain
                self._p.poll(0.05)
        self._p.poll(0)

    def send(self, event: SearchBuyEvent | CoPurchaseEvent, topic: str | None = None) -> None:
        if topic is None:
            topic = self.topics.search_buy if isinstance(event, SearchBuyEvent) else self.topics.co_purchase
        ts_ms = int(event.ts * 1000)  # the record's timestamp; before 1970 the broker's own time
        self.send_raw(topic, to_json(event), event.partition_key.encode(), ts_ms if ts_ms > 0 else None)

    def request_knowledge(self, request: GenerationRequest) -> None:
        """A serving cache miss: generation for this pair jumps the queue."""
        self.send_raw(self.topics.priority_requests, request.model_dump_json(exclude_none=True).encode(),
                      request.pair_key.encode())

    def flush(self, timeout: float = 60.0) -> int:
        """Wait for every message; raise DeliveryError if any failed. Returns delivered count."""
        left = self._p.flush(timeout)
        if left:
            self.errors.append(f"{left} message(s) still queued after {timeout}s")
        if self.errors:
            raise DeliveryError(self.errors)
        return self.delivered
