"""Faust tables as plain mappings for the pure processors, with one changelog write per key per batch.

Faust writes a changelog message on every `table[key] = value`; a micro-batch of events often
touches the same key many times (popular pairs), so we write through to the table's store and
send each touched key's final value once, to the partition of the event that touched it.

The writes go straight to the producer (`changelog_topic.send`), not through Faust's send_soon
buffer: Faust 0.15 flushes that buffer before committing offsets with a 0.1 s timeout and commits
anyway when it expires, so under load a crash lost state of committed events (found by the
kill -9 test). The producer itself is flushed completely before every commit.
"""

from __future__ import annotations

from typing import Any, Iterator, MutableMapping


class TrackedTable(MutableMapping[str, Any]):
    def __init__(self, table: Any) -> None:
        self.table = table
        self.partition: int | None = None  # partition of the event being processed
        self._dirty: dict[str, int] = {}

    @property
    def data(self) -> MutableMapping[str, Any]:
        return self.table.data

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

    def delete(self, key: str, partition: int) -> None:
        self.data.pop(key, None)
        self._dirty[key] = partition

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    async def flush(self) -> int:
        n = len(self._dirty)
        topic, t = self.table.changelog_topic, self.table
        for key, partition in self._dirty.items():
            value = self.data.get(key)
            await topic.send(key=key, value=value, partition=partition, key_serializer=t.key_serializer,
                             value_serializer="raw" if value is None else t.value_serializer)
        self._dirty.clear()
        return n


def at_partition(partition: int, *tables: TrackedTable) -> None:
    for t in tables:
        t.partition = partition
