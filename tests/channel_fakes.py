"""A Faust agent's channel as streams/take.py reads it (its queue, flow control, consumer
generation and unacked set), for unit tests of the micro-batch loop; the integration tests run the
real one against the broker."""

from types import SimpleNamespace

from faust.types import EventT
from mode.utils.queues import FlowControlEvent, ThrowableQueue


class Msg:  # hashable, as Faust's messages are
    def __init__(self, offset, generation_id, topic, key=None, value=b"", partition=0):
        self.offset, self.generation_id, self.topic, self.tracked, self.acked = offset, generation_id, topic, False, False
        self.key, self.value, self.partition = key, value, partition


class Ev:
    def __init__(self, i, generation=1, topic="t", value=b""):
        self.message = Msg(i, generation, topic, value=value)
        self.acks = 0

    def ack(self):
        self.acks += 1


EventT.register(Ev)


class Stream:
    def __init__(self):
        flow = FlowControlEvent()
        flow.resume()
        self.channel = SimpleNamespace(queue=ThrowableQueue(maxsize=1000, flow_control=flow))
        self.unacked = set()
        self.app = SimpleNamespace(flow_control=SimpleNamespace(is_active=lambda: True), consumer_generation_id=1,
                                   topics=SimpleNamespace(acking_topics={"t"}), consumer=SimpleNamespace(unacked=self.unacked))
        self.should_stop = False

    async def maybe_start(self):
        return False

    def put(self, events):
        for e in events:
            self.channel.queue.put_nowait(e)
