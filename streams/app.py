"""The intentflow stream app: the whole dataflow at a glance. Logic lives in processors/.

behavior.search_buy  --[sample_search_buy]----------------------------> knowledge.requests
behavior.co_purchase --[sample_co_purchase]--> co_purchase.by_product --[check_products]--^
knowledge.requests --[dedup + micro-batch]--> generation.batches
knowledge.requests.priority --[dedup + micro-batch]--> generation.batches.priority (generated first)
(generation and filter workers, .venv-ml) --> knowledge.edges
knowledge.edges --[route_edges]--> features.by_entity --[write_features: Feast online]--> features.rows
features.rows --[write_offline: Feast offline, batched]
anything undecodable or invalid --> behavior.dlq (with the reason and the original bytes)

`create_app()` builds it: the topics, then the tables, then one agent per stage, top to bottom.
Each agent takes micro-batches from its Stage (streams/stage.py: retries, dead letters, metrics)
and writes its tables through streams/state.py (one changelog write per key per batch, to the
partition `at_partition` names). Importing this module builds nothing and patches nothing;
`streams.app.app` is built on first use. Run it with `intentflow worker` (or `faust -A streams.app worker`).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import threading
import time
import weakref

import faust
from pydantic import ValidationError

from infra import logs
from infra.settings import TABLES
from processors import dedup, features, sampling
from processors.contracts import Edge, FeatureRowMessage
from processors.events import EventError, future_error, parse_co_purchase, parse_search_buy
from processors.requests import GenerationRequest
from streams import faust_patches, metrics, state, web
from streams.producer import misrouted
from streams.settings import Settings, faust_credentials, get_settings
from streams.stage import Stage
from streams.state import TrackedTable, at_partition

log = logging.getLogger("intentflow.streams")

TAKE, WITHIN = 1000, 0.05  # events per micro-batch of the sampling and routing stages, seconds to fill one


def create_app(settings: Settings | None = None) -> faust.App:
    """The stream worker's Faust app: the topics, tables and agents of the dataflow above.

    `settings`: streams.settings.Settings (default: INTENTFLOW_* and .env). Installs the Faust
    patches first (streams/faust_patches.install: process-wide, each once). Raises RuntimeError on
    a Faust release other than the pinned one."""
    settings = settings or get_settings()
    faust_patches.install(settings, state.settle)
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
        stream_buffer_maxsize=settings.stream_buffer_maxsize,
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

    # --- topics: keys and values are the bytes on the wire; the processors parse them ----------
    def topic(name: str) -> faust.TopicT:
        return app.topic(name, schema=faust_patches.RawSchema())

    t = settings.topics
    search_buy_topic, co_purchase_topic = topic(t.search_buy), topic(t.co_purchase)
    by_product_topic = topic(t.by_product)
    requests_topic, priority_topic = topic(t.requests), topic(t.priority_requests)
    batches_topic, priority_batches_topic = topic(t.batches), topic(t.priority_batches)
    edges_topic, entity_topic, rows_topic = topic(t.edges), topic(t.entity_updates), topic(t.feature_rows)
    dlq_topic = topic(t.dlq)

    # --- tables: those of infra/settings.TABLES (`intentflow topics create` makes their changelogs) --
    def table(name: str) -> TrackedTable:
        made = app.Table(name, default=None, partitions=settings.partitions, help=TABLES[name])
        assert made.key_serializer == made.value_serializer == "json", "streams/state.py writes JSON changelogs"
        return TrackedTable(made)

    sb_pairs, sb_queries, sb_seen = table("sb_pairs"), table("sb_queries"), table("sb_seen_blocks")
    cp_pairs, cp_types, cp_seen = table("cp_pairs"), table("cp_type_pairs"), table("cp_seen_blocks")
    products, sent, knowledge = table("products"), table("sent_requests"), table("entity_knowledge")
    assert set(app.tables) == set(TABLES), "every table of infra/settings.TABLES is made here, and no other"

    def agent(source: faust.TopicT):
        """app.agent, named "streams.app.<function>" in the agent registry and in Faust's logs."""
        def register(fun):
            fun.__qualname__ = fun.__name__  # Faust's logs name an agent by its function's qualname
            return app.agent(source, name=f"{__name__}.{fun.__name__}")(fun)
        return register

    def stage(name: str) -> Stage:
        return Stage(name, dlq_topic, settings.batch_max_attempts)

    destinations = {"request": requests_topic, "product": by_product_topic}

    async def publish(emits: list[sampling.Emit]) -> None:
        by_topic: dict[str, list[tuple[bytes, bytes]]] = {}
        for e in emits:
            by_topic.setdefault(e.to, []).append((e.key.encode(), json.dumps(e.value).encode()))
        for to, records in by_topic.items():
            await state.send_keyed(app, destinations[to].get_topic_name(), records)
            metrics.EMITTED.labels(to).inc(len(records))

    # --- sampling: behaviour events -> generation requests ----------------------------------------
    seen_ids: dict[str, tuple[sampling.SeenIds, faust.TopicT]] = {}  # stage -> its event ids, its source

    async def sample(stream, name: str, parse, step, source: faust.TopicT, tables: tuple[TrackedTable, ...],
                     seen_table: TrackedTable) -> None:
        cfg = settings.sampling
        seen = sampling.SeenIds(seen_table, ttl_s=cfg.event_id_ttl_s)
        seen.owned = _owned(app, source)  # set again by reindex_seen on every assignment
        seen_ids[name] = (seen, source)
        async for batch in stage(name).batches(stream, TAKE, WITHIN):
            emits: list[sampling.Emit] = []
            max_ts = 0.0
            now = time.time()
            partitions = await _partitions(app, source)
            seen.begin()
            for event in batch.events:
                m = event.message
                try:
                    ev = parse(m.value)
                except EventError as err:
                    await batch.dead_letter(event, "invalid_event", str(err))
                    continue
                why = future_error(ev, now, cfg.max_future_skew_s)
                if why:  # its time would push event-time state (dedup expiry, pair TTLs) ahead
                    await batch.dead_letter(event, "invalid_event", why)
                    continue
                key = ev.partition_key.encode()
                if misrouted(m.key, m.partition, key, partitions):
                    # keyed otherwise, or by the right key with another partitioner (CRC32): route it
                    # to the partition that owns its pair, or the pair's state splits across two
                    await source.send(key=key, value=m.value)
                    batch.outcomes["rekeyed" if m.key != key else "rerouted"] += 1
                    continue
                at_partition(m.partition, *tables)
                r = step(ev, m.partition, m.offset, *tables, seen, cfg)
                batch.outcomes[r.outcome] += 1
                emits.extend(r.emits)
                max_ts = max(max_ts, ev.ts)
            seen.commit(max_ts, cfg.event_id_ttl_s)
            # the ids first, acknowledged: a pair count that reaches the changelog has its event ids
            # there too, so a redelivery after a crash is told from an event never counted
            # (processors/sampling.py)
            await state.flush(app, seen_table, acked=True)
            await state.flush(app, *tables)
            await publish(_coalesce(emits))

    @app.on_partitions_assigned.connect
    async def reindex_seen(app, assigned, **kwargs) -> None:
        """After an assignment the tables are recovered before events flow again: each stage's event
        ids are re-read at its next micro-batch, from the partitions it now owns."""
        for seen, source in seen_ids.values():
            seen.owned = _owned(app, source)
            seen.stale = True

    @agent(search_buy_topic)
    async def sample_search_buy(stream):
        await sample(stream, "sample_search_buy", parse_search_buy, sampling.sample_search_buy, search_buy_topic,
                     (sb_pairs, sb_queries), sb_seen)

    @agent(co_purchase_topic)
    async def sample_co_purchase(stream):
        await sample(stream, "sample_co_purchase", parse_co_purchase, sampling.sample_co_purchase, co_purchase_topic,
                     (cp_pairs, cp_types), cp_seen)

    @agent(by_product_topic)
    async def check_products(stream):
        async for batch in stage("check_products").batches(stream, TAKE, WITHIN):
            emits: list[sampling.Emit] = []
            for event in batch.events:
                try:
                    msg = json.loads(event.message.value)
                    at_partition(event.message.partition, products)
                    r = sampling.product_degree_step(msg, products, settings.sampling)
                except (ValueError, KeyError, TypeError) as err:
                    await batch.dead_letter(event, "invalid_internal", repr(err))
                    continue
                batch.outcomes[r.outcome] += 1
                emits.extend(r.emits)
            await state.flush(app, products)
            await publish(emits)

    # --- dedup and micro-batching: requests -> generation batches ---------------------------------
    async def dedup_and_batch(stream, name: str, wait_s: float, priority: bool) -> None:
        cfg = settings.batch
        out = priority_batches_topic if priority else batches_topic
        async for batch in stage(name).batches(stream, cfg.max_size, wait_s):
            admitted: list[GenerationRequest] = []
            source: dict[str, int] = {}  # request id -> partition of the message that carried it
            for event in batch.events:
                m = event.message
                try:
                    req = GenerationRequest.model_validate_json(m.value)
                except ValidationError as err:
                    await batch.dead_letter(event, "invalid_request", str(err))
                    continue
                if priority:
                    req = req.model_copy(update={"priority": max(req.priority, 2.0), "source": "cache_miss"})
                at_partition(m.partition, sent)
                verdict = dedup.admit(req, m.partition, m.offset, sent, settings.dedup)
                batch.outcomes[verdict] += 1
                if verdict in ("admitted", "readmitted"):
                    admitted.append(req)
                    source[req.request_id] = m.partition
            # Order matters for a crash: the pairs' "sent" state is on the broker before their batch,
            # and the batch before the mark that it went out.
            await state.flush(app, sent, acked=True)
            acks = []
            for b in dedup.make_batches(admitted, cfg.max_size, priority=priority):
                acks.append(await out.send(key=b.batch_id.encode(), value=b.model_dump_json(exclude_none=True).encode()))
                metrics.BATCHES.labels(str(priority).lower()).inc()
                metrics.BATCH_SIZE.observe(len(b.requests))
            if acks:
                # once the broker has the batches, a redelivered request must not be batched again
                await asyncio.gather(*acks)
                for req in admitted:
                    # the mark goes to the changelog partition of the pair's own source partition, where a
                    # worker that takes the partition over recovers it (not the last event's partition)
                    at_partition(source[req.request_id], sent)
                    dedup.mark_batched(req, sent)
                await state.flush(app, sent, acked=True)

    @agent(requests_topic)
    async def batch_requests(stream):
        await dedup_and_batch(stream, "batch_requests", settings.batch.max_wait_ms / 1000, priority=False)

    @agent(priority_topic)
    async def batch_priority_requests(stream):
        await dedup_and_batch(stream, "batch_priority_requests", settings.batch.priority_wait_ms / 1000, priority=True)

    # --- features: admitted edges -> entity state -> Feast online, then offline -------------------
    if settings.features.enabled:
        pushers = _Pushers(settings)
        app.on_before_shutdown.connect(pushers.stop_all)

        @agent(edges_topic)
        async def route_edges(stream):
            """Each admitted edge to the entities it informs (query, product, pair), keyed by entity."""
            async for batch in stage("route_edges").batches(stream, TAKE, WITHIN):
                records = []
                for event in batch.events:
                    try:
                        edge = Edge.model_validate_json(event.message.value).model_dump(mode="json")
                        routed = features.contributions(edge)
                    except ValidationError as err:  # before ValueError, its base
                        await batch.dead_letter(event, "invalid_edge", _reason("edge", err))
                        continue
                    except (ValueError, KeyError, TypeError) as err:
                        await batch.dead_letter(event, "invalid_edge", repr(err))
                        continue
                    for key, contrib in routed:
                        records.append((key.encode(), json.dumps(contrib).encode()))
                    batch.outcomes["routed"] += 1
                await state.send_keyed(app, entity_topic.get_topic_name(), records)

        @agent(entity_topic)
        async def write_features(stream):
            """Entity state -> feature rows -> Feast online store; rows on to features.rows.

            Order for a crash: rows are online and on features.rows (acknowledged) before the state
            that says their edges were applied; a replay then re-pushes identical rows, never skips.
            An entity whose row cannot be built or stored (a deterministic failure, not the store being
            down) goes back to its state before this batch and the updates that touched it in the batch
            go to the dead-letter topic with the reason; the rest of the batch is stored.
            """
            f = settings.features
            pusher = await asyncio.to_thread(pushers.open, "online")
            async for batch in stage("write_features").batches(stream, f.push_batch, f.push_wait_ms / 1000):
                touched: dict[str, list] = {}  # entity key -> the updates that changed it in this batch
                before: dict[str, dict | None] = {}  # entity key -> its state before this batch
                for event in batch.events:
                    m = event.message
                    try:
                        key, contrib = m.key.decode(), json.loads(m.value)
                        prior = knowledge.get(key)
                        st, changed = features.apply(_state_copy(prior), contrib, f)  # a failure leaves prior intact
                    except (ValueError, KeyError, TypeError, AttributeError) as err:
                        await batch.dead_letter(event, "invalid_internal", repr(err))
                        continue
                    batch.outcomes["applied" if changed else "duplicate"] += 1
                    if changed:
                        before.setdefault(key, prior)
                        at_partition(m.partition, knowledge)
                        knowledge[key] = st
                        touched.setdefault(key, []).append(event)
                bad = await _store_rows(touched, pusher)  # entity key -> why its rows were not stored
                for key, why in bad.items():
                    roll_back(key, before[key], touched[key][0].message.partition)
                    batch.outcomes["applied"] -= len(touched[key])
                    for event in touched[key]:
                        await batch.dead_letter(event, "feature_row_rejected", why)
                await state.flush(app, knowledge, acked=True)

        async def _store_rows(touched: dict[str, list], pusher) -> dict[str, str]:
            """The feature rows of the touched entities to the online store and features.rows
            (acknowledged); returns the entities whose rows were not stored, with the reason."""
            f = settings.features
            rows_by_view: dict[str, list[dict]] = {}
            owners: dict[str, list[str]] = {}  # view -> entity key of each row
            bad: dict[str, str] = {}
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
            if not rows_by_view:
                return bad
            for (view, i), why in (await _push(pusher, rows_by_view, "online")).items():
                bad.setdefault(owners[view][i], f"{view} row rejected by the online store: {why}")
            stored = {v: [r for r, k in zip(rows, owners[v]) if k not in bad] for v, rows in rows_by_view.items()}
            for view in features.FRESHNESS_VIEWS:
                for r in stored.get(view, []):
                    metrics.FRESHNESS.observe(r["freshness_s"])
            await state.send_keyed(app, rows_topic.get_topic_name(), [
                (features.row_key(v, r).encode(), json.dumps({"view": v, "row": r}).encode())  # FeatureRowMessage
                for v, rows in stored.items() for r in rows], acked=True)
            return bad

        def roll_back(key: str, prior: dict | None, partition: int) -> None:
            """An entity back to its state before the batch, so the dead-lettered updates are not taken as
            applied (a re-drive applies them); its row clock stays where it got, as rows of its other
            views may be stored with it."""
            clock = knowledge[key].get("row_ts", 0.0)
            restored = _state_copy(prior)
            if restored is None:  # new in this batch: an empty entity, which builds no rows
                restored = {"seen": [], "edges": {}, "meta": {}, "row_ts": 0.0, "last_event": 0.0}
            restored["row_ts"] = max(restored.get("row_ts", 0.0), clock)
            at_partition(partition, knowledge)
            knowledge[key] = restored

        @agent(rows_topic)
        async def write_offline(stream):
            """features.rows -> Feast offline store, one batched write per view per flush."""
            f = settings.features
            pusher = await asyncio.to_thread(pushers.open, "offline")
            async for batch in stage("write_offline").batches(stream, f.offline_flush_rows, f.offline_flush_s):
                rows_by_view: dict[str, list[dict]] = {}
                sources: dict[str, list] = {}  # view -> the message of each row
                for event in batch.events:
                    try:
                        msg = FeatureRowMessage.model_validate_json(event.message.value)
                    except ValidationError as err:
                        await batch.dead_letter(event, "invalid_internal", _reason("feature row", err))
                        continue
                    view, row = msg.view, msg.row
                    rows_by_view.setdefault(view, []).append(row)
                    sources.setdefault(view, []).append(event)
                rejected = await _push(pusher, rows_by_view, "offline")
                for (view, i), why in rejected.items():
                    await batch.dead_letter(sources[view][i], "feature_row_rejected",
                                            f"{view} row rejected by the offline store: {why}")
                batch.outcomes["written"] += sum(len(rows) for rows in rows_by_view.values()) - len(rejected)

    # --- the worker itself: memory, metrics, the fetch watch, the operator page -------------------
    @app.task
    async def freeze_after_start() -> None:
        _settle_gc(settings)

    @app.task
    async def serve_metrics() -> None:
        if settings.metrics_port:
            from prometheus_client import start_http_server

            start_http_server(settings.metrics_port, addr="127.0.0.1")
            log.info("metrics on http://127.0.0.1:%d/metrics", settings.metrics_port)

    fetch_watch = faust_patches.FetchWatch()

    @app.timer(5.0)
    async def watch_fetch_positions() -> None:
        """A partition fetched past what its agents got, with no newer message to show the gap, or
        whose commit waits on a message no agent holds, is fetched again (faust_patches 9., 14.)."""
        if app.consumer.flow_active:
            await fetch_watch.check(app)

    web.register(app, settings, request_topic=priority_topic)
    return app


def __getattr__(name: str):
    """`streams.app.app`: the worker's app, built by create_app() on first use (`intentflow worker`,
    `faust -A streams.app worker`)."""
    if name == "app":
        built = globals()["app"] = create_app()
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- helpers of the stages above, free of the app's state -----------------------------------------

def _reason(what: str, err: ValidationError) -> str:
    """pydantic's reason, one line per field: "invalid edge: lineage.batch_id: Field required"."""
    return f"invalid {what}: " + "; ".join(f"{'.'.join(map(str, e['loc'])) or what}: {e['msg']}"
                                          for e in err.errors(include_url=False))


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


def _owned(app: faust.App, source: faust.TopicT) -> set[int]:
    """Partitions of a stage's source topic this worker owns (its tables are co-partitioned)."""
    name = source.get_topic_name()
    return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == name}


async def _partitions(app: faust.App, source: faust.TopicT) -> int:
    """The partition count of a stage's source topic, from the metadata the producer partitions by."""
    return len(await app.producer._ensure_producer().partitions_for(source.get_topic_name()))  # noqa: SLF001


def _state_copy(st: dict | None) -> dict | None:
    """An entity's state one level deep: features.apply and features.rows change lists and dicts in
    it in place, never deeper, so the state as it was stays intact for a rollback."""
    return None if st is None else {k: v.copy() if isinstance(v, (dict, list)) else v for k, v in st.items()}


class _Pushers:
    """A Feast store and pusher per feature agent (pushes run in threads; stores are not shared
    between them), all stopped when the worker stops (their retry loops end)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lock = threading.Lock()  # both agents register the definitions on start; one at a time
        self.open_ones: "weakref.WeakSet" = weakref.WeakSet()

    def open(self, store: str):
        from feature_repo.client import Pusher
        from feature_repo.store import open_store

        s = self.settings
        with self.lock:
            fs = open_store(s.features, s.data_dir, s.redis_port)
            _settle_gc(s)  # Feast and its imports are loaded now
        pusher = Pusher(fs, s.features.retry_max_s, on_retry=lambda what, e: metrics.PUSH_RETRIES.labels(store).inc())
        self.open_ones.add(pusher)
        return pusher

    async def stop_all(self, app, **kwargs) -> None:
        for pusher in list(self.open_ones):
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


def _settle_gc(settings: Settings) -> None:
    """Collect less often (young objects die young here), and move everything loaded so far (Faust,
    Feast, pandas, tables) out of the collector's sight: full collections then scan only what the
    stream creates (docs/BENCHMARKS.md)."""
    if settings.gc_gen0_threshold:
        _, g1, g2 = gc.get_threshold()
        gc.set_threshold(settings.gc_gen0_threshold, g1, g2)
    if settings.gc_freeze:
        gc.collect()
        gc.freeze()
