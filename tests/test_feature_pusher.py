"""The feature pusher's failures (feature_repo/client.Pusher): what can pass on retry is retried with
bounded backoff until it passes or the worker stops; a row that can never be stored is isolated from
its batch and reported, and the rest is stored."""

import sqlite3
import threading
import time

import pytest

from feature_repo.client import PushStopped, RowsRejected, deterministic, transient
from processors import features
from processors.features import FeatureConfig
from tests.feature_data import product, search_edge

SHOE = product("B01", "Skechers Women's Go Walk Slip-Resistant Shoe", "walking shoes")
T0 = 1_790_000_000.0
QUERIES = [f"shoes for nurses {i}" for i in range(7)]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from feature_repo.store import open_store

    tmp = tmp_path_factory.mktemp("pusher")
    return open_store(FeatureConfig(online="sqlite", repo_dir=str(tmp / "feast")), str(tmp), 0)


def _query_rows(queries=QUERIES) -> list[dict]:
    cfg, out = FeatureConfig(), []
    for q in queries:
        key, c = features.contributions(search_edge(q, SHOE, "used_for_audience", "nurses", 0.9, T0))[0]
        st, _ = features.apply(None, c, cfg)
        out += [features.stamp(row, time.time()) for _, row in features.rows(key, st, cfg)]
    return out


def test_a_row_that_cannot_be_written_is_isolated_and_the_rest_stored(store):
    from feature_repo.client import FeatureReader, Pusher

    rows = _query_rows()
    rows[4]["intents"] = [42]  # no string: protobuf refuses it, every time
    calls = []
    pusher = Pusher(store, retry_max_s=0.2)
    write = pusher._online
    pusher._online = lambda view, chunk: (calls.append(len(chunk)), write(view, chunk))
    with pytest.raises(RowsRejected) as err:
        pusher.push({"query_intents": rows}, "online")
    (bad,) = err.value.rejected
    assert (bad.view, bad.index, bad.row is rows[4]) == ("query_intents", 4, True)
    assert bad.reason.startswith("TypeError") and err.value.stored == len(rows) - 1
    assert len(calls) <= 2 * len(rows)  # halving, not retrying: the bad row is tried once
    reader = FeatureReader(store)
    assert [bool(reader.query(q)) for q in QUERIES] == [i != 4 for i in range(len(QUERIES))]


def test_a_row_the_offline_store_cannot_take_is_isolated_too(store):
    from feature_repo.client import Pusher

    rows = _query_rows(QUERIES[:3])
    rows[1]["row_ts"] = "yesterday"  # no timestamp can be made of it
    with pytest.raises(RowsRejected) as err:
        Pusher(store).push({"query_intents": rows}, "offline")
    assert [(r.index, r.reason.split(":")[0]) for r in err.value.rejected] == [(1, "TypeError")]
    assert err.value.stored == 2


def test_rows_of_an_unknown_view_are_rejected_not_retried(store):
    from feature_repo.client import Pusher

    with pytest.raises(RowsRejected) as err:
        Pusher(store).push({"no_such_view": [{"x": 1}]}, "online")
    assert err.value.rejected[0].view == "no_such_view" and err.value.stored == 0


def test_a_store_that_fails_for_a_while_is_retried_with_backoff_bounded_by_retry_max_s(store):
    from feature_repo.client import Pusher

    failures = [ConnectionRefusedError("redis down")] * 5 + [sqlite3.OperationalError("database is locked")]
    retried, waits = [], []
    pusher = Pusher(store, retry_max_s=0.4, on_retry=lambda what, e: retried.append(type(e).__name__))
    write = pusher._online

    def flaky(view, rows):
        if failures:
            raise failures.pop(0)
        write(view, rows)

    pusher._online = flaky
    wait = pusher.stopping.wait
    pusher.stopping.wait = lambda s: (waits.append(s), wait(0))[1]
    assert pusher.push({"query_intents": _query_rows(QUERIES[:2])}, "online") == 2
    assert retried == ["ConnectionRefusedError"] * 5 + ["OperationalError"]
    assert waits == [0.1, 0.2, 0.4, 0.4, 0.4, 0.4]


def test_an_unknown_failure_is_raised_at_once(store):
    from feature_repo.client import Pusher

    pusher = Pusher(store)
    calls = []
    pusher._online = lambda view, rows: (calls.append(1), (_ for _ in ()).throw(RuntimeError("bug")))
    with pytest.raises(RuntimeError, match="bug"):
        pusher.push({"query_intents": _query_rows(QUERIES[:1])}, "online")
    assert calls == [1]


def test_stop_ends_the_retry_loop_promptly(store):
    from feature_repo.client import Pusher

    pusher = Pusher(store, retry_max_s=30.0)

    def down(view, rows):
        raise ConnectionError("redis down")

    pusher._online = down
    out: list = []
    t = threading.Thread(target=lambda: out.append(_capture(lambda: pusher.push({"query_intents": _query_rows(QUERIES[:1])},
                                                                               "online"))))
    t.start()
    time.sleep(1.0)  # a few retries in: the backoff has grown
    t0 = time.monotonic()
    pusher.stop()
    t.join(5)
    assert not t.is_alive() and time.monotonic() - t0 < 1.0
    assert isinstance(out[0], PushStopped)


def _capture(fn):
    try:
        return fn()
    except Exception as e:  # noqa: BLE001
        return e


def test_what_passes_on_retry_and_what_does_not():
    import redis.exceptions as rx

    for e in (ConnectionRefusedError(), TimeoutError(), OSError(28, "No space left on device"),
              rx.ConnectionError("x"), rx.TimeoutError("x"), rx.BusyLoadingError("x"), rx.ReadOnlyError("x"),
              rx.ResponseError("MISCONF Redis is configured to save RDB snapshots"),
              rx.ResponseError("OOM command not allowed"), sqlite3.OperationalError("database is locked")):
        assert transient(e) and not deterministic(e), e
    for e in (TypeError("bad argument type"), ValueError("surrogates not allowed"), UnicodeEncodeError("utf-8", "\ud800", 0, 1, "x"),
              KeyError("row_ts"), rx.DataError("x")):
        assert deterministic(e) and not transient(e), e
    for e in (RuntimeError("bug"), rx.AuthenticationError("wrong password"), sqlite3.OperationalError("no such table: x"),
              rx.ResponseError("WRONGTYPE")):
        assert not transient(e) and not deterministic(e), e
