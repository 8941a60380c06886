"""A lean writer of Feast's Redis online layout, for the feature writer's hot path.

Feast 0.67's RedisOnlineStore stores a row as one hash per entity: key = serialized entity key +
project, field mmh3("view:feature") -> serialized ValueProto, field "_ts:view" -> serialized
Timestamp. Its `online_write_batch` recomputes every field's hash for every row and converts
times through datetimes; here the field names are hashed once per view and the rows go straight
from our dicts to bytes. The bytes written are exactly Feast's (a test compares them key by key),
so `get_online_features` reads them as its own. The order check is Feast's too (read the stored
timestamps in one pipeline, write only newer rows, at most one row per entity per batch).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable

from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.infra.online_stores.redis import _versioned_fv_name
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp


def entity_key(join_key: str, value: str) -> EntityKey:
    return EntityKey(join_keys=[join_key], entity_values=[Value(string_val=value)])


class RedisLayoutWriter:
    def __init__(self, config: Any, client: Any, view: Any, converters: list[tuple[str, Callable[[Any], Value]]]):
        """`config`: the store's RepoConfig; `client`: Feast's redis client for it; `view`: the
        FeatureView; `converters`: (feature name, value -> ValueProto) for each feature."""
        self.config, self.client = config, client
        self.project, self.version = config.project, config.entity_key_serialization_version
        self.ttl = config.online_store.key_ttl_seconds
        self.check = not config.online_store.skip_dedup
        name = _versioned_fv_name(view, config)
        self.ts_field = f"_ts:{name}"
        self.join_key = view.entity_columns[0].name
        self.fields = [(f, _mmh3(f"{name}:{f}"), conv) for f, conv in converters]

    def _key(self, entity: str) -> bytes:
        return _redis_key(self.project, entity_key(self.join_key, entity), entity_key_serialization_version=self.version)

    def write(self, rows: list[dict]) -> int:
        """Write rows (dicts with the join key, `row_ts` and any of the features); returns rows written."""
        keys = [self._key(r[self.join_key]) for r in rows]
        stamps = []
        for r in rows:
            ts = Timestamp()
            ts.FromDatetime(datetime.fromtimestamp(r["row_ts"], tz=timezone.utc))  # as Feast rounds it
            stamps.append(ts)
        stored: list = [None] * len(rows)
        if self.check:
            with self.client.pipeline(transaction=False) as pipe:
                for k in keys:
                    pipe.hget(k, self.ts_field)
                stored = pipe.execute()
        latest: dict[bytes, int] = {}
        written = 0
        with self.client.pipeline(transaction=False) as pipe:
            for key, ts, prev, row in zip(keys, stamps, stored, rows):
                if self.check:
                    new = ts.seconds * 1_000_000_000 + ts.nanos
                    seen = latest.get(key, 0)
                    if prev:
                        old = Timestamp.FromString(prev)
                        seen = max(seen, old.seconds * 1_000_000_000 + old.nanos)
                    if seen and new <= seen:  # older than, or as old as, what is stored: skip
                        continue
                    latest[key] = new
                mapping = {self.ts_field: ts.SerializeToString()}
                for f, field, conv in self.fields:
                    if f in row:
                        mapping[field] = conv(row[f]).SerializeToString()
                pipe.hset(key, mapping=mapping)
                if self.ttl:
                    pipe.expire(name=key, time=self.ttl)
                written += 1
            if written:
                pipe.execute()
        return written
