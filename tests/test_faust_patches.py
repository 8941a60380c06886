import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from infra import services
from streams import faust_patches
from infra.kafka_compat import end_offsets


def test_fastpath_applies_to_the_pinned_faust():
    import faust.transport.consumer as fc

    assert faust_patches.apply_fastpath()
    names = fc.Consumer._drain_messages.__code__.co_names
    assert "is_set" in names and "_intentflow_refetch_gap" in names and "_add_gap" not in names


def test_a_gap_is_fetched_again_before_faust_commits_over_it():
    """Found by the kill -9 test: a taken-over partition's fetch position ran ahead of what reached
    the agents and Faust recorded the missing offsets as a gap, committed over them: lost. The first
    sight of a gap now seeks back to it; only a refetch that shows the same gap records it."""
    import asyncio

    calls: list = []

    class Consumer:
        _read_offset: dict = {}

        async def seek(self, tp, offset):  # as Faust's: the target counts as read
            calls.append(("seek", tp.partition, offset))
            self._read_offset[tp] = offset

        async def _add_gap(self, tp, first, last):
            calls.append(("gap", tp.partition, first, last))

    from faust.types import TP

    c, tp = Consumer(), TP("behavior.co_purchase", 0)

    async def run():
        out = [await faust_patches.refetch_gap(c, tp, 116, 266)]  # read 116, then 266: seek back
        assert c._read_offset[tp] == 116  # the last handed over, not the seek's target
        out += [await faust_patches.refetch_gap(c, tp, 116, 267),  # the rest of that fetch: skipped
                await faust_patches.refetch_gap(c, tp, 116, 268),
                await faust_patches.refetch_gap(c, tp, 116, 266),  # the refetch shows the same gap: real
                await faust_patches.refetch_gap(c, tp, 300, 305),  # another gap: seek back again
                await faust_patches.refetch_gap(c, tp, 302, 305)]  # the refetch handed 301-302 over, then a gap
        return out

    assert asyncio.run(run()) == [True, True, True, False, True, True]
    assert calls == [("seek", 0, 117), ("gap", 0, 117, 266), ("seek", 0, 301), ("seek", 0, 303)]


@pytest.mark.integration
def test_true_end_offsets_where_the_broker_under_reports(broker):
    services.ensure_topics(broker, ["t"], 1)
    p = Producer({"bootstrap.servers": broker, "linger.ms": 100})
    for i in range(5):  # one record batch of five
        p.produce("t", b"x", partition=0)
    p.flush()
    c = Consumer({"bootstrap.servers": broker, "group.id": "g"})
    reported = c.get_watermark_offsets(TopicPartition("t", 0), timeout=5)[1]
    c.close()
    assert end_offsets(broker, ["t"]) == {("t", 0): 5}
    assert reported in (1, 5)  # Tansu 0.6 says 1; a correct broker 5


def test_raw_schema_hands_over_the_bytes_faust_raw_codec_gives():
    import asyncio

    import faust
    from faust.types import TP
    from faust.types.tuples import Message

    app = faust.App("raw-schema-test", broker="kafka://127.0.0.1:1")
    msg = Message(topic="t", partition=0, offset=7, timestamp=0.0, timestamp_type=0, headers=[("h", b"1")],
                  key=b"k\xff", value=b'{"a": 1}', checksum=None, tp=TP("t", 0))
    ours = app.topic("t", schema=faust_patches.RawSchema())
    stock = app.topic("t", key_serializer="raw", value_serializer="raw")
    a, b = (asyncio.run(t.decode(msg, propagate=True)) for t in (ours, stock))
    assert (a.key, a.value, a.message) == (b.key, b.value, b.message) == (b"k\xff", b'{"a": 1}', msg)
    assert (ours.key_serializer, ours.value_serializer) == ("raw", "raw")  # sends stay raw too


def test_event_sensors_can_be_skipped():
    import faust

    app = faust.App("sensor-test", broker="kafka://127.0.0.1:1")
    calls = []

    class Spy(faust.Sensor):
        def on_stream_event_in(self, *a):
            calls.append("in")

        def on_commit_initiated(self, consumer):
            calls.append("commit")

    app.sensors.add(Spy())
    app.sensors.on_stream_event_in("tp", 1, None, None)
    faust_patches.skip_event_sensors(app)
    app.sensors.on_stream_event_in("tp", 2, None, None)
    app.sensors.on_commit_initiated(None)
    assert calls == ["in", "commit"]


def test_the_worker_refuses_a_faust_release_whose_internals_were_not_read():
    import pytest

    from streams import faust_patches

    faust_patches.check_faust_version()  # the installed, pinned one
    with pytest.raises(RuntimeError, match="0.16.0"):
        faust_patches.check_faust_version("0.16.0")


def test_partitions_the_group_never_committed_are_sought_to_the_start_after_an_assignment():
    """Found by `intentflow bench faults`: a worker killed before a partition's first commit and
    restarted had its fetch position left after messages dropped during the rebalance (aiokafka's
    seek_to_committed does not seek a partition without a committed offset, or at 0), so it never
    handled them. Those stream partitions are now sought to the start; table changelogs and
    partitions with a committed offset are left to Faust."""
    import asyncio
    from types import SimpleNamespace

    import faust.transport.drivers.aiokafka as fa
    from aiokafka.structs import TopicPartition as TP

    committed = {TP("features.rows", 0): None, TP("features.rows", 1): 7, TP("knowledge.edges", 2): 0,
                 TP("app-entity_knowledge-changelog", 0): None}
    sought: list = []

    class Consumer:
        async def seek_to_committed(self):
            return dict(committed)

        async def seek_to_beginning(self, *tps):
            sought.extend(tps)

    class Thread:
        app = SimpleNamespace(tables=SimpleNamespace(changelog_topics={"app-entity_knowledge-changelog"}),
                              conf=SimpleNamespace(consumer_auto_offset_reset="earliest"))
        consumer = Consumer()

        def _ensure_consumer(self):
            return self.consumer

        async def call_thread(self, fn, *args):
            return await fn(*args)

    faust_patches.seek_uncommitted_to_start()
    assert asyncio.run(fa.AIOKafkaConsumerThread.seek_to_committed(Thread())) == committed
    assert sought == [TP("features.rows", 0), TP("knowledge.edges", 2)]
    assert faust_patches.uncommitted({TP("t", 0): 3}, set()) == []


def test_an_offset_acknowledged_twice_does_not_hold_the_commit_back():
    """Found by the kill -9 test: after a restart a partition's acknowledged offsets held duplicates
    (a gap Faust filled in, then delivered again after the seek), and Faust's _new_offset stopped its
    run at each one: the commit crawled one offset per commit interval. The patched one takes the
    whole run of distinct offsets, and still fills gaps and waits for a missing head."""
    from collections import defaultdict
    from types import SimpleNamespace

    import faust.transport.consumer as fc
    from intervaltree import IntervalTree

    tp = ("t", 0)
    c = SimpleNamespace(_acked={tp: [10, 10, 11, 11, 12, 15, 16]}, _gap=defaultdict(IntervalTree),
                        _committed_offset={tp: 10}, _acked_index={tp: {10, 11, 12, 15, 16}})
    c._gap[tp].addi(13, 15)  # offsets 13 and 14 were skipped on the wire (Faust's gap)
    assert faust_patches.new_offset(c, tp) == 17
    assert c._acked[tp] == [] and c._acked_index[tp] == set() and not c._gap[tp]
    # the run must start right after the committed offset: a missing head holds the commit
    c._acked[tp], c._acked_index[tp], c._committed_offset[tp] = [20, 21, 21], {20, 21}, 17
    assert faust_patches.new_offset(c, tp) is None and c._acked[tp] == [20, 21]
    faust_patches.commit_whole_runs()
    assert fc.Consumer._new_offset is faust_patches.new_offset
    # Faust's own stops at the first duplicate: one offset per commit
    c._acked[tp], c._acked_index[tp], c._committed_offset[tp] = [17, 17, 18, 19], {17, 18, 19}, 17
    assert faust_patches.faust_new_offset(c, tp) == 18
    c._acked[tp], c._acked_index[tp] = [17, 17, 18, 19], {17, 18, 19}
    assert fc.Consumer._new_offset(c, tp) == 20


def test_a_partition_fetched_past_what_its_agents_got_is_fetched_again():
    """Found by the kill -9 test: after a takeover a partition's fetch position was past messages no
    agent got and no newer message came to show the gap; it stayed behind its end. FetchWatch seeks
    it back once it has looked twice and seen no progress; a partition that moves is left alone."""
    import asyncio
    from types import SimpleNamespace

    from faust.types import TP

    stuck, moving, idle, log_tp = TP("behavior.search_buy", 3), TP("behavior.search_buy", 1), \
        TP("behavior.search_buy", 2), TP("app-sb_pairs-changelog", 3)
    # found by the restart test (clean clone, 2026-11-30): a partition the group never committed and
    # no agent read, fetched past its 2 messages; "what the agents should get" is then its start
    fresh = TP("features.rows", 0)
    positions = {stuck: 1011, moving: 500, idle: 41, log_tp: 9, fresh: 2}
    sought: list = []

    class Consumer:
        _paused_partitions: set = set()
        _read_offset = {stuck: 584, moving: 300, idle: 40}
        _committed_offset = {stuck: 585, moving: 290, idle: 41}

        def assignment(self):
            return set(positions)

        async def position(self, tp):
            return positions[tp]

        async def earliest_offsets(self, *tps):
            raise AssertionError("not asked: it took 11 s a look from the timer")

        async def seek(self, tp, offset):
            sought.append((tp.partition, offset))
            self._read_offset[tp] = offset

    app = SimpleNamespace(consumer=Consumer(), tables=SimpleNamespace(changelog_topics={"app-sb_pairs-changelog"}),
                          conf=SimpleNamespace(consumer_auto_offset_reset="earliest"))
    watch = faust_patches.FetchWatch()
    assert asyncio.run(watch.check(app)) == [] and sought == []  # the first look only notes
    app.consumer._read_offset[moving] = 350  # handed over since: healthy
    got = sorted((tp.topic, tp.partition, a, b) for tp, a, b in asyncio.run(watch.check(app)))
    assert got == [("behavior.search_buy", 3, 585, 1011), ("features.rows", 0, 0, 2)]
    assert sorted(sought) == [(0, 0), (3, 585)] and app.consumer._read_offset[stuck] == 584
    # a never-read partition whose log starts past 0 (retention): sought back once, then left alone
    positions[fresh] = 7
    sought.clear()
    for _ in range(2):
        asyncio.run(watch.check(app))
    assert [x for x in sought if x[0] == 0] == [(0, 0)]  # (the other partitions here are starved again)
    for _ in range(3):
        asyncio.run(watch.check(app))
    assert [x for x in sought if x[0] == 0] == [(0, 0)]


def test_the_livelock_check_skips_a_partition_whose_offset_is_being_reset():
    """Found by the test of a rebalance while the agents' queues are full: Faust's livelock check
    read aiokafka 0.14's `position` of a partition just assigned without a committed offset (or
    sought to its start) and the AssertionError crashed the worker. Such partitions are skipped
    until they have a position; a positioned one is checked as Faust checks it."""
    import asyncio
    from types import SimpleNamespace

    import faust.transport.drivers.aiokafka as fa
    import pytest
    from aiokafka.consumer.subscription_state import TopicPartitionState
    from faust.types import TP

    from streams import faust_patches

    async def states():
        return TopicPartitionState(None), TopicPartitionState(None)

    being_reset, positioned = asyncio.run(states())  # its futures want a running loop
    positioned._position = 42
    by_tp = {("t", 0): being_reset, ("t", 1): positioned}
    subscription = SimpleNamespace(assignment=SimpleNamespace(
        state_value=lambda tp: by_tp.get((tp.topic, tp.partition))))
    consumer = SimpleNamespace(_fetcher=SimpleNamespace(_subscriptions=SimpleNamespace(subscription=subscription)))
    checked: list = []
    monitor = SimpleNamespace(stream_inbound_time={})
    thread = SimpleNamespace(
        _ensure_consumer=lambda: consumer, time_started=0.0, tp_stream_timeout_secs=1e9,
        _verify_aiokafka_event_path=lambda now, tp: checked.append(tp) and False,
        consumer=SimpleNamespace(app=SimpleNamespace(monitor=monitor, topics=SimpleNamespace(acks_enabled_for=lambda t: True))))
    unpatched = fa.AIOKafkaConsumerThread.verify_event_path
    if not faust_patches._verify_guarded:  # noqa: SLF001 - Faust's own, on the partition being reset
        with pytest.raises(AssertionError):
            unpatched(thread, 1.0, TP("t", 0))
        checked.clear()
    faust_patches.verify_only_positioned()
    verify = fa.AIOKafkaConsumerThread.verify_event_path
    assert verify(thread, 1.0, TP("t", 0)) is None and checked == []  # skipped
    assert verify(thread, 1.0, TP("t", 2)) is None and checked == []  # no longer assigned: skipped
    being_reset._position = 0  # the reset is done: now it is checked
    verify(thread, 1.0, TP("t", 0))
    verify(thread, 1.0, TP("t", 1))
    assert checked == [TP("t", 0), TP("t", 1)]


def test_the_stream_partitions_are_resumed_after_their_seek_right_before_the_flow():
    """Found by the test of a rebalance while the agents' queues are full: Faust resumed the stream
    partitions before seeking them, so messages fetched during the seek were handed to the queues,
    then emptied by the flow's resume (a worker stalled, 8 offsets never acknowledged) or handled out
    of order. Now: seek, resume the partitions, resume the flow, with no await in between."""
    import asyncio
    from types import SimpleNamespace as NS

    import faust.tables.recovery as fr

    from streams import faust_patches

    faust_patches.seek_before_resuming_streams()
    calls: list = []

    async def perform_seek():
        calls.append("perform_seek")

    async def nothing(*a, **k):
        return None

    async def wait(coro, timeout=None):
        await coro

    stream_tp, changelog_tp = ("behavior.search_buy", 0), ("intentflow-sb_pairs-changelog", 0)
    consumer = NS(assignment=lambda: {stream_tp, changelog_tp}, perform_seek=perform_seek,
                  resume_partitions=lambda tps: calls.append(("resume_partitions", sorted(tps))),
                  resume_flow=lambda: calls.append("resume_flow"))
    app = NS(consumer=consumer, on_rebalance_complete=NS(send=nothing), consumer_generation_id=7,
             conf=NS(broker_request_timeout=1.0), flow_control=NS(resume=lambda: calls.append("flow_control.resume")),
             _fetcher=NS(maybe_start=nothing), assignor=NS(assigned_standbys=lambda: set()),
             on_rebalance_end=lambda: None)
    log = NS(info=lambda *a: None, dev=lambda *a: None, warning=lambda *a: None)
    for name in ("on_recovery_completed", "_resume_streams"):
        calls.clear()
        recovery = NS(app=app, log=log, _set_recovery_ended=lambda: None, actives_for_table={},
                      standbys_for_table={}, _is_changelog_tp=lambda tp: tp[0].endswith("-changelog"), _wait=wait,
                      completed=NS(set=lambda: calls.append("completed")),
                      tables=NS(values=lambda: [], on_actives_ready=lambda: None, on_standbys_ready=lambda: None))
        asyncio.run(getattr(fr.Recovery, name)(recovery, 7))
        assert calls == ["perform_seek", ("resume_partitions", [stream_tp]), "completed", "flow_control.resume",
                         "resume_flow"], (name, calls)
    with __import__("pytest").raises(RuntimeError, match="not the source"):
        faust_patches.resume_after_seek("async def f(self):\n    self.completed.set()\n", "f")



def test_after_the_seek_of_a_rebalance_the_committed_offset_is_not_taken_as_handed_over():
    """Found by `bench faults`: Faust's perform_seek records the committed offset as read, so a
    partition fetched one message past its commit, that message handed to no agent, looked healthy
    to FetchWatch and stayed one message behind for good. After the patched seek the read offset is
    the one before, and FetchWatch fetches that message again."""
    import asyncio
    from types import SimpleNamespace

    import faust.transport.consumer as fc
    from aiokafka import TopicPartition
    from faust.types import TP

    committed = {TopicPartition("behavior.co_purchase", 2): 2, TopicPartition("behavior.co_purchase", 0): 0,
                 TopicPartition("behavior.co_purchase", 1): None}

    class Consumer:
        _paused_partitions: set = set()

        def __init__(self):
            self._read_offset, self._committed_offset, self.sought = {}, {}, []

        async def seek_to_committed(self):
            return committed

        def assignment(self):
            return {TP("behavior.co_purchase", p) for p in range(3)}

        async def position(self, tp):
            return {2: 3, 0: 0, 1: None}[tp.partition]  # partition 2 fetched past offset 2

        async def seek(self, tp, offset):
            self.sought.append((tp.partition, offset))
            self._read_offset[tp] = offset

    c = Consumer()
    asyncio.run(faust_patches.perform_seek(c))
    tp2, tp0 = TP("behavior.co_purchase", 2), TP("behavior.co_purchase", 0)
    assert c._read_offset == {tp2: 1, tp0: None, TP("behavior.co_purchase", 1): None}
    assert c._committed_offset == {tp2: 2, tp0: None}  # as Faust records them (0: none)
    app = SimpleNamespace(consumer=c, tables=SimpleNamespace(changelog_topics=set()),
                          conf=SimpleNamespace(consumer_auto_offset_reset="earliest"))
    watch = faust_patches.FetchWatch()
    asyncio.run(watch.check(app))
    asyncio.run(watch.check(app))  # seen twice with nothing handed over
    assert c.sought == [(2, 2)] and c._read_offset[tp2] == 1
    faust_patches.nothing_read_at_the_seek()
    assert fc.Consumer.perform_seek is faust_patches.perform_seek


def test_a_partition_whose_handed_over_message_no_agent_holds_is_fetched_again_from_its_commit():
    """The case FetchWatch's position check cannot see: the position is right after the last message
    handed over, but the message at the committed offset is in no agent's queue, not taken, not
    acknowledged (lost between the consumer and the agents). Fetched again once looked at twice with
    no commit between; a partition whose message an agent holds is left alone."""
    import asyncio
    from types import SimpleNamespace

    from faust.types import TP

    lost, taken, queued, acked, moving = (TP("behavior.search_buy", p) for p in range(5))
    committed = {lost: 10, taken: 20, queued: 30, acked: 40, moving: 50}

    class Msg:
        def __init__(self, tp, offset):
            self.tp, self.offset = tp, offset

    class Consumer:
        _paused_partitions: set = set()

        def __init__(self):
            self._read_offset = {lost: 12, taken: 21, queued: 31, acked: 40, moving: 55}
            self._committed_offset = dict(committed)
            self._acked_index = {acked: {40}}
            self.unacked = {Msg(taken, 20), Msg(lost, 11)}  # an agent took 20; 11 but not 10 of `lost`
            self.sought = []

        def assignment(self):
            return set(committed)

        async def position(self, tp):
            return self._read_offset[tp] + 1

        async def seek(self, tp, offset):
            self.sought.append((tp.partition, offset))

    c = Consumer()
    # the topic's channel delivers to its subscribers' queues (the agent's iterator: Faust's Channel.put)
    agent_iterator = SimpleNamespace(_queue=SimpleNamespace(_queue=[SimpleNamespace(message=Msg(queued, 30))]))
    channel = SimpleNamespace(_queue=None, _subscribers=[agent_iterator])
    app = SimpleNamespace(consumer=c, tables=SimpleNamespace(changelog_topics=set()),
                          conf=SimpleNamespace(consumer_auto_offset_reset="earliest"),
                          topics=SimpleNamespace(_topic_name_index={"behavior.search_buy": [channel]}))
    watch = faust_patches.FetchWatch()
    assert asyncio.run(watch.check(app)) == []  # the first look only notes
    c._read_offset[moving] = 60  # handed over more since
    c._committed_offset[moving] = 56  # and committed
    got = asyncio.run(watch.check(app))
    assert [(tp.partition, a, b) for tp, a, b in got] == [(0, 10, 13)] and c.sought == [(0, 10)]
    assert c._read_offset[lost] == 9  # nothing of it handed over since the seek
