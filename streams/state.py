"""Faust tables as plain mappings for the pure processors, with one changelog write per key per batch.

Faust writes a changelog message on every `table[key] = value`; a micro-batch of events often
touches the same key many times (popular pairs), so we write through to the table's store and
send each touched key's final value once, to the partition of the event that touched it.

The writes are appended to aiokafka record batches per changelog partition and handed to the
producer directly, not through Faust's send_soon buffer: Faust 0.15 flushes that buffer before
committing offsets with a 0.1 s timeout and commits anyway when it expires, so under load a crash
lost state of committed events (found by the kill -9 test). Batching also makes a write ~10x
cheaper than `topic.send`.

A touched key stays owed to the changelog until the broker has acknowledged it. `flush` takes the
keys out of the table's dirty set while it sends them and puts them back when a send fails: raised
by the producer at once (then `flush` raises, so the agent's batch is retried), refused by the
broker when `flush(acked=True)` waits (likewise), or refused later for a flush that did not wait
(the keys are dirty again and `settle` sends them before any offsets are committed:
streams/faust_patches.settle_before_commit). Values are read when they are sent, so a key sent
again carries its newest value.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections import defaultdict
from json.encoder import encode_basestring_ascii  # what json.dumps(str) returns
from typing import Any, Iterator, MutableMapping

log = logging.getLogger("intentflow.streams")
_COMPACT = json.JSONEncoder(separators=(",", ":"), check_circular=False)
_tables: "weakref.WeakSet[TrackedTable]" = weakref.WeakSet()  # for settle()
_inflight: set[asyncio.Future] = set()  # changelog sends not yet acknowledged (flush without acked)


class ChangelogSendError(RuntimeError):
    """A table's changelog write was not acknowledged; its keys are dirty again."""


class TrackedTable(MutableMapping[str, Any]):
    __eq__ = object.__eq__  # a table is itself, not its contents (kept in sets: settle())
    __hash__ = object.__hash__

    def __init__(self, table: Any) -> None:
        self.table = table
        self.partition: int | None = None  # partition of the event being processed
        self._dirty: dict[str, int] = {}
        self.undelivered = 0  # keys put back after the broker refused them, not yet sent again
        _tables.add(self)

    @property
    def data(self) -> MutableMapping[str, Any]:
        store = self.table.data
        # The memory store keeps a plain dict behind a Python-level mapping; use the dict itself
        # (a third of the per-event cost of the sampler was that wrapper's __getitem__).
        return getattr(store, "data", store) if isinstance(getattr(store, "data", None), dict) else store

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value
        self._dirty[key] = self.partition

    def __delitem__(self, key: str) -> None:
        del self.data[key]
        self._dirty[key] = self.partition

    def put(self, key: str, value: Any, partition: int) -> None:
        self.data[key] = value
        self._dirty[key] = partition

    def delete(self, key: str, partition: int) -> None:
        self.data.pop(key, None)
        self._dirty[key] = partition

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def touched(self) -> list[str]:
        return list(self._dirty)

    def take(self) -> dict[str, int]:
        """The touched keys (key -> changelog partition), no longer dirty: being sent."""
        taken, self._dirty = self._dirty, {}
        return taken

    def restore(self, keys: dict[str, int]) -> None:
        """Keys whose send failed: dirty again (a key touched since keeps its newer partition)."""
        for key, partition in keys.items():
            self._dirty.setdefault(key, partition)

    def encode(self, keys: dict[str, int]) -> Iterator[tuple[str, int, bytes, bytes | None]]:
        """(changelog topic, partition, key, value) of these keys, with their current values.

        Keys and values are JSON, as Faust's "json" codec writes them (the tables are declared with
        it), so Faust's own recovery reads them back; plain json.dumps is a third of the cost, and
        one encoder made once, not per call, a third less again.
        """
        topic = self.table.changelog_topic.get_topic_name()
        dump_key, dumps, dump, data = encode_basestring_ascii, json.dumps, _COMPACT.encode, self.data
        for key, partition in keys.items():
            value = data.get(key)
            k = dump_key(key) if type(key) is str else dumps(key)
            yield topic, partition, k.encode(), None if value is None else dump(value).encode()


async def flush(app: Any, *tables: TrackedTable, acked: bool = False) -> int:
    """Send the touched keys of these tables as record batches, one per changelog partition.

    Returns when the producer has accepted them (Faust settles them before it commits the offsets
    of the events that caused them: `settle`), or with `acked` when the broker has them. A send
    that fails puts its keys back (dirty) and, when the failure is known here, raises.
    """
    taken = [(t, t.take()) for t in tables]
    groups: dict[tuple[str, int], list[tuple[bytes, bytes | None]]] = defaultdict(list)
    owners: dict[tuple[str, int], list[tuple[TrackedTable, str, int]]] = defaultdict(list)
    try:
        for table, keys in taken:
            for (topic, partition, k, v), key in zip(table.encode(keys), keys):
                groups[(topic, partition)].append((k, v))
                owners[(topic, partition)].append((table, key, partition))
        if not groups:
            return 0
        producer = app.producer._ensure_producer()  # noqa: SLF001 - the aiokafka producer (pinned Faust 0.15.3)
        sends = []
        for tp, records in groups.items():
            sends.append((await _send_batches(producer, tp[0], tp[1], records), owners[tp]))
    except BaseException:  # not handed to the producer (or only partly): all of it is owed still
        _put_back(taken)
        raise
    if acked:
        results = await asyncio.gather(*(f for futures, _ in sends for f in futures), return_exceptions=True)
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None:
            _put_back(taken)
            raise ChangelogSendError(f"changelog write not acknowledged ({type(failed).__name__}: {failed}); "
                                     f"{sum(len(k) for _, k in taken)} keys kept for the next flush") from failed
        return sum(len(r) for r in groups.values())
    for futures, keys in sends:
        _watch(futures, keys)
    return sum(len(r) for r in groups.values())


def _put_back(taken: list[tuple[TrackedTable, dict[str, int]]]) -> None:
    for table, keys in taken:
        table.restore(keys)


def _watch(futures: list, keys: list[tuple[TrackedTable, str, int]]) -> None:
    """A flush that did not wait: when the broker refuses a batch, its keys are dirty again."""
    state: dict = {"error": None}  # one report per flush

    def done(f: asyncio.Future) -> None:
        _inflight.discard(f)
        err = asyncio.CancelledError("send cancelled") if f.cancelled() else f.exception()
        if err is not None and state["error"] is None:
            state["error"] = err
            by_table: dict[TrackedTable, dict[str, int]] = defaultdict(dict)
            for table, key, partition in keys:
                by_table[table][key] = partition
            for table, ks in by_table.items():
                table.restore(ks)
                table.undelivered += len(ks)
            log.error("changelog write refused (%s: %s): %d keys are sent again before the next commit",
                      type(state["error"]).__name__, state["error"], len(keys))

    for f in futures:
        _inflight.add(f)
        f.add_done_callback(done)


async def settle(app: Any) -> None:
    """Before offsets are committed: every changelog write handed to the producer is acknowledged,
    and what the broker refused is sent again and acknowledged. Raises ChangelogSendError if not."""
    while _inflight:
        await asyncio.wait(list(_inflight))
        await asyncio.sleep(0)  # the delivery callbacks run
    owed = [t for t in _tables if t.undelivered]
    if owed:
        counts = {t: t.undelivered for t in owed}
        await flush(app, *owed, acked=True)
        for t, n in counts.items():
            t.undelivered = max(0, t.undelivered - n)


async def _send_batches(producer: Any, topic: str, partition: int, records: list) -> list:
    """Append records to aiokafka record batches for one partition; returns the delivery futures."""
    futures = []
    batch = producer.create_batch()
    for k, v in records:
        if batch.append(key=k, value=v, timestamp=None) is None:  # full: send it, start another
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
            batch.append(key=k, value=v, timestamp=None)
    futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures


async def send_keyed(app: Any, topic: str, records: list[tuple[bytes, bytes]], acked: bool = False) -> int:
    """Publish keyed records in record batches, partitioned as aiokafka's default partitioner
    (murmur2, as the Java client and our confluent-kafka producers with murmur2_random) would."""
    if not records:
        return 0
    producer = app.producer._ensure_producer()  # noqa: SLF001
    partitions = sorted(await producer.partitions_for(topic))
    groups: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
    part = producer._partitioner  # noqa: SLF001
    for k, v in records:
        groups[part(k, partitions, partitions)].append((k, v))
    futures = []
    for partition, recs in groups.items():
        futures += await _send_batches(producer, topic, partition, recs)
    if acked:
        await asyncio.gather(*futures)
    return len(records)


def at_partition(partition: int, *tables: TrackedTable) -> None:
    for t in tables:
        t.partition = partition
