"""The intentflow stream app: the whole dataflow at a glance. Logic lives in processors/.

behavior.search_buy  --[sample_search_buy]----------------------------> knowledge.requests
behavior.co_purchase --[sample_co_purchase]--> co_purchase.by_product --[check_products]--^
knowledge.requests --[dedup + micro-batch]--> generation.batches
knowledge.requests.priority --[dedup + micro-batch]--> generation.batches.priority (generated first)
(generation and filter workers, .venv-ml) --> knowledge.edges
knowledge.edges --[route_edges]--> features.by_entity --[write_features: Feast online]--> features.rows
features.rows --[write_offline: Feast offline, batched]
anything undecodable or invalid --> behavior.dlq (with the reason and the original bytes)

Run it with `intentflow worker` (or `faust -A streams.app worker`).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import threading
import time
import weakref
from collections import Counter

import faust
from pydantic import ValidationError

from infra import logs
from infra.settings import TABLES
from processors import dedup, features, sampling
from processors.events import EventError, future_error, parse_co_purchase, parse_search_buy
from processors.requests import GenerationRequest
from streams import faust_patches, metrics, state
from processors.dlq import envelope
from streams.producer import misrouted
from streams.settings import faust_credentials, get_settings, needs_true_highwaters
from streams.state import TrackedTable, at_partition
from streams.take import take

log = logging.getLogger("intentflow.streams")
settings = get_settings()
faust_patches.check_faust_version()  # take.py and the patches read Faust internals of one release
faust_patches.patch_drain(fastpath=settings.faust_fastpath)  # gaps fetched again; the fast hand-off if on
if needs_true_highwaters(settings):  # a broker workaround, only where the broker needs it
    faust_patches.apply_true_highwaters(settings.broker, settings.kafka)
faust_patches.settle_before_commit(state.settle)  # no offset committed past a changelog write the broker refused
faust_patches.seek_uncommitted_to_start()  # a restart re-reads partitions the group never committed
faust_patches.commit_whole_runs()  # an offset acknowledged twice does not hold the commit back

app = faust.App(
    settings.app_id,
    broker=settings.kafka_url,
    broker_credentials=faust_credentials(settings.kafka),  # INTENTFLOW_KAFKA__*: TLS/SASL as the other clients
    store="memory://",
    datadir=f"{settings.data_dir}/faust",
    topic_partitions=settings.partitions,
    topic_replication_factor=settings.replication,
    broker_session_timeout=settings.session_timeout_s,
    broker_heartbeat_interval=max(0.5, settings.session_timeout_s / 6),
    broker_commit_interval=1.0,
    broker_max_poll_records=5000,
    consumer_auto_offset_reset="earliest",
    stream_buffer_maxsize=65536,
    consumer_max_fetch_size=16 * 1024 * 1024,
    stream_wait_empty=False,
    logging_config=logs.logging_config(settings.log_level, settings.log_json),
    # the web server serves the operator page (streams/web.py) and nothing of Faust's own: no table
    # contents (/table/), cluster routes (/router/), statistics, assignment, graph or performance data
    web_router_enabled=False,
    web_tables_enabled=False,
    web_stats_enabled=False,
    web_graph_enabled=False,
    web_metrics_enabled=False,
    web_bind="127.0.0.1",  # loopback unless the worker is told otherwise (then with INTENTFLOW_WEB_TOKEN)
    web_host="127.0.0.1",
)


if not settings.faust_event_sensors:
    faust_patches.skip_event_sensors(app)


def _topic(name: str) -> faust.TopicT:
    return app.topic(name, schema=faust_patches.RawSchema())


search_buy_topic = _topic(settings.topics.search_buy)
co_purchase_topic = _topic(settings.topics.co_purchase)
by_product_topic = _topic(settings.topics.by_product)
requests_topic = _topic(settings.topics.requests)
priority_topic = _topic(settings.topics.priority_requests)
batches_topic = _topic(settings.topics.batches)
priority_batches_topic = _topic(settings.topics.priority_batches)
dlq_topic = _topic(settings.topics.dlq)
edges_topic = _topic(settings.topics.edges)
entity_topic = _topic(settings.topics.entity_updates)
rows_topic = _topic(settings.topics.feature_rows)


def _table(name: str) -> TrackedTable:
    """A table named in infra/settings.TABLES (KeyError otherwise): `intentflow topics create` makes
    the changelog topics of exactly those."""
    table = app.Table(name, default=None, partitions=settings.partitions, help=TABLES[name])
    assert table.key_serializer == table.value_serializer == "json", "streams/state.py writes JSON changelogs"
    return TrackedTable(table)


sb_pairs = _table("sb_pairs")
sb_queries = _table("sb_queries")
sb_seen = _table("sb_seen_blocks")
cp_pairs = _table("cp_pairs")
cp_types = _table("cp_type_pairs")
cp_seen = _table("cp_seen_blocks")
products = _table("products")
sent = _table("sent_requests")
knowledge = _table("entity_knowledge")
assert set(app.tables) == set(TABLES), "every table of infra/settings.TABLES is made here, and no other"

TAKE, WITHIN = 1000, 0.05


def _take(stream, max_: int, within: float):
    """Micro-batches of events (streams.take): a batch the agent raised on comes again, up to
    settings.batch_max_attempts tries, then its events are dead-lettered."""
    return take(stream, max_, within, max_attempts=settings.batch_max_attempts, give_up=_give_up)


async def _give_up(events: list, attempts: int) -> None:
    for event in events:
        await _dead_letter(event, "agent", "batch_failed",
                           f"the worker's agent raised on this event's micro-batch {attempts} times (see its log)")


_destinations = {"request": requests_topic, "product": by_product_topic}
_seen: dict[str, tuple[sampling.SeenIds, faust.TopicT]] = {}  # stage -> its ids, its source; for _reindex_seen


async def _publish(emits: list[sampling.Emit]) -> None:
    by_topic: dict[str, list[tuple[bytes, bytes]]] = {}
    for e in emits:
        by_topic.setdefault(e.to, []).append((e.key.encode(), json.dumps(e.value).encode()))
    for to, records in by_topic.items():
        await state.send_keyed(app, _destinations[to].get_topic_name(), records)
        metrics.EMITTED.labels(to).inc(len(records))


async def _dead_letter(event: faust.EventT, stage: str, kind: str, error: str) -> None:
    m = event.message
    await dlq_topic.send(key=m.key, value=envelope(source_topic=m.topic, partition=m.partition, offset=m.offset,
                                                   key=m.key, value=m.value, error=error, kind=kind, stage=stage))
    metrics.DLQ.labels(m.topic, kind).inc()


def _count(stage: str, outcomes: Counter) -> None:
    for outcome, n in outcomes.items():
        metrics.EVENTS.labels(stage, outcome).inc(n)


async def _partitions(topic: faust.TopicT) -> int:
    """The partition count of a stage's source topic, from the metadata the producer partitions by."""
    return len(await app.producer._ensure_producer().partitions_for(topic.get_topic_name()))  # noqa: SLF001


async def _sample(stream, stage: str, parse, step, topic, tables: tuple[TrackedTable, ...], seen_table: TrackedTable) -> None:
    cfg = settings.sampling
    seen = sampling.SeenIds(seen_table)
    seen.owned = _owned(topic)  # set again by _reindex_seen on every assignment
    _seen[stage] = (seen, topic)
    async for events in _take(stream, TAKE, WITHIN):
        t0 = time.perf_counter()
        outcomes: Counter = Counter()
        emits: list[sampling.Emit] = []
        max_ts = 0.0
        now = time.time()
        partitions = await _partitions(topic)
        seen.begin()
        for event in events:
            m = event.message
            try:
                ev = parse(m.value)
            except EventError as err:
                await _dead_letter(event, stage, "invalid_event", str(err))
                outcomes["dead_letter"] += 1
                continue
            why = future_error(ev, now, cfg.max_future_skew_s)
            if why:  # its time would push event-time state (dedup expiry, pair TTLs) ahead
                await _dead_letter(event, stage, "invalid_event", why)
                outcomes["dead_letter"] += 1
                continue
            key = ev.partition_key.encode()
            if misrouted(m.key, m.partition, key, partitions):
                # keyed otherwise, or by the right key with another partitioner (CRC32): route it
                # to the partition that owns its pair, or the pair's state splits across two
                await topic.send(key=key, value=m.value)
                outcomes["rekeyed" if m.key != key else "rerouted"] += 1
                continue
            at_partition(m.partition, *tables)
            r = step(ev, m.partition, m.offset, *tables, seen, cfg)
            outcomes[r.outcome] += 1
            emits.extend(r.emits)
            max_ts = max(max_ts, ev.ts)
        seen.commit(max_ts, cfg.event_id_ttl_s)
        await state.flush(app, *tables, seen_table)
        await _publish(_coalesce(emits))
        _count(stage, outcomes)
        metrics.STAGE_SECONDS.labels(stage).observe(time.perf_counter() - t0)


def _coalesce(emits: list[sampling.Emit]) -> list[sampling.Emit]:
    """Observations are idempotent: send each (product, type) once per batch."""
    seen, out = set(), []
    for e in emits:
        if e.value.get("kind") == "observe":
            k = (e.key, e.value["other_type"])
            if k in seen:
                continue
            seen.add(k)
        out.append(e)
    return out


def _owned(source: faust.TopicT) -> set[int]:
    """Partitions of a stage's source topic this worker owns (its tables are co-partitioned)."""
    name = source.get_topic_name()
    return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == name}


@app.on_partitions_assigned.connect
async def _reindex_seen(app, assigned, **kwargs) -> None:
    """After an assignment the tables are recovered before events flow again: each stage's event
    ids are re-read at its next micro-batch, from the partitions it now owns."""
    for seen, source in _seen.values():
        seen.owned = _owned(source)
        seen.stale = True


@app.agent(search_buy_topic)
async def sample_search_buy(stream):
    await _sample(stream, "sample_search_buy", parse_search_buy, sampling.sample_search_buy, search_buy_topic,
                  (sb_pairs, sb_queries), sb_seen)


@app.agent(co_purchase_topic)
async def sample_co_purchase(stream):
    await _sample(stream, "sample_co_purchase", parse_co_purchase, sampling.sample_co_purchase, co_purchase_topic,
                  (cp_pairs, cp_types), cp_seen)


@app.agent(by_product_topic)
async def check_products(stream):
    async for events in _take(stream, TAKE, WITHIN):
        t0 = time.perf_counter()
        outcomes: Counter = Counter()
        emits: list[sampling.Emit] = []
        for event in events:
            try:
                msg = json.loads(event.message.value)
                at_partition(event.message.partition, products)
                r = sampling.product_degree_step(msg, products, settings.sampling)
            except (ValueError, KeyError, TypeError) as err:
                await _dead_letter(event, "check_products", "invalid_internal", repr(err))
                outcomes["dead_letter"] += 1
                continue
            outcomes[r.outcome] += 1
            emits.extend(r.emits)
        await state.flush(app, products)
        await _publish(emits)
        _count("check_products", outcomes)
        metrics.STAGE_SECONDS.labels("check_products").observe(time.perf_counter() - t0)


async def _dedup_and_batch(stream, stage: str, wait_s: float, priority: bool) -> None:
    cfg = settings.batch
    async for events in _take(stream, cfg.max_size, wait_s):
        t0 = time.perf_counter()
        outcomes: Counter = Counter()
        admitted: list[GenerationRequest] = []
        source: dict[str, int] = {}  # request id -> partition of the message that carried it
        for event in events:
            m = event.message
            try:
                req = GenerationRequest.model_validate_json(m.value)
            except ValidationError as err:
                await _dead_letter(event, stage, "invalid_request", str(err))
                outcomes["dead_letter"] += 1
                continue
            if priority:
                req = req.model_copy(update={"priority": max(req.priority, 2.0), "source": "cache_miss"})
            sent.partition = m.partition
            verdict = dedup.admit(req, m.partition, m.offset, sent, settings.dedup)
            outcomes[verdict] += 1
            if verdict in ("admitted", "readmitted"):
                admitted.append(req)
                source[req.request_id] = m.partition
        # Order matters for a crash: the pairs' "sent" state is on the broker before their batch,
        # and the batch before the mark that it went out.
        await state.flush(app, sent, acked=True)
        acks = []
        out = priority_batches_topic if priority else batches_topic
        for batch in dedup.make_batches(admitted, cfg.max_size, priority=priority):
            acks.append(await out.send(key=batch.batch_id.encode(),
                                                 value=batch.model_dump_json(exclude_none=True).encode()))
            metrics.BATCHES.labels(str(priority).lower()).inc()
            metrics.BATCH_SIZE.observe(len(batch.requests))
        if acks:
            # once the broker has the batches, a redelivered request must not be batched again
            await asyncio.gather(*acks)
            for req in admitted:
                # the mark goes to the changelog partition of the pair's own source partition, where a
                # worker that takes the partition over recovers it (not the last event's partition)
                sent.partition = source[req.request_id]
                dedup.mark_batched(req, sent)
            await state.flush(app, sent, acked=True)
        _count(stage, outcomes)
        metrics.STAGE_SECONDS.labels(stage).observe(time.perf_counter() - t0)


@app.agent(requests_topic)
async def batch_requests(stream):
    await _dedup_and_batch(stream, "batch_requests", settings.batch.max_wait_ms / 1000, priority=False)


@app.agent(priority_topic)
async def batch_priority_requests(stream):
    await _dedup_and_batch(stream, "batch_priority_requests", settings.batch.priority_wait_ms / 1000, priority=True)


_apply_lock = threading.Lock()
_pushers: "weakref.WeakSet" = weakref.WeakSet()  # stopped when the worker stops (their retry loops end)


def _pusher(store: str):
    """A Feast store and pusher per agent (pushes run in threads; stores are not shared between them)."""
    from feature_repo.client import Pusher
    from feature_repo.store import open_store

    f = settings.features
    with _apply_lock:  # both agents register the definitions on start; one at a time
        fs = open_store(f, settings.data_dir, settings.redis_port)
        _settle_gc()  # Feast and its imports are loaded now
    pusher = Pusher(fs, f.retry_max_s, on_retry=lambda what, e: metrics.PUSH_RETRIES.labels(store).inc())
    _pushers.add(pusher)
    return pusher


@app.on_before_shutdown.connect
async def _stop_pushers(app, **kwargs) -> None:
    for pusher in list(_pushers):
        pusher.stop()


async def _push(pusher, rows_by_view: dict[str, list[dict]], store: str) -> dict[tuple[str, int], str]:
    """Push in a thread; returns the rejected rows ((view, index) -> reason), every other row stored.
    A store that keeps failing is retried until it works or the agent is stopped (cancelled)."""
    from feature_repo.client import RowsRejected

    t0 = time.perf_counter()
    rejected: dict[tuple[str, int], str] = {}
    try:
        await asyncio.to_thread(pusher.push, rows_by_view, store)
    except asyncio.CancelledError:
        pusher.stop()  # the worker is stopping: the thread's retry loop ends now, not never
        raise
    except RowsRejected as e:
        rejected = {(r.view, r.index): r.reason for r in e.rejected}
    metrics.PUSH_SECONDS.labels(store).observe(time.perf_counter() - t0)
    for view, rows in rows_by_view.items():
        metrics.FEATURE_ROWS.labels(view, store).inc(len(rows) - sum(1 for v, _ in rejected if v == view))
    return rejected


def _state_copy(st: dict | None) -> dict | None:
    """An entity's state one level deep: features.apply and features.rows change lists and dicts in
    it in place, never deeper, so the state as it was stays intact for a rollback."""
    return None if st is None else {k: v.copy() if isinstance(v, (dict, list)) else v for k, v in st.items()}


if settings.features.enabled:
    @app.agent(edges_topic)
    async def route_edges(stream):
        """Each admitted edge to the entities it informs (query, product, pair), keyed by entity."""
        async for events in _take(stream, TAKE, WITHIN):
            t0 = time.perf_counter()
            outcomes: Counter = Counter()
            records = []
            for event in events:
                try:
                    for key, contrib in features.contributions(json.loads(event.message.value)):
                        records.append((key.encode(), json.dumps(contrib).encode()))
                    outcomes["routed"] += 1
                except (ValueError, KeyError, TypeError, AttributeError) as err:
                    await _dead_letter(event, "route_edges", "invalid_edge", repr(err))
                    outcomes["dead_letter"] += 1
            await state.send_keyed(app, entity_topic.get_topic_name(), records)
            _count("route_edges", outcomes)
            metrics.STAGE_SECONDS.labels("route_edges").observe(time.perf_counter() - t0)

    @app.agent(entity_topic)
    async def write_features(stream):
        """Entity state -> feature rows -> Feast online store; rows on to features.rows.

        Order for a crash: rows are online and on features.rows (acknowledged) before the state
        that says their edges were applied; a replay then re-pushes identical rows, never skips.
        An entity whose row cannot be built or stored (a deterministic failure, not the store being
        down) goes back to its state before this batch and the updates that touched it in the batch
        go to the dead-letter topic with the reason; the rest of the batch is stored.
        """
        f = settings.features
        pusher = await asyncio.to_thread(_pusher, "online")
        async for events in _take(stream, f.push_batch, f.push_wait_ms / 1000):
            t0 = time.perf_counter()
            outcomes: Counter = Counter()
            touched: dict[str, list] = {}  # entity key -> the updates that changed it in this batch
            before: dict[str, dict | None] = {}  # entity key -> its state before this batch
            for event in events:
                m = event.message
                try:
                    key, contrib = m.key.decode(), json.loads(m.value)
                    prior = knowledge.get(key)
                    st, changed = features.apply(_state_copy(prior), contrib, f)  # a failure leaves prior intact
                except (ValueError, KeyError, TypeError, AttributeError) as err:
                    await _dead_letter(event, "write_features", "invalid_internal", repr(err))
                    outcomes["dead_letter"] += 1
                    continue
                outcomes["applied" if changed else "duplicate"] += 1
                if changed:
                    before.setdefault(key, prior)
                    knowledge.partition = m.partition
                    knowledge[key] = st
                    touched.setdefault(key, []).append(event)
            rows_by_view: dict[str, list[dict]] = {}
            owners: dict[str, list[str]] = {}  # view -> entity key of each row
            bad: dict[str, str] = {}  # entity key -> why its rows were not stored
            now = time.time()
            for key in touched:
                try:
                    built = [(view, features.stamp(row, now)) for view, row in features.rows(key, knowledge[key], f)]
                except (ValueError, KeyError, TypeError, AttributeError) as err:
                    bad[key] = f"feature rows of {key} cannot be built: {type(err).__name__}: {err}"
                    continue
                for view, row in built:
                    rows_by_view.setdefault(view, []).append(row)
                    owners.setdefault(view, []).append(key)
            if rows_by_view:
                for (view, i), why in (await _push(pusher, rows_by_view, "online")).items():
                    bad.setdefault(owners[view][i], f"{view} row rejected by the online store: {why}")
                stored = {v: [r for r, k in zip(rows, owners[v]) if k not in bad] for v, rows in rows_by_view.items()}
                for r in stored.get("query_intents", []) + stored.get("product_subcategory", []) + \
                        stored.get("co_purchase_reasons", []):
                    metrics.FRESHNESS.observe(r["freshness_s"])
                await state.send_keyed(app, rows_topic.get_topic_name(), [
                    (f"{v}|{r.get('query_id') or r.get('product_id') or r.get('pair_id')}".encode(),
                     json.dumps({"view": v, "row": r}).encode()) for v, rows in stored.items() for r in rows],
                    acked=True)
            for key, why in bad.items():
                _roll_back(key, before[key], touched[key][0].message.partition)
                for event in touched[key]:
                    await _dead_letter(event, "write_features", "feature_row_rejected", why)
                outcomes["applied"] -= len(touched[key])
                outcomes["dead_letter"] += len(touched[key])
            await state.flush(app, knowledge, acked=True)
            _count("write_features", +outcomes)
            metrics.STAGE_SECONDS.labels("write_features").observe(time.perf_counter() - t0)

    def _roll_back(key: str, prior: dict | None, partition: int) -> None:
        """An entity back to its state before the batch, so the dead-lettered updates are not taken as
        applied (a re-drive applies them); its row clock stays where it got, as rows of its other
        views may be stored with it."""
        clock = knowledge[key].get("row_ts", 0.0)
        restored = _state_copy(prior)
        if restored is None:  # new in this batch: an empty entity, which builds no rows
            restored = {"seen": [], "edges": {}, "meta": {}, "row_ts": 0.0, "last_event": 0.0}
        restored["row_ts"] = max(restored.get("row_ts", 0.0), clock)
        knowledge.put(key, restored, partition)

    @app.agent(rows_topic)
    async def write_offline(stream):
        """features.rows -> Feast offline store, one batched write per view per flush."""
        f = settings.features
        pusher = await asyncio.to_thread(_pusher, "offline")
        async for events in _take(stream, f.offline_flush_rows, f.offline_flush_s):
            outcomes: Counter = Counter()
            rows_by_view: dict[str, list[dict]] = {}
            sources: dict[str, list] = {}  # view -> the message of each row
            for event in events:
                try:
                    msg = json.loads(event.message.value)
                    view, row = msg["view"], msg["row"]
                    if not isinstance(view, str) or not isinstance(row, dict):
                        raise TypeError(f"view {type(view).__name__}, row {type(row).__name__}")
                except (ValueError, KeyError, TypeError) as err:
                    await _dead_letter(event, "write_offline", "invalid_internal", repr(err))
                    outcomes["dead_letter"] += 1
                    continue
                rows_by_view.setdefault(view, []).append(row)
                sources.setdefault(view, []).append(event)
            rejected = await _push(pusher, rows_by_view, "offline")
            for (view, i), why in rejected.items():
                await _dead_letter(sources[view][i], "write_offline", "feature_row_rejected",
                                   f"{view} row rejected by the offline store: {why}")
            outcomes["dead_letter"] += len(rejected)
            outcomes["written"] += sum(len(rows) for rows in rows_by_view.values()) - len(rejected)
            _count("write_offline", +outcomes)


def _settle_gc() -> None:
    """Collect less often (young objects die young here), and move everything loaded so far (Faust,
    Feast, pandas, tables) out of the collector's sight: full collections then scan only what the
    stream creates (docs/BENCHMARKS.md)."""
    if settings.gc_gen0_threshold:
        _, g1, g2 = gc.get_threshold()
        gc.set_threshold(settings.gc_gen0_threshold, g1, g2)
    if settings.gc_freeze:
        gc.collect()
        gc.freeze()


@app.task
async def _freeze_after_start() -> None:
    _settle_gc()


@app.task
async def _serve_metrics() -> None:
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr="127.0.0.1")
        log.info("metrics on http://127.0.0.1:%d/metrics", settings.metrics_port)

_fetch_watch = faust_patches.FetchWatch()


@app.timer(5.0)
async def _watch_fetch_positions() -> None:
    """A partition fetched past what its agents got, with no newer message to show the gap, is
    fetched again (faust_patches 9.)."""
    if app.consumer.flow_active:
        await _fetch_watch.check(app)


from streams import web  # noqa: E402
web.register(app, settings, request_topic=priority_topic)
