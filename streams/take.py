"""Micro-batches read straight from an agent's channel queue: Faust's take_events, minus its per-event machinery.

`Stream.take_events` passes every event through the stream iterator (an event-loop round trip per
event, the processors chain, a buffer coroutine, four sensor calls) and then acks each with a
coroutine: about a third of a stream worker's time at 20k events/s (docs/BENCHMARKS.md). `take`
reads the agent's channel queue itself, with the bookkeeping of faust.streams.Stream._py_aiter
(0.15.3), except for one thing: an event of an older consumer generation, or one dequeued while
flow is suspended by a rebalance, is skipped and *dropped*, not acked as Faust does. Its message
comes again from the committed offset (the rebalance seeks every partition there); an ack would
put its offset in the list Faust commits from, and the commit could then pass it before its new
copy is handled: a crash or the next rebalance in between loses it. A message of an acking topic is
tracked as unacked until acked; a batch is acked (Faust's own Event.ack) only after the agent's code has finished
with it: an agent that raises gets the batch again when Faust restarts it, and a process that
dies gets it again from the last commit. `take` calls no sensor per event (Faust's stream iterator
calls on_stream_event_in/out and on_message_out); with settings.faust_event_sensors on, the
consumer's on_message_in still runs for every message (streams/faust_patches.skip_event_sensors).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any, AsyncIterator, Awaitable, Callable

from faust.types import EventT

log = logging.getLogger("intentflow.streams")


# A batch yielded to an agent that raised before asking for the next one: its actor is restarted by
# Faust's supervisor on the same stream, and gets the batch again first (at-least-once; every stage
# is idempotent on redelivery). Faust's own take_events acks such a batch, i.e. skips it.
_unfinished: "weakref.WeakKeyDictionary[Any, tuple[list, int]]" = weakref.WeakKeyDictionary()
RETRY_MAX_S = 30.0


async def take(stream: Any, max_: int, within: float, *, max_attempts: int = 0,
               give_up: Callable[[list, int], Awaitable[None]] | None = None) -> AsyncIterator[list]:
    """Lists of at most `max_` events, each yielded when full or `within` seconds after its first event.

    A batch the agent raised on comes again (backing off 0.5 s doubling to RETRY_MAX_S); after
    `max_attempts` tries (0: no limit) it goes to `give_up(events, attempts)` (the worker
    dead-letters each event with the reason) and is acked, so one poison batch cannot stall a
    partition for ever. Events of an older consumer generation are dropped without a retry: they come
    again from the last commit."""
    app = stream.app
    queue = stream.channel.queue
    loop = asyncio.get_running_loop()
    await stream.maybe_start()
    failed, failures = _unfinished.pop(stream, ([], 0))
    if failed and give_up is not None and max_attempts and failures + 1 >= max_attempts:
        events = [e for e in failed if _current(app, e)]
        log.error("giving up a micro-batch of %d events after %d attempts: dead-lettered", len(events), failures + 1)
        if events:
            await give_up(events, failures + 1)
        for event in failed:
            event.ack() if _current(app, event) else drop(app, event)
        failed = []
    if failed:
        delay = min(RETRY_MAX_S, 0.5 * 2 ** failures)
        log.warning("retrying a micro-batch of %d events the agent did not finish (attempt %d) in %.1fs",
                    len(failed), failures + 2, delay)
        await asyncio.sleep(delay)
        events = [e for e in failed if _current(app, e)]
        for event in failed:
            if not _current(app, event):  # from before a rebalance: redelivered from the commit
                drop(app, event)
        if events:
            _unfinished[stream] = (events, failures + 1)
            yield events
            _done(stream, events)
    while not stream.should_stop:
        try:
            events, skipped = await _collect(app, queue, max_, within, loop)
        except StopAsyncIteration:  # the actor is cancelled (Actor.cancel throws it into the channel)
            return
        for event in skipped:
            drop(app, event)
        if events:
            _unfinished[stream] = (events, 0)
            yield events
            _done(stream, events)


def _done(stream: Any, events: list) -> None:
    _unfinished.pop(stream, None)
    for event in events:
        event.ack()


def drop(app: Any, event: Any) -> None:
    """An event no agent handles (an older consumer generation, or flow suspended): no longer
    unacked, and never acked, so its offset is not committed; it comes again from the committed
    offset."""
    m = event.message
    m.acked = True  # a later Event.ack is a no-op: Faust's Consumer.ack skips an acked message
    app.consumer.unacked.discard(m)


def _current(app: Any, event: Any) -> bool:
    return app.flow_control.is_active() and event.message.generation_id == app.consumer_generation_id


async def _collect(app: Any, queue: Any, max_: int, within: float, loop: asyncio.AbstractEventLoop):
    events: list = []
    skipped: list = []
    item = await queue.get()
    deadline = loop.time() + within
    acking = app.topics.acking_topics
    unacked = app.consumer.unacked
    while True:
        if isinstance(item, EventT):
            m = item.message
            if not _current(app, item):
                skipped.append(item)
            else:
                if m.topic in acking and not m.tracked:
                    m.tracked = True
                    unacked.add(m)
                events.append(item)
        if len(events) >= max_:
            return events, skipped
        if not queue.empty():
            item = queue.get_nowait()
            continue
        remaining = deadline - loop.time()
        if remaining <= 0:
            return events, skipped
        try:
            item = await asyncio.wait_for(queue.get(), remaining)
        except asyncio.TimeoutError:
            return events, skipped
