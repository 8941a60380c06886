"""Feast's file offline store, fixed for list features and for appends.

Feast 0.67's file (dask) offline store, on `push(..., to=OFFLINE)`:
- reads the Parquet schema back as type strings and maps them to Feast types; Parquet writers name
  list elements "element" (`list<element: string>`), which that map does not know (KeyError), so
  any view with a list feature fails on its second write;
- reads the whole file and writes it again on every push (cost grows with history).

This store keeps each view's offline data as a folder of Parquet parts: a write appends one new
part (written to a hidden temporary name, then renamed, so readers never see half a file), cast to
the schema the feature view declares, with lists written as `list<item: ...>` (the spelling Feast
maps). Reads are the stock ones: dask and pyarrow read a folder as one dataset. Every write that
leaves a view with `compact_parts` small parts merges them into one (`compact()`), so a steady
writer (a part per view per flush) keeps a bounded number of parts. Select it with `offline_store: {type: feature_repo.offline.PartsFileOfflineStore}`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureView, FileSource
from feast.infra.offline_stores.dask import DaskOfflineStore, DaskOfflineStoreConfig
from feast.repo_config import RepoConfig
from feast.value_type import ValueType

_SCALAR = {ValueType.STRING: pa.string(), ValueType.FLOAT: pa.float32(), ValueType.DOUBLE: pa.float64(),
           ValueType.INT64: pa.int64(), ValueType.INT32: pa.int32(), ValueType.BOOL: pa.bool_(),
           ValueType.BYTES: pa.binary(), ValueType.UNIX_TIMESTAMP: pa.timestamp("us", tz="UTC")}
log = logging.getLogger("intentflow.features")


class PartsFileOfflineStoreConfig(DaskOfflineStoreConfig):
    type: Literal["feature_repo.offline.PartsFileOfflineStore"] = "feature_repo.offline.PartsFileOfflineStore"
    compact_parts: int = 64  # merge a view's small parts once it has this many; 0: never
    compact_part_mb: int = 256  # parts of this size or more are not merged again


def arrow_type(value_type: ValueType) -> pa.DataType:
    if value_type.name.endswith("_LIST"):
        return pa.list_(arrow_type(ValueType[value_type.name[:-5]]))
    if value_type not in _SCALAR:
        raise TypeError(f"no Parquet mapping for Feast type {value_type.name}")
    return _SCALAR[value_type]


def view_schema(view: FeatureView, entity_types: dict[str, ValueType] | None = None) -> pa.Schema:
    """The Parquet schema of a view's offline data: join keys, event_timestamp, then features."""
    entity_types = entity_types or {}
    fields = [pa.field(c.name, arrow_type(entity_types.get(c.name, c.dtype.to_value_type())))
              for c in view.entity_columns]
    fields.append(pa.field(view.batch_source.timestamp_field, pa.timestamp("us", tz="UTC")))
    fields += [pa.field(f.name, arrow_type(f.dtype.to_value_type())) for f in view.features]
    return pa.schema(fields)


def folder(config: RepoConfig, source: FileSource) -> Path:
    uri = FileSource.get_uri_for_file_path(repo_path=config.repo_path, uri=source.file_options.uri)
    return Path(str(uri).removeprefix("file://"))


def write_part(path: Path, table: pa.Table) -> Path:
    """Atomically add one part file (readers skip names starting with '.' or '_')."""
    path.mkdir(parents=True, exist_ok=True)
    name = f"part-{uuid.uuid7().hex if hasattr(uuid, 'uuid7') else uuid.uuid4().hex}.parquet"
    tmp = path / f".{name}.tmp"
    pq.write_table(table, tmp, use_compliant_nested_type=False)
    os.replace(tmp, path / name)
    return path / name


def ensure_folder(config: RepoConfig, view: FeatureView) -> None:
    """An empty part with the view's schema, so the folder has a schema before the first write."""
    path = folder(config, view.batch_source)
    if not any(path.glob("part-*.parquet")):
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / ".part-00000000-schema.parquet.tmp"
        pq.write_table(view_schema(view).empty_table(), tmp, use_compliant_nested_type=False)
        os.replace(tmp, path / "part-00000000-schema.parquet")


def _small_parts(path: Path, max_part_bytes: int) -> list[Path]:
    """The parts below the size a merged part may reach (larger ones are merged no more)."""
    parts = []
    for p in sorted(path.glob("part-*.parquet")):
        try:
            if p.stat().st_size < max_part_bytes:
                parts.append(p)
        except FileNotFoundError:  # merged away by another process meanwhile
            pass
    return parts


def compact(config: RepoConfig, view: FeatureView, min_parts: int = 64, max_part_bytes: int = 256 << 20) -> int:
    """Merge a view's small parts (under `max_part_bytes`) into one when there are at least
    `min_parts` of them; returns parts removed. Every row is kept as it was (readers take the
    latest row per key by event_timestamp, as before), so reads return the same before and after.

    Writes go on meanwhile: a part added after the listing is not touched. One process compacts a
    folder at a time (an exclusive lock; others skip). The merged part is in place before the old
    ones go: a reader in between, or a crash, sees rows twice, identical, which point-in-time reads
    resolve to the same values. Parts that reach `max_part_bytes` stay as they are, so the cost of
    a compaction stays bounded instead of growing with the view's history.
    """
    path = folder(config, view.batch_source)
    if len(_small_parts(path, max_part_bytes)) < min_parts:
        return 0
    with open(path / ".compact.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another writer is compacting this view
            return 0
        parts = _small_parts(path, max_part_bytes)  # again, under the lock: the other may have just finished
        if len(parts) < min_parts:
            return 0
        schema = view_schema(view)
        write_part(path, pa.concat_tables([pq.read_table(p).cast(schema) for p in parts]))
        for p in parts:
            p.unlink()
    log.info("offline %s: %d parts merged into one", view.name, len(parts))
    return len(parts)


class PartsFileOfflineStore(DaskOfflineStore):
    @staticmethod
    def offline_write_batch(config: RepoConfig, feature_view: FeatureView, table: pa.Table,
                            progress: Optional[Callable[[int], Any]]) -> None:
        """Append one part; then, when the view has `compact_parts` small parts, merge them
        (INTENTFLOW_FEATURES__OFFLINE_COMPACT_PARTS), so parts per view stay bounded."""
        assert isinstance(feature_view.batch_source, FileSource)
        schema = view_schema(feature_view)
        missing = set(schema.names) - set(table.column_names)
        if missing:
            raise ValueError(f"offline write to {feature_view.name}: missing columns {sorted(missing)}")
        write_part(folder(config, feature_view.batch_source), table.select(schema.names).cast(schema))
        store = config.offline_store
        if getattr(store, "compact_parts", 0):
            compact(config, feature_view, store.compact_parts, store.compact_part_mb << 20)
        if progress:
            progress(table.num_rows)
