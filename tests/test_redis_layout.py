"""The lean Redis writer writes Feast's layout byte for byte, with Feast's order check (real Redis)."""

import pytest

from processors import features
from processors.features import FeatureConfig
from tests.feature_data import co_edge, product, reference, search_edge

SHOE = product("B01", "Skechers Women's Go Walk Slip-Resistant Shoe", "walking shoes")
SOCK = product("B02", "Compression Socks for Pregnancy", "socks")
T0 = 1_790_000_000.0


def _rows():
    edges = [search_edge("maternity shoes", SHOE, "used_for_audience", "pregnant women", 0.9, T0),
             search_edge("maternity shoes", SHOE, "used_for_function", "prevent slipping", 0.8, T0 + 1.234567891),
             search_edge("walking shoes", SHOE, "xWant", "stay comfortable", 0.7, T0 + 2),
             co_edge(SHOE, SOCK, "xIs_a", "expecting mothers", 0.8, T0 + 3)]
    by_view = {}
    for rows in reference(edges).values():  # the pure processors' rows per entity
        for view, row in rows.items():
            by_view.setdefault(view, []).append(features.stamp(row, T0 + 10))
    return by_view


def _open(redis, tmp_path, order_check=True):
    from feature_repo.store import open_store

    cfg = FeatureConfig(online="redis", repo_dir=str(tmp_path / "feast"), redis=f"127.0.0.1:{redis.port}",
                        online_order_check=order_check)
    return open_store(cfg, str(tmp_path), redis.port)


def _dump(client) -> dict:
    return {k: client.hgetall(k) for k in sorted(client.keys("*"))}


@pytest.mark.parametrize("order_check", [True, False])
def test_lean_writer_writes_what_feast_writes(redis, tmp_path, order_check):
    from feature_repo.client import Pusher

    store = _open(redis, tmp_path, order_check)
    pusher = Pusher(store)
    assert pusher.lean and not Pusher(store, lean=False).lean  # two different writers compared
    client = store._get_provider().online_store._get_client(store.config.online_store)
    rows = _rows()
    assert {"query_intents", "product_knowledge", "product_subcategory", "co_purchase_reasons"} <= set(rows)
    Pusher(store, lean=False).push(rows, "online")  # Feast's own RedisOnlineStore.online_write_batch
    feast_bytes = _dump(client)
    client.flushdb()
    pusher.push(rows, "online")
    ours = _dump(client)
    assert len(ours) == 5 and ours == feast_bytes  # two queries, two products, the pair: every field equal


def test_order_check_keeps_the_newest_row(redis, tmp_path):
    from feature_repo.client import FeatureReader, Pusher

    store = _open(redis, tmp_path)
    pusher = Pusher(store)
    row = dict(_rows()["product_subcategory"][0])
    old, new = {**row, "subcategory": "old", "row_ts": T0}, {**row, "subcategory": "new", "row_ts": T0 + 1}
    newer = {**row, "subcategory": "newer", "row_ts": T0 + 2}
    pusher.push({"product_subcategory": [new]}, "online")
    pusher.push({"product_subcategory": [old]}, "online")  # stale writer: skipped
    assert FeatureReader(store).product(row["product_id"])["product_subcategory"]["subcategory"] == "new"
    pusher.push({"product_subcategory": [newer, old, new]}, "online")  # one batch: the newest wins
    assert FeatureReader(store).product(row["product_id"])["product_subcategory"]["subcategory"] == "newer"
    pusher.push({"product_subcategory": [{**newer, "subcategory": "same instant"}]}, "online")
    assert FeatureReader(store).product(row["product_id"])["product_subcategory"]["subcategory"] == "newer"
