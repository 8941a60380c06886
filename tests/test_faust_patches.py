import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from infra import services
from streams import faust_patches
from infra.kafka_compat import end_offsets


def test_fastpath_applies_to_the_pinned_faust():
    import faust.transport.consumer as fc

    assert faust_patches.apply_fastpath()
    assert "is_set" in fc.Consumer._drain_messages.__code__.co_names


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
