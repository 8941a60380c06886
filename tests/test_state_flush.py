"""Changelog writes of the tracked tables (streams/state.py): a key is owed to the changelog until
the broker has acknowledged it, so a send that fails once loses nothing."""

import asyncio
import json

import pytest

from streams import state
from streams.state import ChangelogSendError, TrackedTable


class Batch:
    def __init__(self):
        self.records = []

    def append(self, key, value, timestamp):
        self.records.append((key, value))
        return object()  # room left (aiokafka returns metadata, None when full)


class Producer:
    """aiokafka's batch API as streams.state uses it; `fail` says what the next sends do."""

    def __init__(self):
        self.fail: list[str] = []  # per send_batch: "raise" (at once), "refuse" (delivery fails), "" (ok)
        self.delivered: list[tuple[str, int, bytes, bytes | None]] = []
        self.pending: list[tuple[asyncio.Future, str, int, Batch, str]] = []

    def create_batch(self):
        return Batch()

    async def send_batch(self, batch, topic, *, partition):
        mode = self.fail.pop(0) if self.fail else ""
        if mode == "raise":
            raise ConnectionError("broker unreachable")
        fut = asyncio.get_running_loop().create_future()
        self.pending.append((fut, topic, partition, batch, mode))
        return fut

    def deliver(self):
        """The broker answers every pending batch."""
        for fut, topic, partition, batch, mode in self.pending:
            if mode == "refuse":
                fut.set_exception(RuntimeError("NotEnoughReplicas"))
            else:
                self.delivered += [(topic, partition, k, v) for k, v in batch.records]
                fut.set_result(None)
        self.pending.clear()


class App:
    def __init__(self):
        self.kafka = Producer()
        self.producer = self

    def _ensure_producer(self):
        return self.kafka


class Table:
    def __init__(self, name):
        self.data = {}
        self.changelog_topic = type("T", (), {"get_topic_name": lambda _: f"{name}-changelog"})()


async def _flush_delivering(app, *tables, acked):
    task = asyncio.ensure_future(state.flush(app, *tables, acked=acked))
    while not task.done():
        await asyncio.sleep(0)
        app.kafka.deliver()
    return await task


def test_acked_flush_that_fails_once_keeps_its_keys_for_the_next_flush():
    async def run():
        app, t = App(), TrackedTable(Table("pairs"))
        t.put("a", {"n": 1}, 0)
        t.put("b", {"n": 2}, 1)
        app.kafka.fail = ["refuse", ""]  # one changelog partition refused, the other accepted
        with pytest.raises(ChangelogSendError):
            await _flush_delivering(app, t, acked=True)
        assert sorted(t.touched()) == ["a", "b"]  # nothing forgotten
        t.put("a", {"n": 3}, 0)  # touched again meanwhile: the newest value goes
        assert await _flush_delivering(app, t, acked=True) == 2
        assert t.touched() == []
        last = {k: v for _, _, k, v in app.kafka.delivered}
        assert json.loads(last[b'"a"']) == {"n": 3} and json.loads(last[b'"b"']) == {"n": 2}

    asyncio.run(run())


def test_a_send_the_producer_refuses_at_once_raises_and_keeps_the_keys():
    async def run():
        app, t = App(), TrackedTable(Table("pairs"))
        t.put("a", {"n": 1}, 0)
        app.kafka.fail = ["raise"]
        with pytest.raises(ConnectionError):
            await state.flush(app, t)
        assert t.touched() == ["a"]
        await _flush_delivering(app, t, acked=False)
        assert t.touched() == [] and app.kafka.delivered[0][2] == b'"a"'

    asyncio.run(run())


def test_a_write_refused_after_an_unacked_flush_is_sent_again_before_the_commit():
    async def run():
        app, t = App(), TrackedTable(Table("pairs"))
        t.put("a", {"n": 1}, 2)
        app.kafka.fail = ["refuse"]
        assert await state.flush(app, t) == 1  # handed to the producer; the agent goes on
        assert t.touched() == []
        app.kafka.deliver()  # ... and the broker refuses it
        await asyncio.sleep(0)
        assert t.touched() == ["a"] and t.undelivered == 1
        settle = asyncio.ensure_future(state.settle(app))  # what Faust awaits before committing offsets
        while not settle.done():
            await asyncio.sleep(0)
            app.kafka.deliver()
        await settle
        assert t.touched() == [] and t.undelivered == 0
        assert app.kafka.delivered == [("pairs-changelog", 2, b'"a"', b'{"n":1}')]

    asyncio.run(run())


def test_settle_raises_when_the_resend_fails_too():
    async def run():
        app, t = App(), TrackedTable(Table("pairs"))
        t.put("a", {"n": 1}, 0)
        app.kafka.fail = ["refuse", "refuse"]
        await state.flush(app, t)
        app.kafka.deliver()
        await asyncio.sleep(0)
        with pytest.raises(ChangelogSendError):
            await _settle_delivering(app)
        assert t.touched() == ["a"] and t.undelivered == 1  # still owed: the commit does not happen

    async def _settle_delivering(app):
        task = asyncio.ensure_future(state.settle(app))
        while not task.done():
            await asyncio.sleep(0)
            app.kafka.deliver()
        return await task

    asyncio.run(run())


def test_faust_settles_the_changelog_before_it_commits_offsets(monkeypatch):
    import faust.transport.consumer as fc

    from streams import faust_patches

    committed = []

    async def original(self, offsets, start_new_transaction=True):
        committed.append(offsets)
        return True

    monkeypatch.setattr(fc.Consumer, "_commit_offsets", original)
    monkeypatch.setattr(faust_patches, "_settle_applied", False)
    calls = []

    async def settle(app):
        calls.append(app)
        if len(calls) == 1:
            raise ChangelogSendError("refused")

    faust_patches.settle_before_commit(settle)
    consumer = type("C", (), {"app": "the app"})()
    with pytest.raises(ChangelogSendError):
        asyncio.run(fc.Consumer._commit_offsets(consumer, {"tp": 5}))
    assert committed == []  # offsets stay where they were
    assert asyncio.run(fc.Consumer._commit_offsets(consumer, {"tp": 5})) is True
    assert committed == [{"tp": 5}] and calls == ["the app", "the app"]
