"""Kafka plumbing the ML workers share: client configuration built in one place (with the
security options from settings), delivery that waits for the broker, assignment logging, and the
`Worker` base (stop on SIGTERM, idle exit, clients closed) of the generation and filter workers."""

from __future__ import annotations

import logging
import signal
import threading
import time
from contextlib import contextmanager

from confluent_kafka import KafkaError, Producer


def client_config(s) -> dict:
    """bootstrap.servers plus TLS/SASL options from settings (INTENTFLOW_KAFKA__*), for any client."""
    conf = {"bootstrap.servers": s.broker}
    conf.update(s.kafka.librdkafka())
    return conf


def consumer_config(s, group: str, **kw) -> dict:
    """A manual-commit consumer of `group` that starts at the earliest offset when it has none.
    Keyword arguments are librdkafka options with dots as underscores (max_poll_interval_ms=...)."""
    conf = {**client_config(s), "group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": int(s.session_timeout_s * 1000)}
    conf.update({k.replace("_", "."): v for k, v in kw.items()})
    return conf


def producer(s) -> Producer:
    """Idempotent, acks=all, murmur2 keys (the partitions every other client picks)."""
    return Producer({**client_config(s), "enable.idempotence": True, "acks": "all", "linger.ms": 5,
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


def require_topics(s, names: list[str], timeout: float = 10.0) -> None:
    """Raise RuntimeError naming those of `names` the broker (s.broker) does not have. The ML workers
    create no topic: `intentflow topics create` makes every one, with INTENTFLOW_PARTITIONS."""
    from confluent_kafka.admin import AdminClient

    have = AdminClient(client_config(s)).list_topics(timeout=timeout).topics
    missing = [n for n in names if n not in have]
    if missing:
        raise RuntimeError(f"topic(s) {', '.join(missing)} not on the broker {s.broker}: create the pipeline's "
                           f"topics with `intentflow topics create` (the workers create none)")


def log_assignment(consumer, partitions) -> None:
    """on_assign callback: says which partitions a worker got (operators and the demo read it)."""
    logging.getLogger("intentflow.kafka").info(
        "assigned %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "no partitions")


class Worker:
    """What every ML worker's loop shares: a stop flag that SIGTERM sets (the batch in hand is
    finished and committed first), an idle clock for `idle_exit_s`, consumer errors filtered (the
    end of a partition is not one), and its Kafka clients closed however the loop ends.

    A subclass creates `self.consumers` (name -> Consumer) and `self.producer`, and runs its loop
    inside `with self.running():`. Commits stay the subclass's: each commits only after its
    records are delivered (`deliver`), so a crash redelivers instead of losing."""

    consumers: dict
    producer: Producer

    def __init__(self) -> None:
        self._stop = False
        self.idle_since = time.monotonic()

    def stop(self, *_: object) -> None:
        self._stop = True

    @property
    def stopping(self) -> bool:
        return self._stop

    def busy(self) -> None:
        """Work was done now: the idle clock starts again."""
        self.idle_since = time.monotonic()

    def idle_for(self, seconds: float | None) -> bool:
        """Whether no work was done for more than `seconds` (None: never)."""
        return seconds is not None and time.monotonic() - self.idle_since > seconds

    @staticmethod
    def usable(msg) -> bool:
        """A message to handle: not None and not an error (errors other than a partition's end are logged)."""
        if msg is None:
            return False
        if msg.error():
            if msg.error().code() != KafkaError._PARTITION_EOF:  # noqa: SLF001 - confluent-kafka's name
                logging.getLogger("intentflow.kafka").warning("consumer error: %s", msg.error())
            return False
        return True

    @contextmanager
    def running(self):
        """The loop's frame: SIGTERM stops it (main thread only), the clients close at the end."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
        self.busy()
        try:
            yield self
        finally:
            for c in self.consumers.values():
                c.close()
            self.close_extra()
            self.producer.close()  # everything was flushed per batch; this stops its broker connections

    def close_extra(self) -> None:
        """Other clients a subclass holds, closed before the producer."""
