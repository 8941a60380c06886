"""The `intentflow` command line. Heavy imports stay inside commands so `--help` is instant."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import click

from streams.settings import get_settings


def _emit(obj: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(obj, default=str))
    else:
        for k, v in obj.items():
            click.echo(f"{k}: {v}")


@click.group()
def main() -> None:
    """intentflow: continuous commonsense knowledge from shopping behaviour."""


# --- services and topics ----------------------------------------------------------------


@main.group()
def infra() -> None:
    """Start, stop and check the local broker (Tansu) and Redis."""


def _broker_port(s) -> int:
    host, _, port = s.broker.split(",")[0].rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        raise click.UsageError(f"INTENTFLOW_BROKER={s.broker} is not local; `infra` only manages local services")
    return int(port)


@infra.command("up")
@click.option("--no-redis", is_flag=True, help="start only the broker")
@click.option("--json", "as_json", is_flag=True)
def infra_up(no_redis: bool, as_json: bool) -> None:
    """Start the services (idempotent) and create the topics."""
    from infra import services

    s = get_settings()
    run = Path(s.data_dir) / "run"
    out = {"broker": s.broker, "broker_pid": services.broker_up(_broker_port(s), run).pid()}
    if not no_redis:
        out.update(redis=f"127.0.0.1:{s.redis_port}", redis_pid=services.redis_up(s.redis_port, run).pid())
    out["topics_created"] = services.ensure_pipeline_topics(s)
    _emit(out, as_json)


@infra.command("down")
@click.option("--json", "as_json", is_flag=True)
def infra_down(as_json: bool) -> None:
    """Stop the services started by `infra up`."""
    from infra import services

    s = get_settings()
    run = Path(s.data_dir) / "run"
    _emit({"broker_stopped": services.down(services.Service("tansu", _broker_port(s), run)),
           "redis_stopped": services.down(services.Service("redis", s.redis_port, run))}, as_json)


@infra.command("status")
@click.option("--json", "as_json", is_flag=True)
def infra_status(as_json: bool) -> None:
    """Health of the broker and Redis; exit 1 if either is down."""
    from infra import services

    s = get_settings()
    out = {"broker": services.broker_healthy(s.broker, security=s.kafka), "redis": services.redis_ping(s.redis_port)}
    _emit(out, as_json)
    sys.exit(0 if all(out.values()) else 1)


@main.group()
def topics() -> None:
    """Topic administration."""


@topics.command("create")
def topics_create() -> None:
    """Create every topic the pipeline uses (on any Kafka: INTENTFLOW_BROKER): the stream and ML
    workers' topics, the stream tables' changelogs (<app_id>-<table>-changelog, compacted) and Faust's
    leader topic, with INTENTFLOW_PARTITIONS and INTENTFLOW_REPLICATION. Topics that exist are left as
    they are."""
    from infra import services

    s = get_settings()
    with _broker_answers(s):
        created = services.ensure_pipeline_topics(s)
    click.echo(f"created: {', '.join(created) or 'none (all exist)'}")


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--markdown", is_flag=True, help="the documented table of settings (docs/CONFIGURATION.md)")
def config(as_json: bool, markdown: bool) -> None:
    """Print every setting with its current value (from INTENTFLOW_* and .env)."""
    from infra import settings as model

    if markdown:
        click.echo(model.markdown(), nl=False)
        return
    d = get_settings().model_dump()
    click.echo(json.dumps(d, indent=None if as_json else 2))


# --- the stream worker -------------------------------------------------------------------


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--web-port", type=int, default=None, help="Faust web port (default: no web server)")
@click.option("--loglevel", "-l", default=None)
@click.argument("faust_args", nargs=-1, type=click.UNPROCESSED)
def worker(web_port: int | None, loglevel: str | None, faust_args: tuple[str, ...]) -> None:
    """Run a stream worker (sampling, dedup, micro-batching). Several workers share the partitions."""
    from infra import services

    s = get_settings()
    services.ensure_pipeline_topics(s)  # idempotent: what `intentflow topics create` makes
    from streams.app import app

    import asyncio

    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # ~20% more events/s than asyncio's loop
    argv = ["intentflow-worker", "worker", "-l", loglevel or s.log_level]
    # the page and knowledge API listen on loopback only (put a proxy in front to expose them)
    argv += ["--web-port", str(web_port), "--web-bind", "127.0.0.1", "--web-host", "127.0.0.1"] if web_port \
        else ["--without-web"]
    sys.argv = argv + list(faust_args)
    Path(s.data_dir, "faust").mkdir(parents=True, exist_ok=True)
    app.main()


# --- producing -----------------------------------------------------------------------------


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--topic", default=None, help="override the topic (default: by event kind)")
@click.option("--kind", type=click.Choice(["search_buy", "co_purchase"]), default=None, help="kind of rows without a `type`")
@click.option("--rate", type=float, default=None, help="events per second (default: as fast as possible)")
@click.option("--limit", type=int, default=None, help="stop after this many rows")
@click.option("--now", is_flag=True, help="stamp each event with the time it is sent (history as live traffic)")
@click.option("--json", "as_json", is_flag=True)
def replay(path: str, topic: str | None, kind: str | None, rate: float | None, limit: int | None, now: bool,
           as_json: bool) -> None:
    """Produce events from a JSONL, CSV or Parquet file. Invalid rows go to the DLQ with the reason."""
    from streams.producer import DeliveryError, EventProducer
    from streams.replay import replay as run

    try:
        counts = run(path, EventProducer(), topic=topic, kind=kind, rate=rate, limit=limit, progress=not as_json, now=now)
    except DeliveryError as e:
        raise click.ClickException(str(e))
    _emit(counts, as_json)


@main.group()
def dlq() -> None:
    """Dead-letter topics: re-drive what failed once the cause is fixed."""


@dlq.command("replay")
@click.argument("topic")
@click.option("--stage", default=None, help="only dead letters of this stage (e.g. sample_search_buy, generate, filter)")
@click.option("--kind", default=None, help="only dead letters of this kind (e.g. invalid_event, engine_failed)")
@click.option("--group", default=None,
              help="consumer group that remembers which letters were read (a second run reads only newer "
                   "ones); default intentflow-dlq-replay, and one of its own per --stage/--kind filter "
                   "(intentflow-dlq-replay.stage=S.kind=K), so a filtered run never marks the letters it "
                   "skips as read for an unfiltered one")
@click.option("--max-failures", default=3, show_default=True, type=click.IntRange(min=2),
              help="a message dead-lettered this many times (letters of TOPIC with the same source topic and "
                   "bytes; the letter itself is the first) is not sent again: counted as gave_up")
@click.option("--dry-run", is_flag=True, help="count what would be sent, send nothing")
@click.option("--json", "as_json", is_flag=True)
def dlq_replay(topic: str, stage: str | None, kind: str | None, group: str, max_failures: int, dry_run: bool,
               as_json: bool) -> None:
    """Send each dead letter of TOPIC back to the topic it came from, with its original key and
    bytes (behavior.dlq, generation.dlq, filter.dlq). Offsets are committed only after the broker
    has the re-sent messages; letters that cannot be re-driven are counted, not sent. A message
    that fails every time (its letters pile up, one per re-drive) is sent again until it has
    failed --max-failures times, then counted as gave_up."""
    from collections import Counter

    from confluent_kafka import Consumer, Producer, TopicPartition

    from infra.kafka_compat import end_offsets
    from infra.kafka_conf import client_config
    from processors.dlq import NotRedrivable, redrive

    from infra.topics import existing

    s = get_settings()
    group = group or "intentflow-dlq-replay" + (f".stage={stage}" if stage else "") + (f".kind={kind}" if kind else "")
    with _broker_answers(s):
        if not existing(s.broker, [topic], security=s.kafka):
            raise click.ClickException(f"{topic}: no such topic on {s.broker}")
        ends = end_offsets(s.broker, [topic], security=s.kafka)
        failures = _dlq_failures(s, topic)
    c = Consumer(client_config(s.broker, s.kafka, {"group.id": group, "enable.auto.commit": False,
                                                   "auto.offset.reset": "earliest"}))
    starts = {tp.partition: max(tp.offset, 0) for tp in c.committed([TopicPartition(topic, p) for (_, p) in ends], 10)}
    todo = {p for (_, p), e in ends.items() if e > starts.get(p, 0)}
    c.assign([TopicPartition(topic, p, starts.get(p, 0)) for p in todo])
    p = Producer(client_config(s.broker, s.kafka, {"enable.idempotence": True, "acks": "all"}))
    counts: Counter = Counter()
    first_error = None
    known: dict[str, bool] = {}  # destination -> whether it exists (asked once per run)
    last: dict[int, int] = {}
    while todo:
        msgs = c.consume(500, 2.0)
        if not msgs:
            break
        for m in msgs:
            if m.error() or m.offset() >= ends[(topic, m.partition())]:
                continue
            last[m.partition()] = m.offset()
            if m.offset() + 1 >= ends[(topic, m.partition())]:
                todo.discard(m.partition())
            env = _letter(m.value())
            if env is None:
                counts["undecodable"] += 1
                continue
            if (stage and env.get("stage") != stage) or (kind and env.get("kind") != kind):
                counts["skipped"] += 1
                continue
            if failures.get((env.get("source_topic"), env.get("value_b64")), 0) >= max_failures:
                counts["gave_up"] += 1
                continue
            try:
                dest, key, value = redrive(env)
                if dest not in known:
                    with _broker_answers(s):
                        known[dest] = bool(existing(s.broker, [dest], security=s.kafka))
                if not known[dest]:
                    raise NotRedrivable(f"{dest}: no such topic")
            except (NotRedrivable, ValueError) as e:
                counts["not_redrivable"] += 1
                first_error = first_error or str(e)
                continue
            counts[f"to {dest}"] += 1
            if not dry_run:
                p.produce(dest, value, key)
    left = p.flush(30)
    if left:
        raise click.ClickException(f"{left} re-driven messages were not acknowledged; nothing committed")
    if last and not dry_run:
        c.commit(offsets=[TopicPartition(topic, part, off + 1) for part, off in last.items()], asynchronous=False)
    c.close()
    out = {"topic": topic, "dry_run": dry_run, **counts, **({"first_error": first_error} if first_error else {})}
    click.echo(json.dumps(out) if as_json else "\n".join(f"{k}: {v}" for k, v in out.items()))


@contextlib.contextmanager
def _broker_answers(s):
    """A broker that does not answer (down, a wrong address) is one clear error, not a traceback."""
    from confluent_kafka import KafkaException

    try:
        yield
    except KafkaException as e:
        raise click.ClickException(f"the broker at {s.broker} did not answer ({e.args[0] if e.args else e}); "
                                   "is it running? (`intentflow infra up` starts the local one)") from None


def _dlq_failures(s, topic: str) -> dict[tuple, int]:
    """(source topic, original bytes as base64) -> how many letters of the dead-letter topic hold
    them: the times that message failed (the first failure, then one per re-drive that failed)."""
    from collections import Counter

    from infra.topics import read_records

    seen: Counter = Counter()
    for _, value in read_records(s.broker, topic, timeout=120, complete=True, security=s.kafka):
        env = _letter(value)
        if env is not None:
            seen[(env.get("source_topic"), env.get("value_b64"))] += 1
    return dict(seen)


def _letter(value: bytes | None) -> dict | None:
    """A dead letter's JSON object, or None: not JSON, or JSON but not a letter ("hello", [1, 2], null)."""
    try:
        env = json.loads(value)
    except (ValueError, TypeError):
        return None
    return env if isinstance(env, dict) else None


@main.group()
def convert() -> None:
    """Turn public data sets into behaviour events."""


@convert.command("intentionqa")
@click.argument("src", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False))
@click.option("--events-per-pair", default=2, show_default=True)
@click.option("--limit", type=int, default=None, help="at most this many product pairs")
def convert_intentionqa(src: str, out: str, events_per_pair: int, limit: int | None) -> None:
    """IntentionQA task-1 JSONL (Amazon co-purchase pairs) -> co-purchase events JSONL."""
    from processors.sources import intentionqa_events

    n = _write_jsonl(out, intentionqa_events(src, events_per_pair, limit=limit))
    click.echo(f"wrote {n} co-purchase events to {out}")


@main.group()
def samples() -> None:
    """Sample behaviour data shipped with the project."""


@samples.command("search-buy")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False))
@click.option("-n", default=2000, show_default=True)
@click.option("--seed", default=7, show_default=True)
def samples_search_buy(out: str, n: int, seed: int) -> None:
    """Write the hand-written search-buy sample (broad and specific queries) as JSONL."""
    from processors.samples import search_buy_events

    click.echo(f"wrote {_write_jsonl(out, search_buy_events(n, seed))} search-buy events to {out}")


def _write_jsonl(path: str, rows) -> int:
    n = 0
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
            n += 1
    return n


# --- benchmarks and the demo ----------------------------------------------------------------


@main.group()
def bench() -> None:
    """Benchmarks; results go in docs/BENCHMARKS.md."""


@bench.command("stream")
@click.option("--events", default=300_000, show_default=True)
@click.option("--pairs", default=100_000, show_default=True, help="distinct (query, product) pairs")
@click.option("--memory-pairs", default=1_000_000, show_default=True, help="pairs for the state-memory measurement")
@click.option("--runs", default=3, show_default=True, help="worker runs over the same events (fresh group and tables each); the median is reported")
@click.option("--json", "as_json", is_flag=True)
def bench_stream(events: int, pairs: int, memory_pairs: int, runs: int, as_json: bool) -> None:
    """Events/s through sample + dedup + batch on a real broker vs a plain confluent-kafka consumer."""
    from streams.bench.stream import run_stream_bench

    _emit(run_stream_bench(events, pairs, memory_pairs, progress=not as_json, runs=runs), as_json)


def _ml(args: list[str], module: str = "generators.cli") -> None:
    """Run an ML command (`python -m module args`) in .venv-ml (vLLM and faust-streaming cannot
    share an environment)."""
    root = Path(__file__).resolve().parents[1]
    py = os.environ.get("INTENTFLOW_ML_PYTHON", str(root / ".venv-ml" / "bin" / "python"))
    if not Path(py).exists():
        raise click.ClickException(f"{py} not found: build the ML environment with `make venv-ml`")
    os.execv(py, [py, "-m", module, *args])


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def generate(args: tuple[str, ...]) -> None:
    """Generation workers (run in .venv-ml): `intentflow generate worker|bootstrap --help`."""
    _ml(list(args))


@main.command("filter", context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def filter_(args: tuple[str, ...]) -> None:
    """Run the filter stages on candidates in a JSONL file (runs in .venv-ml): FILE --json."""
    _ml(["filter", *args])


@main.command("filter-worker", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                                 "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def filter_worker(args: tuple[str, ...]) -> None:
    """The filter worker (runs in .venv-ml): knowledge.candidates -> knowledge.edges / knowledge.rejected."""
    _ml(["filter-worker", *args])


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def annotate(args: tuple[str, ...]) -> None:
    """The annotation loop (runs in .venv-ml): `annotate sample --from F -n 200 --out A`, `annotate import A --into S`."""
    _ml(["annotate", *args])


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def critic(args: tuple[str, ...]) -> None:
    """Train the plausibility critic (runs in .venv-ml): `intentflow critic train --data F --out DIR`."""
    _ml(["critic", *args])


@main.command("eval", context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def eval_(args: tuple[str, ...]) -> None:
    """Evaluations (run in .venv-ml): `intentflow eval intents --data F --scorer critic --json`;
    `intentflow eval relevance --data F --json` reads the knowledge through Feast here first."""
    if args and args[0] == "relevance":
        eval_relevance.main(args=list(args[1:]), prog_name="intentflow eval relevance")
        return
    _ml(["eval", *args])


@click.command("relevance")
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False),
              help="IntentionQA task-2 JSONL, or a labelled table (CSV/TSV, JSONL, Parquet: query, product id, title, "
                   "label; ESCI or WANDS labels)")
@click.option("--task", type=click.Choice(["auto", "intentionqa_task2", "table"]), default="auto", show_default=True)
@click.option("--limit", type=int, default=None,
              help="evaluate this many problems (tables: queries), drawn with --seed; 0: the whole file. Default: "
                   "60 for IntentionQA task 2 (its 1,378 problems hold ~6,300 products, hours of "
                   "generation on 2 CPU cores at about 2 s a product), every query of a table")
@click.option("--seed", default=0, show_default=True, help="the --limit draw, the replay order, the split, the bootstrap")
@click.option("--knowledge", "knowledge_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="a knowledge file of an earlier run: no pipeline run")
@click.option("--refresh", is_flag=True, help="run the pipeline even when cached knowledge fits")
@click.option("--replay", "mode", type=click.Choice(["neutral", "rows"]), default="neutral", show_default=True,
              help="neutral: every product gets type-phrase search events from its own title; rows (tables only): "
                   "every (query, product) row replayed identically, whatever its label (queries get knowledge too)")
@click.option("--relations", default=None,
              help="comma-separated relations to generate (default: INTENTFLOW_GENERATION__RELATIONS)")
@click.option("--critic", "critic_dir", default=None, help="the filter's critic: default, off or a folder")
@click.option("--test-share", default=0.5, show_default=True, help="share of problems (tables: rows) the head is tested on")
@click.option("--bootstrap", "n_boot", default=2000, show_default=True, help="bootstrap resamples per difference")
@click.option("--out", "out_dir", default=str(Path(".intentflow") / "relevance"), show_default=True,
              help="knowledge cache, bundle, report JSON and plot PNG")
@click.option("--timeout", type=float, default=None,
              help="give up on the pipeline after this many seconds (default: 1 hour, or 10 s a product if longer)")
@click.option("--stall", default=300.0, show_default=True, help="give up when no stage makes progress for this long")
@click.option("--json", "as_json", is_flag=True)
def eval_relevance(data: str, task: str, limit: int | None, seed: int, knowledge_file: str | None, refresh: bool,
                   mode: str, relations: str | None, critic_dir: str | None, test_share: float, n_boot: int,
                   out_dir: str, timeout: float | None, stall: float, as_json: bool) -> None:
    """Does the knowledge help? Frozen MiniLM encoders (a bi-encoder, and a head trained over the frozen
    encoder) and word overlap, with and without the pipeline's knowledge (read through Feast), with
    bootstrap intervals for every difference; a JSON report and a PNG plot. See docs/BENCHMARKS.md."""
    from processors.relevance import DataError, load, resolve_limit
    from streams import relevance as rel

    if not 0 < test_share < 1:
        raise click.BadParameter("must be between 0 and 1", param_hint="--test-share")
    try:
        loaded = load(data, task, resolve_limit(data, task, limit), seed)
        if timeout is None:
            timeout = max(3600.0, 10.0 * len(loaded["products"]))
        know = rel.knowledge(loaded, mode=mode, seed=seed, out_dir=Path(out_dir), knowledge_file=knowledge_file,
                             refresh=refresh, critic=critic_dir,
                             relations=[r.strip() for r in relations.split(",") if r.strip()] if relations else None,
                             timeout=timeout, stall_s=stall, progress=not as_json)
    except (DataError, ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e))
    except (RuntimeError, TimeoutError) as e:  # StageBehind included: a stage stalled, or a worker died
        raise click.ClickException(f"the pipeline did not finish: {str(e)[:2000]}\n(logs: {Path(out_dir) / 'run' / 'logs'})")
    path = rel.bundle(loaded, know, Path(out_dir))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    _ml(["eval", "relevance", "--bundle", str(path), "--out", out_dir, "--seed", str(seed), "--test-share",
         str(test_share), "--bootstrap", str(n_boot), *(["--json"] if as_json else [])])


@bench.command("filter", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_filter(args: tuple[str, ...]) -> None:
    """Candidates/s through the filter stages, batched vs one at a time (runs in .venv-ml)."""
    _ml(list(args), module="streams.bench.filter")


@bench.command("generate", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_generate(args: tuple[str, ...]) -> None:
    """Generation pairs/s with the worker's prompts: the worker vs one call per micro-batch vs a naive loop (.venv-ml): --pairs N --json."""
    _ml(list(args), module="streams.bench.generate")


@main.command()
@click.option("--window", default=2.0, show_default=True, help="seconds over which throughput is measured")
@click.option("--metrics", "metrics_urls", multiple=True, help="a worker's Prometheus URL (filter pass rates from it)")
@click.option("--json", "as_json", is_flag=True)
def status(window: float, metrics_urls: tuple[str, ...], as_json: bool) -> None:
    """Per-stage throughput, consumer lag, dead letters, filter pass rates and freshness."""
    from streams.status import render, snapshot

    s = get_settings()
    with _broker_answers(s):
        snap = snapshot(s.broker, s.topics, window, {u: u for u in metrics_urls}, settings=s)
    click.echo(json.dumps(snap) if as_json else render(snap))


@main.command()
@click.option("--events", type=int, default=None, help="replay at most this many sample events of each kind")
@click.option("--rate", type=float, default=None, help="events per second (default: as fast as the broker takes them)")
@click.option("--timeout", default=1800.0, show_default=True, help="give up after this many seconds in all")
@click.option("--stall", default=300.0, show_default=True, help="give up when no stage makes progress for this many seconds")
@click.option("--keep", is_flag=True, help="leave the broker and workers running after the report (Ctrl-C stops them)")
@click.option("--critic", "critic_dir", default=None,
              help="critic for the filter: a folder, 'default' (the one `make models` trains) or 'off' (default: INTENTFLOW_FILTER__CRITIC, else 'default')")
@click.option("--data-dir", default=None, help="where the demo keeps its state and logs (default: .intentflow/demo)")
@click.option("--json", "as_json", is_flag=True)
def demo(events: int | None, rate: float | None, timeout: float, stall: float, keep: bool, critic_dir: str | None,
         data_dir: str | None, as_json: bool) -> None:
    """The whole pipeline on the bundled samples: broker, workers, model, Feast; then a report."""
    import traceback

    from streams.demo import run_demo

    try:
        report = run_demo(events=events, rate=rate, timeout=timeout, keep=keep, progress=not as_json, data_dir=data_dir,
                          critic=critic_dir or os.environ.get("INTENTFLOW_FILTER__CRITIC"), stall_s=stall)
    except Exception as e:  # noqa: BLE001 - the main job ends in a readable message, the trace goes to a file
        from streams.stack import Stack

        # into the data dir only when the demo made it (it holds the stack's marker): never into a
        # folder it refused or did not create
        made = data_dir and (Path(data_dir) / Stack.MARKER).exists()
        trace = Path(data_dir) / "demo-error.log" if made else Path(".intentflow") / "demo-error.log"
        trace.parent.mkdir(parents=True, exist_ok=True)
        trace.write_text(traceback.format_exc())
        report = {"ok": False, "error": repr(e),
                  "text": f"intentflow demo failed: {e!r}\n(the full trace is in {trace})"}
    click.echo(json.dumps(report, default=str) if as_json else report["text"])
    sys.exit(0 if report["ok"] else 1)


# --- features ------------------------------------------------------------------------------


def _reading_store():
    """The feature store for a read: the definitions are registered only where no registry exists
    yet (a read must not rewrite the registry the workers use)."""
    from feature_repo.store import open_store, registry_path

    s = get_settings()
    fresh = not registry_path(s.features, s.data_dir).exists()
    return open_store(s.features, s.data_dir, s.redis_port, apply=fresh)


@main.command()
@click.option("--query", "query", default=None, help="a search query (normalised as the stream does)")
@click.option("--product", "product", default=None, help="a product id")
@click.option("--pair", nargs=2, default=None, help="two product ids bought together")
@click.option("--augment", is_flag=True, help="also print E-CARE style augmentation text for an encoder")
@click.option("--json", "as_json", is_flag=True)
def features(query: str | None, product: str | None, pair: tuple[str, str] | None, augment: bool, as_json: bool) -> None:
    """Read the online features of a query, a product or a product pair (exit 1 if there are none)."""
    if sum(x is not None and x != () for x in (query, product, pair)) != 1:
        raise click.UsageError("give exactly one of --query, --product, --pair")
    from feature_repo.client import FeatureReader

    kind, value = ("query", query) if query else ("product", product) if product else ("pair", tuple(pair))
    got = FeatureReader(_reading_store()).knowledge(kind, value, digits=4)
    out = {"entity": {"query": query, "product": product, "pair": list(pair) if pair else None}, "found": got["found"],
           "features": got["features"]}
    if augment:
        out["augmentation"] = got["augmentation"]
    click.echo(json.dumps(out) if as_json else json.dumps(out, indent=2))
    sys.exit(0 if got["found"] else 1)


@bench.command("features")
@click.option("--rows", default=20000, show_default=True, help="product rows pushed")
@click.option("--batch", default=2000, show_default=True, help="rows per batched push")
@click.option("--single", default=500, show_default=True, help="rows pushed one at a time (baseline)")
@click.option("--reads", default=2000, show_default=True, help="single-entity reads timed (100-entity reads: a tenth)")
@click.option("--gc-freeze/--no-gc-freeze", default=True, show_default=True,
              help="freeze what is loaded before timing, as the stream worker does (INTENTFLOW_GC_FREEZE)")
@click.option("--json", "as_json", is_flag=True)
def bench_features(rows: int, batch: int, single: int, reads: int, gc_freeze: bool, as_json: bool) -> None:
    """Feast push rows/s (online; online+offline) and get_online_features p50/p99 on a private Redis."""
    from streams.bench.features import run_features_bench

    _emit(run_features_bench(rows, batch, single, reads, progress=not as_json, freeze=gc_freeze), as_json)


@bench.command("e2e")
@click.option("--rate", default=50.0, show_default=True, help="search-buy events per second")
@click.option("--duration", default=180.0, show_default=True, help="seconds of steady traffic")
@click.option("--new-pairs-per-s", default=0.2, show_default=True, help="new (query, product) pairs that earn generation")
@click.option("--ramp", default="", help="comma-separated new-pairs rates run in turn (e.g. 0.25,0.5,1,1.5): "
              "finds the saturation point, the highest rate with p95 freshness <= 30 s")
@click.option("--level-s", default=90.0, show_default=True, help="seconds per ramp level")
@click.option("--spike", default=0.0, show_default=True, help="a spike of this many times --rate, a third of the way in")
@click.option("--spike-s", default=60.0, show_default=True, help="seconds the spike lasts")
@click.option("--json", "as_json", is_flag=True)
def bench_e2e(rate: float, duration: float, new_pairs_per_s: float, ramp: str, level_s: float, spike: float,
              spike_s: float, as_json: bool) -> None:
    """The whole pipeline under steady traffic: freshness p50/p95/p99, each stage's throughput,
    generation requests/s, and with --ramp the saturation point in new pairs/s."""
    from streams.bench.e2e import run_e2e_bench

    levels = tuple(float(x) for x in ramp.split(",") if x.strip())
    _emit(run_e2e_bench(rate, duration, new_pairs_per_s, progress=not as_json, ramp=levels, level_s=level_s,
                        spike=spike, spike_s=spike_s), as_json)


@bench.command("faults")
@click.option("--schedule", type=click.Choice(["short", "full"]), default="full", show_default=True,
              help="short: kill -9 of each worker and a Redis restart, vLLM in the generation worker (4-5 min on 2 "
                   "cores; what the tests run); full: also the `vllm serve` engine server, each worker killed twice, "
                   "more events (5-10 min)")
@click.option("--events", type=int, default=None, help="sample events replayed (default: the schedule's, 150 / 300)")
@click.option("--seed", default=13, show_default=True, help="the workload's mix and the faults' moments")
@click.option("--data-dir", default=None, help="where the stack keeps its state and logs (default: .intentflow/bench-faults)")
@click.option("--json", "as_json", is_flag=True)
def bench_faults(schedule: str, events: int | None, seed: int, data_dir: str | None, as_json: bool) -> None:
    """Kill -9 each worker (and restart Redis, the engine server) at seeded random points of a
    replay, then account for every event and every edge: events in, accounted, lost, duplicated,
    recovery seconds per fault. Exit 1 if anything was lost or duplicated, a fault did not recover or no
    knowledge was made at all."""
    from streams.bench.faults import render, run_faults_bench

    report = run_faults_bench(schedule, events, seed, progress=not as_json, data_dir=data_dir)
    click.echo(json.dumps(report, default=str) if as_json else render(report))
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
