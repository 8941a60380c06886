"""Test helpers over the real broker: the topic and group names, read topics to the end, produce,
wait for a group to catch up, run workers and read their assignments from their logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from infra import procs, services
from infra.kafka_compat import end_offsets
from streams.settings import Settings, Topics

ROOT = Path(__file__).resolve().parents[1]
INTENTFLOW = str(Path(sys.executable).parent / "intentflow")
TOPIC = Topics()  # the stream side's topic names (workers started by worker_env keep the defaults)
GROUP = Settings.model_fields["app_id"].default  # the stream workers' consumer group (INTENTFLOW_APP_ID)
SOURCES = [TOPIC.search_buy, TOPIC.co_purchase]
ALL_STAGES = SOURCES + [TOPIC.by_product, TOPIC.requests, TOPIC.priority_requests]
FEATURE_STAGES = [TOPIC.edges, TOPIC.entity_updates, TOPIC.feature_rows]  # edges -> feature writers


def read_topic(bootstrap: str, topic: str, timeout: float = 20.0) -> list:
    """Every message currently in the topic (up to the end offsets at call time)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-reader-{time.time_ns()}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        ends = {p: end for (_, p), end in end_offsets(bootstrap, [topic]).items()}
        parts = list(ends)
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        pos = {p: 0 for p in parts}
        out = []
        deadline = time.monotonic() + timeout
        while any(pos[p] < ends[p] for p in parts):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: got {pos}, want {ends}")
            for m in c.consume(1000, 0.5):
                if m.error():
                    continue
                out.append(m)
                pos[m.partition()] = m.offset() + 1
        return out
    finally:
        c.close()


def read_json(bootstrap: str, topic: str) -> list[dict]:
    return [json.loads(m.value()) for m in read_topic(bootstrap, topic)]


def keys_on_several_partitions(bootstrap: str) -> dict[str, set[int]]:
    """Table keys written to more than one partition of their changelog topic ("topic|key" -> partitions).

    A worker that takes a partition over recovers its tables from that changelog partition only, so
    a key written elsewhere (say, to the partition of another event in the same micro-batch) comes
    back stale there."""
    from confluent_kafka.admin import AdminClient

    topics = [t for t in AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
              if t.endswith("-changelog")]
    where: dict[str, set[int]] = defaultdict(set)
    for t in topics:
        for m in read_topic(bootstrap, t):
            where[f"{t}|{m.key().decode()}"].add(m.partition())
    return {k: v for k, v in where.items() if len(v) > 1}


def create_topics(bootstrap: str, settings: Settings) -> None:
    """Every topic of the registry (settings.topics: both sides'), with the settings' partitions;
    the workers' own Faust topics (changelogs) are left to the worker."""
    services.ensure_topics(bootstrap, list(settings.topics.model_dump().values()), settings.partitions)


def produce(settings: Settings, msgs, rate: float | None = None) -> None:
    """workload.Msg records to their topics with the pipeline's producer, at `rate` per second if given."""
    from streams.producer import EventProducer

    p = EventProducer(settings)
    topic = {"sb": settings.topics.search_buy, "cp": settings.topics.co_purchase}
    t0 = time.monotonic()
    for i, m in enumerate(msgs):
        p.send_raw(topic[m.topic], m.value, m.key)
        if rate:
            ahead = i / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
    p.flush()


def requests_by_pair(bootstrap: str, topic: str = TOPIC.batches) -> tuple[dict[str, set[str]], list[dict], list[dict]]:
    """The generation batches on `topic`: request ids per pair key, every request, every batch."""
    batches = read_json(bootstrap, topic)
    reqs = [r for b in batches for r in b["requests"]]
    by_pair: dict[str, set[str]] = defaultdict(set)
    for r in reqs:
        by_pair[r["pair_key"]].add(r["request_id"])
    return by_pair, reqs, batches


def _committed(bootstrap: str, group: str, ends: dict) -> dict:
    from confluent_kafka import ConsumerGroupTopicPartitions

    admin = AdminClient({"bootstrap.servers": bootstrap})
    tps = [TopicPartition(t, p) for t, p in ends]
    fut = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, tps)])[group]
    return {(tp.topic, tp.partition): max(tp.offset, 0) for tp in fut.result(10).topic_partitions}


def committed(bootstrap: str, group: str, topics: list[str]) -> int:
    """Messages the group has committed on these topics, all partitions together."""
    return sum(_committed(bootstrap, group, end_offsets(bootstrap, topics)).values())


def group_lag(bootstrap: str, group: str, topics: list[str]) -> int:
    """Messages not yet committed by the group on these topics (uncommitted partitions count whole)."""
    ends = end_offsets(bootstrap, topics)
    done = _committed(bootstrap, group, ends)
    return sum(end - done.get(k, 0) for k, end in ends.items())


def wait_caught_up(bootstrap: str, group: str, topics: list[str], timeout: float = 120.0, settle: float = 0.0) -> None:
    deadline = time.monotonic() + timeout
    lag = None
    while time.monotonic() < deadline:
        lag = group_lag(bootstrap, group, topics)
        if lag == 0:
            time.sleep(settle)
            if group_lag(bootstrap, group, topics) == 0:
                return
        time.sleep(0.3)
    ends = end_offsets(bootstrap, topics)
    done = _committed(bootstrap, group, ends)
    behind = {f"{t}[{p}]": f"{done.get((t, p), 0)}/{end}" for (t, p), end in sorted(ends.items())
              if end > done.get((t, p), 0)}
    raise TimeoutError(f"group {group} still {lag} behind on {topics}; committed/end: {behind}")


class Worker:
    """`intentflow worker` in a subprocess, with its log in a file."""

    def __init__(self, env: dict, log: Path, name: str = "worker", args: tuple[str, ...] = ()):
        self.env, self.log, self.name, self.args = env, log, name, tuple(args)
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Worker":
        self.proc = procs.spawn([INTENTFLOW, "worker", *self.args], self.log, env=self.env, cwd=ROOT)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.tail()}")
            if b"Ready" in self.log.read_bytes():
                return
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready:\n{self.tail()}")

    def tail(self, n: int = 4000) -> str:
        return self.log.read_bytes()[-n:].decode(errors="replace")

    def dump_tasks(self, wait: float = 3.0) -> str:
        """The worker's coroutines with their stacks (mode's Worker writes them on SIGUSR1), from its log:
        where a stalled worker waits."""
        if self.proc and self.proc.poll() is None:
            before = self.log.stat().st_size
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(wait)
            return self.log.read_bytes()[before:].decode(errors="replace")
        return ""

    def kill(self) -> None:
        procs.kill(self.proc, group=False, timeout=10)

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop (SIGTERM); a worker that does not exit in time is killed and the test fails."""
        if not procs.stop(self.proc, timeout, group=False):
            raise AssertionError(f"{self.name} did not stop within {timeout} s of SIGTERM:\n{self.tail()}")


def assignments(log: Path) -> list[set[int]]:
    """The partitions a stream worker was given at each rebalance, in order, from its log.

    On every assignment Faust's recovery logs a table of the active (owned, not standby) changelog
    partitions; tables are co-partitioned with the source topics, so these numbers are the
    partitions the worker consumes. An empty table (no partitions) gives an empty set.
    """
    out: list[set[int]] = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            msg = json.loads(line).get("msg", "")
        except (ValueError, AttributeError):
            continue  # the startup banner is not JSON
        if "Highwater for active changelog partitions" not in msg:
            continue
        parts = set()
        for row in msg.splitlines():
            cells = [c.strip() for c in row.strip().strip("|").split("|")]
            if len(cells) == 3 and cells[1].isdigit():
                parts.add(int(cells[1]))
        out.append(parts)
    assert out, f"{log.name}: no assignment logged"
    return out


def worker_env(bootstrap: str, data_dir: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTENTFLOW_")}
    env.update({
        "INTENTFLOW_BROKER": bootstrap,
        "INTENTFLOW_DATA_DIR": str(data_dir),
        "INTENTFLOW_SESSION_TIMEOUT_S": "6",
        "INTENTFLOW_LOG_LEVEL": "info",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env
