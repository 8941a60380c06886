"""streams.take: micro-batches straight from a channel queue (units; the workers' integration tests
run it against the real broker: exact pairs, kill -9, rebalances)."""

import asyncio

import pytest

from streams import take as take_mod
from tests.channel_fakes import Ev, Stream


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_batches_by_size_then_by_time_and_acks_after_the_next_request():
    async def main():
        s = Stream()
        evs = [Ev(i) for i in range(5)]
        s.put(evs)
        it = take_mod.take(s, 3, 0.05)
        first = await it.__anext__()
        assert [e.message.offset for e in first] == [0, 1, 2] and all(e.acks == 0 for e in first)
        assert all(e.message.tracked for e in first) and len(s.unacked) == 3  # tracked until acked
        second = await it.__anext__()  # the remaining two, after the 50 ms window
        assert [e.message.offset for e in second] == [3, 4]
        assert [e.acks for e in evs] == [1, 1, 1, 0, 0]
        s.put([Ev(9)])
        await it.__anext__()
        assert [e.acks for e in evs] == [1] * 5

    run(main())


def test_events_of_an_old_generation_are_dropped_not_acked_nor_yielded():
    """Faust acks such an event; its offset then sits in the list the commit is made from, and the
    commit can pass it before its copy from the committed offset is handled (a crash then loses
    it). Dropped: untracked, never acked, so it is not committed until that copy is handled."""
    async def main():
        s = Stream()
        old, new = Ev(0, generation=0), Ev(1)
        s.unacked.add(old.message)  # tracked in a batch before the rebalance
        s.put([old, new])
        got = await take_mod.take(s, 10, 0.02).__anext__()
        assert got == [new] and old.acks == 0 and old.message.acked and old.message not in s.unacked

    run(main())


async def _agent(s, fail_on):
    """An agent that raises on a batch starting at offset `fail_on` and returns the first other batch."""
    async for events in take_mod.take(s, 10, 0.02):
        if events[0].message.offset == fail_on:
            raise RuntimeError("broker down")
        return events


@pytest.mark.parametrize("rebalance", [False, True])
def test_a_batch_the_agent_did_not_finish_comes_again_to_the_restarted_agent_unless_a_rebalance_came(
        monkeypatch, rebalance):
    """Faust's take_events would skip (ack) the batch. After a rebalance the batch is of an older
    consumer generation: dropped, neither retried nor acked; its copies come from the committed offset."""
    monkeypatch.setattr(take_mod, "RETRY_MAX_S", 0.01)

    async def main():
        s = Stream()
        evs = [Ev(0), Ev(1)]
        s.put(evs)
        with pytest.raises(RuntimeError):
            await _agent(s, fail_on=0)
        assert [e.acks for e in evs] == [0, 0]
        if not rebalance:
            assert await _agent(s, fail_on=None) == evs  # what Faust's supervisor does: a new actor, same stream
            return
        s.app.consumer_generation_id = 2  # a rebalance before the restarted actor's retry
        new = [Ev(0, generation=2), Ev(1, generation=2)]  # the copies fetched from the committed offset
        s.put(new)
        assert await _agent(s, fail_on=None) == new
        assert [e.acks for e in evs] == [0, 0] and all(e.message.acked for e in evs) and not (s.unacked & {e.message for e in evs})

    run(main())


def test_a_batch_that_keeps_failing_is_given_up_after_max_attempts_and_the_next_one_flows(monkeypatch):
    monkeypatch.setattr(take_mod, "RETRY_MAX_S", 0.01)
    given_up: list = []

    async def give_up(events, attempts):
        given_up.append(([e.message.offset for e in events], attempts))

    async def agent(s):
        async for events in take_mod.take(s, 10, 0.02, max_attempts=3, give_up=give_up):
            if events[0].message.offset == 0:
                raise RuntimeError("poison")
            return events

    async def main():
        s = Stream()
        evs = [Ev(0), Ev(1)]
        s.put(evs)
        for _ in range(3):  # tried three times (the supervisor restarts the actor after each raise)
            with pytest.raises(RuntimeError):
                await agent(s)
        assert given_up == [] and [e.acks for e in evs] == [0, 0]
        later = [Ev(2)]
        s.put(later)
        assert await agent(s) == later  # the fourth start gives the poison batch up, then reads on
        assert given_up == [([0, 1], 3)] and [e.acks for e in evs] == [1, 1]

    run(main())


def test_a_cancelled_actor_ends_the_batches():
    async def main():
        s = Stream()
        it = take_mod.take(s, 10, 0.02)
        waiting = asyncio.ensure_future(it.__anext__())
        await asyncio.sleep(0.01)
        s.channel.queue._throw(StopAsyncIteration())  # faust.agents.actor.Actor.cancel
        with pytest.raises(StopAsyncIteration):
            await waiting

    run(main())
