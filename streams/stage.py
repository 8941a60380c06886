"""The micro-batch loop every agent of the stream app runs, so the app shows only what each stage does.

An agent asks its `Stage` for batches of its stream; each `Batch` carries the events, a counter of
their outcomes and `dead_letter` (the event to the DLQ with the stage, kind and reason; counted as
"dead_letter"). When the agent asks for the next batch, the stage counts the outcomes
(intentflow_events_total) and the batch's seconds (intentflow_stage_batch_seconds). Delivery is
streams/take.py's: a batch the agent raised on comes again, and after settings.batch_max_attempts
tries its events are dead-lettered (kind "batch_failed") and acknowledged.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, AsyncIterator

from processors.dlq import envelope
from streams import metrics
from streams.take import take


class Stage:
    """One agent's stage: `name` labels its metrics and its dead letters; `dlq` is the Faust topic
    of dead letters; `max_attempts` tries of a failing batch (0: no limit)."""

    def __init__(self, name: str, dlq: Any, max_attempts: int) -> None:
        self.name, self.dlq, self.max_attempts = name, dlq, max_attempts

    async def batches(self, stream: Any, max_: int, within: float) -> AsyncIterator["Batch"]:
        """Batches of at most `max_` events, each yielded when full or `within` seconds after its first."""
        async for events in take(stream, max_, within, max_attempts=self.max_attempts, give_up=self._give_up):
            batch = Batch(self, events)
            yield batch
            # the agent asked for the next batch: this one is done (take acknowledges it next)
            for outcome, n in (+batch.outcomes).items():
                metrics.EVENTS.labels(self.name, outcome).inc(n)
            metrics.STAGE_SECONDS.labels(self.name).observe(time.perf_counter() - batch.started)

    async def dead_letter(self, event: Any, kind: str, error: str) -> None:
        """The event's original bytes to the DLQ, with where it came from and why (processors.dlq)."""
        m = event.message
        await self.dlq.send(key=m.key, value=envelope(
            source_topic=m.topic, partition=m.partition, offset=m.offset, key=m.key, value=m.value,
            error=error, kind=kind, stage=self.name))
        metrics.DLQ.labels(m.topic, kind).inc()

    async def _give_up(self, events: list, attempts: int) -> None:
        for event in events:
            await self.dead_letter(event, "batch_failed",
                                   f"the worker's agent raised on this event's micro-batch {attempts} times (see its log)")


class Batch:
    """`events` of one micro-batch; `outcomes` counts what the agent did with them."""

    __slots__ = ("stage", "events", "outcomes", "started")

    def __init__(self, stage: Stage, events: list) -> None:
        self.stage, self.events, self.outcomes, self.started = stage, events, Counter(), time.perf_counter()

    async def dead_letter(self, event: Any, kind: str, error: str) -> None:
        await self.stage.dead_letter(event, kind, error)
        self.outcomes["dead_letter"] += 1
