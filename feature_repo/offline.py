"""Feast's file offline store, fixed for list features and for appends.

Feast 0.67's file (dask) offline store, on `push(..., to=OFFLINE)`:
- reads the Parquet schema back as type strings and maps them to Feast types; Parquet writers name
  list elements "element" (`list<element: string>`), which that map does not know (KeyError), so
  any view with a list feature fails on its second write;
- reads the whole file and writes it again on every push (cost grows with history).

This store keeps each view's offline data as a folder of Parquet parts: a write appends one new
part (written to a hidden temporary name, then renamed, so readers never see half a file), cast to
the schema the feature view declares, with lists written as `list<item: ...>` (the spelling Feast
maps). Reads are the stock ones: dask and pyarrow read a folder as one dataset. `compact()` merges
parts. Select it with `offline_store: {type: feature_repo.offline.PartsFileOfflineStore}`.
"""

from __future__ import annotations

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


class PartsFileOfflineStoreConfig(DaskOfflineStoreConfig):
    type: Literal["feature_repo.offline.PartsFileOfflineStore"] = "feature_repo.offline.PartsFileOfflineStore"


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


def compact(config: RepoConfig, view: FeatureView, min_parts: int = 64) -> int:
    """Merge a view's parts into one when there are at least `min_parts`; returns parts removed.

    The merged part is in place before the old ones go: a crash in between leaves duplicate
    identical rows, which point-in-time reads resolve to the same values.
    """
    path = folder(config, view.batch_source)
    parts = sorted(p for p in path.glob("part-*.parquet"))
    if len(parts) < min_parts:
        return 0
    table = pa.concat_tables([pq.read_table(p).cast(view_schema(view)) for p in parts])
    write_part(path, table)
    for p in parts:
        p.unlink()
    return len(parts)


class PartsFileOfflineStore(DaskOfflineStore):
    @staticmethod
    def offline_write_batch(config: RepoConfig, feature_view: FeatureView, table: pa.Table,
                            progress: Optional[Callable[[int], Any]]) -> None:
        assert isinstance(feature_view.batch_source, FileSource)
        schema = view_schema(feature_view)
        missing = set(schema.names) - set(table.column_names)
        if missing:
            raise ValueError(f"offline write to {feature_view.name}: missing columns {sorted(missing)}")
        write_part(folder(config, feature_view.batch_source), table.select(schema.names).cast(schema))
        if progress:
            progress(table.num_rows)
