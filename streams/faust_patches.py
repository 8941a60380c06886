"""Patches to the pinned Faust (0.15.3) for the per-event path, each applied once and tested.

1. A faster message hand-off in the consumer (measured: ~17k -> ~40k events/s raw).

Faust's Consumer._drain_messages wraps *every* message in `wait_first(callback(msg),
suspend_flow.wait())`: four futures and an asyncio.wait per message, so that a hand-off blocked
on a full stream buffer is abandoned when a rebalance suspends the flow. We call the callback
directly while the flow is not suspended and keep Faust's path otherwise. The patch is applied
by rewriting that one statement of the pinned version's source; if the source is not what we
expect (another Faust version) nothing is patched and a warning is logged.

2. True high watermarks for table recovery (see infra/kafka_compat.py: Tansu under-reports
them, and recovery would stop before the last records of a changelog).

3. `RawSchema`: topics whose keys and values our processors parse themselves are handed over as
the bytes on the wire, without Faust's codec lookups per message (a public extension point).

4. `skip_event_sensors`: Faust calls every sensor (its Monitor at least) four times per event;
our Prometheus counters are kept per micro-batch, so a worker may skip those calls.

5. `settle_before_commit`: Faust flushes its producer and then commits offsets, whether or not
what the producer sent was accepted. Our table changelogs are written without waiting for each
acknowledgement (streams/state.py); before any commit, every such write must be acknowledged and a
refused one sent again (streams.state.settle), or the commit is not made (it raises).

6. `seek_uncommitted_to_start`: after every assignment Faust resumes the stream partitions, then
seeks them to their committed offsets (aiokafka's seek_to_committed), then lets messages flow.
What the fetcher got in between is dropped (the flow is not on yet) and is fetched again from the
committed offset, except on a partition the group has never committed (or committed at 0): there
aiokafka does not seek at all, so the fetch position stays after the dropped messages. A worker
restarted after a crash that came before the first commit of a partition (kill -9 while a stage
was handling its first messages) then never sees those messages, and once a newer message of the
partition is handled its offset is committed past them: lost (found by `intentflow bench faults`:
feature rows never written offline, entity updates never applied). Such partitions are sought to
the start the group's `consumer_auto_offset_reset` names (earliest: the log start), as a consumer
without a committed offset must be.

7. `commit_whole_runs`: Faust commits a partition up to the first run of consecutive offsets in its
list of acknowledged offsets (Consumer._new_offset). The list can hold an offset twice: Faust adds
the offsets of a "gap" (offsets it saw skipped) to it without checking, and after the seek of 6. the
messages of such a gap are delivered and acknowledged again. Every duplicate ends a run, so the
commit then advanced one offset per commit interval (about one message a second) while every
message was handled: a restarted worker looked stalled for minutes (found by the kill -9 test: 500
handled messages of one partition took 9 minutes to commit). The runs are taken over the distinct
offsets.

8. `patch_drain` (gaps fetched again): Faust's consumer, seeing a message whose offset is more than
one past the last it handed over on that partition, records the offsets between as a "gap" and
later commits over them as if handled: right for offsets that do not exist (compaction, transaction
markers), a loss for messages that were fetched and dropped. After a takeover (kill -9, a second
worker) the new worker's fetch position was sometimes ahead of its committed offset (the messages
fetched around the seek of 6. were dropped) and 150-2,000 messages of a partition were committed
without reaching an agent: pairs never explained (the kill test missed 4-40 pairs in about 1 run of
12, with the gaps logged). Now the first sight of a gap seeks the partition back to its first
missing offset and skips the message; only when the refetch shows the same gap is it recorded as
Faust would.

9. `FetchWatch`: the same position running ahead where no newer message follows (the end of the
partition) leaves no gap to see: the partition just stays behind its end, uncommitted, until
more messages come (the kill test stalled at 180 s in about 1 run of 10, e.g.
behavior.search_buy[3] committed 585 of 1,011 and nothing handed over). Every few seconds a
partition whose fetch position is past the next offset the agents should get, with nothing handed
over since the last look, is sought back to that offset (a warning is logged). A partition whose
agent is just slow is at worst fetched again (at-least-once: the stages are idempotent).

10. `verify_only_positioned`: Faust's livelock check (every 2.5 commit intervals once a rebalance
is over) reads each assigned partition's fetch position from aiokafka's subscription state; for a
partition whose offset is still being reset (assigned without a committed offset, or sought to its
start by 6.) aiokafka 0.14 has no position and its `position` property raises AssertionError,
which crashes the worker (found by the test of a rebalance while the agents' queues are full,
tests/test_scale_out.py: the surviving worker died 0.7 s after taking the partitions over). Such
a partition is skipped until it has a position, as Faust already skips one without a high watermark.

11. `seek_before_resuming_streams`: at the end of a rebalance Faust's recovery
(Recovery.on_recovery_completed, and _resume_streams for an app without tables) resumes the stream
partitions, then seeks them to their committed offsets (an await: a broker round trip, longer with
6.), and only then resumes the flow, which empties every agent queue (mode's FlowControlEvent.resume).
Messages fetched in that window were handed to the queues from wherever each partition's fetch
position stood. Those fetched after their partition's seek were marked read and then emptied from
the queues: no agent got them, nothing fetched them again, and the partition's commit stopped below
them for good (found by the test of a rebalance while the agents' queues are full: a worker stalled
with exactly one queue's worth of offsets, 8, never acknowledged). Those an agent took before the
seek were handled out of order, and the sampler takes an older offset of a pair it has seen as a
redelivery (a pair went missing when the queues were kept instead). The stream partitions are now
resumed after the seek, right before the flow: nothing is fetched for them in between.

12. `nothing_read_at_the_seek`: after the seek of every rebalance Faust records each partition's
committed offset as its *read* offset, as if the message there had been handed to an agent already
(Consumer.perform_seek). FetchWatch (9.) asks for the offset after the read one, so a partition whose
fetch position ran one message past the commit, that message handed to no agent, looked healthy:
the partition's commit stood one message short of its end for good (found by `intentflow bench
faults`: the sample stage 1 message behind for 300 s after the stream worker's restart). The read
offset after the seek is now the one before the committed offset (none for 0): what the agents have
got from this assignment, which is nothing; the refetch of 8. and FetchWatch then see such a message
as missing. A message at the committed offset is handed over as before (Faust hands over offsets at
or past the read one).

13. (streams/take.py) An event skipped by a rebalance (an older consumer generation, or dequeued
while the flow is suspended) is dropped, not acknowledged as Faust does: it comes again from the
committed offset, and its acknowledgement could let the commit pass it before that copy is handled.

14. `FetchWatch` also looks for a partition whose commit stands still below messages already handed
to the agents while no agent holds the message at the committed offset: not in an agent's queue,
not taken and unacknowledged, not acknowledged and waiting for the commit. Such a message was lost
between the consumer and the agents (a queue emptied at the end of a rebalance is one way); looked
at twice, 5 s apart, with no commit between, the partition is fetched again from its committed
offset (at-least-once: the stages are idempotent). This is the case 9. cannot see: the fetch
position is where it should be, right after the last message handed over.
"""

from __future__ import annotations

import inspect
import logging
import re
import textwrap
from typing import Any, Awaitable, Callable

import faust

log = logging.getLogger(__name__)

# streams/take.py and the patches here use Faust internals of this release (Consumer._drain_messages,
# Consumer._commit_offsets, .perform_seek, ._read_offset, ._acked_index, AIOKafkaConsumerThread._highwaters and
# .seek_to_committed, Conductor._topic_name_index, Stream.channel.queue, Event.ack, Message.tracked and .acked,
# consumer.unacked, flow_control, consumer_generation_id): pinned in pyproject.toml
FAUST_VERSION = "0.15.3"


def check_faust_version(found: str | None = None) -> None:
    """Raise RuntimeError unless the installed Faust is the release these internals were read from."""
    found = found or getattr(faust, "__version__", "?")
    if found != FAUST_VERSION:
        raise RuntimeError(f"intentflow's stream worker relies on Faust {FAUST_VERSION} internals (streams/take.py, "
                           f"streams/faust_patches.py) and found faust-streaming {found}: install the pinned version "
                           f"(pip install -e .) or re-read those internals and update FAUST_VERSION")


def install(settings: Any, settle: Callable[[Any], Awaitable[None]]) -> None:
    """Every patch the stream worker runs with (each process-wide and applied once; streams.app.create_app
    calls this, importing the module does not). `settings`: streams.settings.Settings; `settle`:
    streams.state.settle. Raises RuntimeError on a Faust release the patches were not read from."""
    from streams.settings import needs_true_highwaters

    check_faust_version()  # take.py and the patches read Faust internals of one release
    patch_drain(fastpath=settings.faust_fastpath)  # gaps fetched again (8.); the fast hand-off (1.) if on
    if needs_true_highwaters(settings):  # a broker workaround (2.), only where the broker needs it
        apply_true_highwaters(settings.broker, settings.kafka)
    settle_before_commit(settle)  # no offset committed past a changelog write the broker refused (5.)
    seek_uncommitted_to_start()  # a restart re-reads partitions the group never committed (6.)
    commit_whole_runs()  # an offset acknowledged twice does not hold the commit back (7.)
    verify_only_positioned()  # the livelock check does not crash on a partition being reset (10.)
    seek_before_resuming_streams()  # nothing fetched between a stream partition's seek and the flow (11.)
    nothing_read_at_the_seek()  # a message at the committed offset is not taken as handed over (12.)


_PATTERN = re.compile(r"\n( *)await self\.wait_first\(\s*callback\(message\), self\.suspend_flow\.wait\(\)\s*\)")
_GAP = re.compile(r"\n( *)await self\._add_gap\(tp, r_offset \+ 1, offset\)")
_drain_source: str | None = None  # Faust's own Consumer._drain_messages, read before any rewrite
_drain_edits: tuple[bool, bool] | None = None  # (fastpath, refetch gaps) applied


def patch_drain(fastpath: bool) -> bool:
    """Rewrite Faust's Consumer._drain_messages: gaps are fetched again (8. above), and with
    `fastpath` the hand-off of 1. Returns whether the fastpath is in; raises RuntimeError when the
    gap statement is not found (the refetch is what keeps a restart from losing messages)."""
    global _drain_source, _drain_edits
    import faust.transport.consumer as fc

    if _drain_edits is not None and (_drain_edits[0] or not fastpath):
        return _drain_edits[0]
    if _drain_source is None:
        _drain_source = textwrap.dedent(inspect.getsource(fc.Consumer._drain_messages))
    src = _drain_source
    g = _GAP.search(src)
    if g is None:
        raise RuntimeError("Faust's Consumer._drain_messages is not the source streams/faust_patches.py was written for")
    ind = g.group(1)
    src = src[: g.start()] + (f"\n{ind}if await _intentflow_refetch_gap(self, tp, r_offset, offset):"
                              f"\n{ind}    continue") + src[g.end():]
    m = _PATTERN.search(src) if fastpath else None
    if fastpath and m is None:
        log.warning("faust fastpath not applied: Consumer._drain_messages is not the expected source")
    if m is not None:
        ind = m.group(1)
        src = src[: m.start()] + (
            f"\n{ind}if self.suspend_flow.is_set():"
            f"\n{ind}    await self.wait_first(callback(message), self.suspend_flow.wait())"
            f"\n{ind}else:"
            f"\n{ind}    await callback(message)") + src[m.end():]
    fc._intentflow_refetch_gap = refetch_gap
    ns: dict = {}
    exec(compile(src, fc.__file__, "exec"), fc.__dict__, ns)
    fc.Consumer._drain_messages = ns["_drain_messages"]
    _drain_edits = (m is not None, True)
    return m is not None


def apply_fastpath() -> bool:
    """patch_drain with the fastpath (1. above)."""
    return patch_drain(fastpath=True)


async def refetch_gap(consumer: Any, tp: Any, read_offset: int, offset: int) -> bool:
    """Called where Faust saw `offset` on `tp` after `read_offset` (the last offset it handed over)
    with offsets missing between.

    The first time for a gap: seek `tp` back to the first missing offset and return True (skip this
    message; it comes again). The later messages of the same fetch are skipped too. When the refetch
    brings `offset` again right after `read_offset`, those offsets do not exist (compaction,
    transaction markers): Faust's gap is recorded and False returned (the message is handled).
    See 8. above.
    """
    pending = consumer.__dict__.setdefault("_intentflow_refetch", {})  # tp -> (read_offset, first offset after it)
    prev = pending.get(tp)
    if prev is not None and prev[0] == read_offset and offset >= prev[1]:
        if offset > prev[1]:
            return True  # a later message of the fetch that came before the seek
        del pending[tp]  # the refetch shows the same gap: the offsets do not exist
        await consumer._add_gap(tp, read_offset + 1, offset)  # noqa: SLF001 - Faust's own gap bookkeeping
        return False
    pending[tp] = (read_offset, offset)
    log.warning("offsets %d..%d of %s[%d] were not handed to the agents; fetching them again",
                read_offset + 1, offset - 1, tp.topic, tp.partition)
    await consumer.seek(tp, read_offset + 1)
    # Faust's seek marks the target as read; it is not: the last handed over stays read_offset
    consumer._read_offset[tp] = read_offset  # noqa: SLF001
    return True


_hw_applied = False


def apply_true_highwaters(bootstrap: str, security: Any = None) -> None:
    """`security`: infra.settings.KafkaSecurity of the probe's client (None: from the environment)."""
    global _hw_applied
    if _hw_applied:
        return
    import asyncio

    import faust.transport.drivers.aiokafka as fa

    from infra.kafka_compat import true_end_offsets

    original = fa.AIOKafkaConsumerThread._highwaters

    async def _highwaters(self, partitions):
        reported = await original(self, partitions)
        if self.consumer.in_transaction:
            return reported
        fixed = await asyncio.to_thread(
            true_end_offsets, bootstrap, {(tp.topic, tp.partition): v for tp, v in reported.items()},
            security=security)
        return {tp: fixed[(tp.topic, tp.partition)] for tp in reported}

    fa.AIOKafkaConsumerThread._highwaters = _highwaters
    _hw_applied = True


_verify_guarded = False


def verify_only_positioned() -> None:
    """Faust's livelock check skips partitions without a fetch position (10. above)."""
    global _verify_guarded
    if _verify_guarded:
        return
    import faust.transport.drivers.aiokafka as fa
    from aiokafka import TopicPartition

    original = fa.AIOKafkaConsumerThread.verify_event_path

    def verify_event_path(self, now: float, tp: Any) -> None:
        subscription = self._ensure_consumer()._fetcher._subscriptions.subscription  # noqa: SLF001 - as Faust reads it
        state = None if subscription is None else subscription.assignment.state_value(
            TopicPartition(tp.topic, tp.partition))
        if state is None or not state.has_valid_position:
            return None  # being reset (or no longer assigned): nothing to verify yet
        return original(self, now, tp)

    fa.AIOKafkaConsumerThread.verify_event_path = verify_event_path
    _verify_guarded = True


_RESUME = re.compile(r"\n( *)consumer\.resume_partitions\(\s*\{tp for tp in assignment if not self\._is_changelog_tp\(tp\)\}\s*\)")
_COMPLETED = re.compile(r"\n( *)self\.completed\.set\(\)")
_streams_reordered = False


def resume_after_seek(src: str, name: str) -> str:
    """The source of Recovery.`name` with its resume of the stream partitions moved from before
    their seek to right before `self.completed.set()`; RuntimeError when it is not found."""
    resume, completed = _RESUME.search(src), _COMPLETED.search(src)
    if resume is None or completed is None or completed.start() < resume.end() or \
            "perform_seek()" not in src[resume.end(): completed.start()]:
        raise RuntimeError(f"Faust's Recovery.{name} is not the source streams/faust_patches.py was written for")
    statement = f"\n{completed.group(1)}consumer.resume_partitions({{tp for tp in assignment if not self._is_changelog_tp(tp)}})"
    return src[: resume.start()] + src[resume.end(): completed.start()] + statement + src[completed.start():]


def seek_before_resuming_streams() -> None:
    """Faust's recovery resumes the stream partitions after seeking them, not before (11. above).
    Raises RuntimeError when Recovery's source is not the one this was written for."""
    global _streams_reordered
    if _streams_reordered:
        return
    import faust.tables.recovery as fr

    for name in ("on_recovery_completed", "_resume_streams"):
        src = resume_after_seek(textwrap.dedent(inspect.getsource(getattr(fr.Recovery, name))), name)
        ns: dict = {}
        exec(compile(src, fr.__file__, "exec"), fr.__dict__, ns)
        setattr(fr.Recovery, name, ns[name])
    _streams_reordered = True


_read_reset = False


def read_before(offset: int | None) -> int | None:
    """The read offset of a partition sought to `offset`: the one before it, none for 0 or none."""
    return offset - 1 if offset is not None and offset > 0 else None


async def perform_seek(self: Any) -> None:
    """Consumer.perform_seek of Faust 0.15.3 with the read offset one before the committed offset
    (12. above): seek every assigned partition to its committed offset; record that offset as
    committed (None for 0 or none, as Faust does) and the one before it as read."""
    from faust.transport.consumer import ensure_TP

    committed = {ensure_TP(tp): offset for tp, offset in (await self.seek_to_committed()).items()}
    self._read_offset.update({tp: read_before(offset) for tp, offset in committed.items()})
    self._committed_offset.update({tp: offset or None for tp, offset in committed.items() if offset is not None})


def nothing_read_at_the_seek() -> None:
    """Faust's consumer seeks without marking the committed offset read (12. above)."""
    global _read_reset
    if _read_reset:
        return
    import faust.transport.consumer as fc

    fc.Consumer.perform_seek = perform_seek
    _read_reset = True


class RawSchema(faust.Schema):
    """Keys and values as bytes, decoded by nothing: the same events as the "raw" codec gives."""

    def __init__(self) -> None:
        super().__init__(key_serializer="raw", value_serializer="raw")

    def compile(self, app: Any, **kwargs: Any):
        create_event = app.create_event

        async def decode(message, *, propagate: bool = False):
            return create_event(message.key, message.value, message.headers, message)

        return decode


def _no_sensor(*args: Any, **kwargs: Any) -> None:
    return None


def skip_event_sensors(app: Any) -> None:
    """Per-event sensor calls off (message in/out, stream event in/out); call before agents start.
    Sensors still see everything else (commits, table and send events, lag)."""
    for hook in ("on_message_in", "on_stream_event_in", "on_stream_event_out", "on_message_out"):
        setattr(app.sensors, hook, _no_sensor)


_settle_applied = False


def settle_before_commit(settle: Callable[[Any], Awaitable[None]]) -> None:
    """Call `settle(app)` before every offset commit of a Faust consumer (all of its commit paths
    go through Consumer._commit_offsets in 0.15.3); an exception from it leaves the offsets as they were."""
    global _settle_applied
    if _settle_applied:
        return
    import faust.transport.consumer as fc

    original = fc.Consumer._commit_offsets

    async def _commit_offsets(self, offsets, start_new_transaction: bool = True) -> bool:
        await settle(self.app)
        return await original(self, offsets, start_new_transaction=start_new_transaction)

    fc.Consumer._commit_offsets = _commit_offsets
    _settle_applied = True


def uncommitted(committed: dict, changelog_topics: set[str] | frozenset[str]) -> list:
    """The stream partitions (not table changelogs, which recovery positions itself) of a
    seek_to_committed result that aiokafka left where they were: no committed offset, or 0."""
    return sorted((tp for tp, offset in committed.items()
                   if (offset is None or offset <= 0) and tp.topic not in changelog_topics),
                  key=lambda tp: (tp.topic, tp.partition))


_seek_applied = False


def seek_uncommitted_to_start() -> None:
    """After Faust's seek to the committed offsets, seek the partitions without one (or at 0) to
    the start `consumer_auto_offset_reset` names (earliest or latest); see 6. above."""
    global _seek_applied
    if _seek_applied:
        return
    import faust.transport.drivers.aiokafka as fa

    original = fa.AIOKafkaConsumerThread.seek_to_committed

    async def seek_to_committed(self):
        committed = await original(self)
        todo = uncommitted(committed, self.app.tables.changelog_topics)
        if todo:
            consumer = self._ensure_consumer()
            reset = (self.app.conf.consumer_auto_offset_reset or "earliest").lower()
            if reset == "earliest":
                await self.call_thread(consumer.seek_to_beginning, *todo)
            elif reset == "latest":
                await self.call_thread(consumer.seek_to_end, *todo)
        return committed

    fa.AIOKafkaConsumerThread.seek_to_committed = seek_to_committed
    _seek_applied = True


faust_new_offset: Callable | None = None  # Faust's own, once commit_whole_runs replaced it


def new_offset(self: Any, tp: Any) -> int | None:
    """Consumer._new_offset of Faust 0.15.3 over the distinct acknowledged offsets (see 7. above):
    the offset to commit for `tp` (one past the first run of consecutive acknowledged offsets, gaps
    filled in), or None when the run does not start right after the committed offset."""
    from faust.utils.functional import consecutive_numbers

    acked = self._acked[tp]
    if not acked:
        return None
    max_offset = max(acked)
    gap_for_tp = self._gap[tp]
    if gap_for_tp:
        gaps = sorted(gap_for_tp.overlap(0, max_offset), key=lambda x: x.begin)
        if gaps:
            filled = [o for g in gaps for o in range(g.begin, g.end)]
            acked.extend(filled)
            gap_for_tp.chop(0, max(filled[-1], max_offset + 1))
    acked[:] = sorted(set(acked))
    committed = self._committed_offset[tp]
    if committed and acked[0] - committed > 1:
        return None
    run = next(consecutive_numbers(acked))
    acked[: len(run)] = []
    self._acked_index[tp].difference_update(run)
    return run[-1] + 1


def commit_whole_runs() -> None:
    """Faust's consumer commits over distinct acknowledged offsets (new_offset)."""
    global faust_new_offset
    if faust_new_offset is not None:
        return
    import faust.transport.consumer as fc

    faust_new_offset = fc.Consumer._new_offset  # kept for the test that shows the defect
    fc.Consumer._new_offset = new_offset


class FetchWatch:
    """9. and 14. above: call `check(app)` every few seconds (streams/app.py does, every 5 s)."""

    def __init__(self) -> None:
        self.last: dict = {}  # tp -> (next offset the agents should get, fetch position) at the last look
        self.fresh_sought: dict = {}  # never-read tp -> the position it was sought back from
        self.handed: dict = {}  # tp -> (committed, last handed over) at the last look, commit behind it

    async def check(self, app: Any) -> list:
        """Seek back the partitions found starved twice in a row; returns them as (tp, from, to)."""
        consumer = app.consumer
        changelogs = app.tables.changelog_topics
        sought, seen, handed = [], {}, {}
        for tp in sorted(consumer.assignment()):
            if tp.topic in changelogs or tp in consumer._paused_partitions:  # noqa: SLF001
                continue
            read = consumer._read_offset.get(tp)  # noqa: SLF001 - last offset handed to the agents
            committed = consumer._committed_offset.get(tp)  # noqa: SLF001
            if read is not None and committed is not None and read >= committed:
                handed[tp] = (committed, read)  # handed over, not committed yet: held by an agent?
            want = read + 1 if read is not None else committed
            fresh = want is None
            if fresh:  # never read, never committed: the agents should get it from its start
                if (getattr(app.conf, "consumer_auto_offset_reset", None) or "earliest").lower() != "earliest":
                    continue
                # 0, not a query for the log start: a seek below it resets to the earliest offset, and
                # asking the broker from this timer took 11 s a look (the consumer thread is busy)
                want = 0
            position = await consumer.position(tp)
            if position is None or position <= want:
                continue
            if fresh and self.fresh_sought.get(tp) == position:
                continue  # sought from here once already: its log starts here (retention, compaction)
            seen[tp] = (want, position)
            if self.last.get(tp) == (want, position):  # nothing handed over, nothing fetched since
                log.warning("fetch position %d of %s[%d] is past %d, which no agent got; fetching from %d again",
                            position, tp.topic, tp.partition, want, want)
                await consumer.seek(tp, want)
                consumer._read_offset[tp] = read  # noqa: SLF001 - Faust's seek marks the target as read
                if fresh:
                    self.fresh_sought[tp] = position
                sought.append((tp, want, position))
                seen.pop(tp)
                handed.pop(tp, None)
        self.last = seen
        stalled = {tp: v for tp, v in handed.items() if self.handed.get(tp) == v}  # no commit since
        self.handed = handed
        if stalled:
            held = held_offsets(app, {tp: c for tp, (c, _) in stalled.items()})
            for tp, (committed, read) in stalled.items():
                if tp in held:
                    continue
                log.warning("offsets %d..%d of %s[%d] were handed over but no agent holds offset %d (not queued, "
                            "not taken, not acknowledged): fetching from %d again",
                            committed, read, tp.topic, tp.partition, committed, committed)
                await consumer.seek(tp, committed)
                consumer._read_offset[tp] = read_before(committed)  # noqa: SLF001 - as 12.
                self.handed.pop(tp, None)
                sought.append((tp, committed, read + 1))
        return sought


def held_offsets(app: Any, wanted: dict) -> set:
    """The partitions of `wanted` (tp -> offset) whose offset an agent holds: queued for an agent
    (its channel's queue), taken by one and not acknowledged (the consumer's unacked messages), or
    acknowledged and waiting for the next commit (the consumer's acked list)."""
    consumer = app.consumer
    held = {tp for tp, offset in wanted.items() if offset in consumer._acked_index.get(tp, ())}  # noqa: SLF001
    for m in list(consumer.unacked):
        if wanted.get(m.tp) == m.offset:
            held.add(m.tp)
    topics = {tp.topic for tp in wanted}
    index = getattr(app.topics, "_topic_name_index", {})  # noqa: SLF001 - topic -> its channels
    for topic in topics:
        # a channel delivers to the queues of its subscribers (the agents' iterators: Channel.put)
        queues = [getattr(sub, "_queue", None) for ch in list(index.get(topic, ()))
                  for sub in [ch, *list(getattr(ch, "_subscribers", ()))]]
        for queue in queues:
            for event in list(getattr(queue, "_queue", ()) or ()):
                m = getattr(event, "message", None)
                if m is not None and wanted.get(m.tp) == m.offset:
                    held.add(m.tp)
    return held
