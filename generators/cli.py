"""ML-side commands, run in .venv-ml (`.venv/bin/intentflow generate ...` forwards here)."""

from __future__ import annotations

import json
import logging

import click


@click.group()
def main() -> None:
    """Generation workers, model bootstrap and the generation benchmark."""
    logging.basicConfig(level=logging.INFO, format='{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}')


@main.command()
def bootstrap() -> None:
    """Convert the bundled SmolLM2 GGUF to a safetensors folder in the dtype this CPU runs fastest
    (once, cached per dtype) and locate MiniLM."""
    from generators.hardware import describe
    from generators.models import configured_dtype, minilm_dir, smollm2_dir

    dtype = configured_dtype()
    click.echo(json.dumps({"smollm2": str(smollm2_dir(dtype)), "minilm": str(minilm_dir()),
                           "dtype": dtype, "cpu": describe()}))


@main.command()
@click.option("--engine", default=None, help="vllm | openai | transformers (default: INTENTFLOW_GENERATION__ENGINE)")
@click.option("--model", default=None)
@click.option("--max-batches", type=int, default=None, help="stop after this many batches")
@click.option("--idle-exit", type=float, default=None, help="stop after this many idle seconds")
@click.option("--json", "as_json", is_flag=True)
def worker(engine: str | None, model: str | None, max_batches: int | None, idle_exit: float | None, as_json: bool) -> None:
    """Consume generation.batches, generate, parse, publish knowledge.candidates."""
    from generators.config import MLSettings
    from generators.engines import from_settings
    from generators.worker import GenerationWorker

    s = MLSettings()
    if s.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(s.metrics_port, addr="127.0.0.1")
    eng = from_settings(s, engine, model)
    stats = GenerationWorker(eng, s).run(max_batches=max_batches, idle_exit_s=idle_exit)
    click.echo(json.dumps(dict(stats)) if as_json else "\n".join(f"{k}: {v}" for k, v in sorted(stats.items())))


@main.command()
@click.option("--prompts", "n", default=64, show_default=True)
@click.option("--max-tokens", default=48, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def bench(n: int, max_tokens: int, as_json: bool) -> None:
    """vLLM batched vs a one-prompt-at-a-time transformers loop, same prompts and model."""
    from generators.bench import run

    out = run(n, max_tokens)
    click.echo(json.dumps(out) if as_json else json.dumps(out, indent=2))


@main.command("filter")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--critic", "critic_dir", default=None, help="critic folder (default: INTENTFLOW_FILTER__CRITIC; none: stage skipped)")
@click.option("--self-eval", is_flag=True, help="also run the self-evaluation stage with the generation engine")
@click.option("--json", "as_json", is_flag=True)
def filter_(path: str, critic_dir: str | None, self_eval: bool, as_json: bool) -> None:
    """Run every filter stage on candidates (JSON lines); one verdict per line with every stage's score."""
    from generators.config import MLSettings
    from processors.filters import TailStats

    s = MLSettings()
    items, bad = [], []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                missing = [k for k in ("behavior", "relation", "tail") if not d.get(k)]
                if missing or d["behavior"] not in ("search_buy", "co_purchase"):
                    raise ValueError(f"needs behavior (search_buy|co_purchase), relation and tail; missing {missing}")
                items.append(d)
            except ValueError as e:
                bad.append(f"{path}:{n}: {e}")
    if bad:
        raise click.ClickException("invalid input, nothing filtered:\n" + "\n".join(bad[:20]))
    engine = None
    if self_eval:
        from generators.engines import from_settings

        engine = from_settings(s)
    make, _ = filter_pipeline(s, critic_dir or s.filter.critic, engine)
    for verdict in make(TailStats({})).run(items):
        d = verdict.as_dict()
        click.echo(json.dumps(d) if as_json else f"{'kept' if d['kept'] else 'dropped'}\t{d['stage'] or ''}\t{d['reason'] or ''}")


def filter_pipeline(s, critic_dir: str | None = None, engine=None):
    """A factory of the full pipeline with the real scorers (models load once)."""
    from generators.scorers import Critic, Embedder, LMFluency, SelfEval
    from processors.filters import FilterPipeline

    dtype = s.dtype
    critic = Critic(critic_dir, dtype=dtype) if critic_dir else None
    fluency, emb = LMFluency(dtype=dtype), Embedder(dtype=dtype)

    def make(stats):
        return FilterPipeline(s.filter, stats, fluency=fluency.score, similarity=emb.similarity,
                              critic=critic.plausibility if critic else None,
                              self_eval=SelfEval(engine).score if engine else None)

    make.embedder = emb  # the bench clears its cache between runs and reports its hit rate
    return make, (critic.version if critic else None)


@main.command("filter-worker")
@click.option("--critic", "critic_dir", default=None, help="critic folder (default: INTENTFLOW_FILTER__CRITIC)")
@click.option("--max-candidates", type=int, default=None)
@click.option("--idle-exit", type=float, default=None, help="stop after this many idle seconds")
@click.option("--json", "as_json", is_flag=True)
def filter_worker(critic_dir: str | None, max_candidates: int | None, idle_exit: float | None, as_json: bool) -> None:
    """Consume knowledge.candidates, run the stages, publish knowledge.edges and knowledge.rejected."""
    from generators.config import MLSettings
    from generators.filter_worker import FilterWorker
    from infra.services import ensure_topics

    s = MLSettings()
    t = s.topics
    ensure_topics(s.broker, [t.candidates, t.edges, t.rejected, t.filter_dlq, t.tail_stats], 4, compacted=(t.tail_stats,))
    if s.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(s.metrics_port, addr="127.0.0.1")
    make, version = filter_pipeline(s, critic_dir or s.filter.critic)
    stats = FilterWorker(make, s, critic_version=version).run(max_candidates, idle_exit)
    click.echo(json.dumps(dict(stats)) if as_json else "\n".join(f"{k}: {v}" for k, v in sorted(stats.items())))


@main.command("bench-filter")
@click.option("--candidates", "n", default=2000, show_default=True)
@click.option("--batch", default=64, show_default=True)
@click.option("--critic", "critic_dir", default=None)
@click.option("--lm-fluency", is_flag=True, help="score fluency with the LM (as for hand-written candidates)")
@click.option("--json", "as_json", is_flag=True)
def bench_filter(n: int, batch: int, critic_dir: str | None, lm_fluency: bool, as_json: bool) -> None:
    """Candidates/s through the filter stages, batched vs one at a time."""
    from generators.filter_bench import run

    out = run(n, batch, critic_dir, lm_fluency)
    click.echo(json.dumps(out) if as_json else json.dumps(out, indent=2))


@main.group()
def annotate() -> None:
    """The annotation loop: sample candidates for review, import the answers for the critic."""


@annotate.command("sample")
@click.option("--from", "src", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="JSONL of candidates, edges or rejected candidates (repeatable)")
@click.option("--topic", "topics", multiple=True,
              help="read a topic to its end instead, e.g. knowledge.edges, knowledge.rejected (repeatable; INTENTFLOW_BROKER)")
@click.option("-n", default=200, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False))
def annotate_sample(src: tuple[str, ...], topics: tuple[str, ...], n: int, seed: int, out: str) -> None:
    """Draw candidates weighted by head popularity / tail frequency; write rows with COSMO's five questions."""
    from generators.annotation import read_jsonl, sample

    if not src and not topics:
        raise click.UsageError("give --from FILE or --topic TOPIC (or both)")
    pool = [r for path in src for r in read_jsonl(path)]
    if topics:
        from generators.config import MLSettings
        from infra.topics import read_json

        broker = MLSettings().broker
        pool += [r for t in topics for r in read_json(broker, t, timeout=60.0, complete=True)]
    rows = sample(pool, n, seed)
    with open(out, "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    click.echo(f"wrote {len(rows)} rows to {out}: answer complete, relevant, informative, plausible, typical with yes/no")


@annotate.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--into", required=True, type=click.Path(dir_okay=False), help="the annotation store (critic training data)")
@click.option("--json", "as_json", is_flag=True)
def annotate_import(path: str, into: str, as_json: bool) -> None:
    """Validate a filled file (all or nothing) and add it to the store; `critic train --data STORE` reads it."""
    from generators.annotation import AnnotationError, import_file

    try:
        res = import_file(path, into)
    except AnnotationError as e:
        raise click.ClickException(str(e))
    click.echo(json.dumps(res) if as_json else "\n".join(f"{k}: {v}" for k, v in res.items()))


@main.group()
def critic() -> None:
    """The plausibility critic (a MiniLM cross-encoder)."""


@critic.command("train")
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False), help="IntentionQA task-1 JSONL")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--holdout", default=0.2, show_default=True, help="share of problems held out for the report")
@click.option("--epochs", default=3, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--lr", default=5e-5, show_default=True)
@click.option("--limit", type=int, default=None, help="use only the first N problems")
@click.option("--json", "as_json", is_flag=True)
def critic_train(data: str, out: str, holdout: float, epochs: int, seed: int, lr: float, limit: int | None,
                 as_json: bool) -> None:
    """Fine-tune the critic; writes the model, critic.json (version, held-out accuracy/precision/recall)
    and heldout.jsonl (the held-out problems, for `eval intents`)."""
    from generators.critic import train

    report = train(data, out, holdout=holdout, epochs=epochs, seed=seed, lr=lr, limit=limit, progress=not as_json)
    click.echo(json.dumps(report) if as_json else json.dumps(report, indent=2))


@main.group("eval")
def eval_() -> None:
    """Evaluations."""


@eval_.command("intents")
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False), help="IntentionQA task-1 JSONL")
@click.option("--scorer", type=click.Choice(["critic", "selfeval", "embedding"]), default="critic", show_default=True)
@click.option("--critic", "critic_dir", default=None, help="critic folder (default: INTENTFLOW_FILTER__CRITIC)")
@click.option("--json", "as_json", is_flag=True)
def eval_intents(data: str, scorer: str, critic_dir: str | None, as_json: bool) -> None:
    """Pick the best intention per problem with a scorer; print accuracy and n."""
    from generators.critic import eval_intents as run

    engine = None
    if scorer == "selfeval":
        from generators.config import MLSettings
        from generators.engines import from_settings

        engine = from_settings(MLSettings())
    from generators.config import MLSettings

    res = run(data, scorer, critic_dir or MLSettings().filter.critic, engine)
    click.echo(json.dumps(res) if as_json else "\n".join(f"{k}: {v}" for k, v in res.items()))


@eval_.command("calibrate-selfeval")
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False), help="an annotation store (annotate import)")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="also write the result here (JSON)")
@click.option("--min-labels", default=20, show_default=True, help="labels a relation needs for its own threshold")
@click.option("--json", "as_json", is_flag=True)
def calibrate_selfeval(data: str, out: str | None, min_labels: int, as_json: bool) -> None:
    """Per-relation self-evaluation thresholds from annotated labels (plausible yes/no)."""
    from generators.annotation import read_jsonl, validate
    from generators.calibration import calibrate
    from generators.config import MLSettings
    from generators.engines import from_settings
    from generators.scorers import SelfEval

    rows = validate(read_jsonl(data))
    engine = from_settings(MLSettings())
    res = calibrate(rows, SelfEval(engine).score, min_labels)
    res["apply"] = ("INTENTFLOW_FILTER__MIN_SELF_EVAL=" + str(res["min_self_eval"]) + " "
                    "INTENTFLOW_FILTER__SELF_EVAL_BY_RELATION='" + json.dumps(res["self_eval_by_relation"]) + "'")
    if out:
        with open(out, "w") as f:
            json.dump(res, f, indent=2)
    click.echo(json.dumps(res) if as_json else json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
