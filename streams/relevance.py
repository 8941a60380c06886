"""`intentflow eval relevance`, the stream side: knowledge for the evaluation data from the real
pipeline, read through the Feast client as a serving model reads it, handed to the ML side.

1. The data (processors/relevance.py): IntentionQA task 2 or a labelled table; `--limit` problems.
2. The knowledge: unless a cached file fits (`knowledge_key`: the products and queries evaluated,
   the replay construction, and the pipeline's model, dtype, prompt version, generation and filter
   settings and critic version), the whole pipeline runs as in the demo (streams/stack.Stack: local
   broker, stream worker with sampling, dedup, micro-batching and the feature writer, the generation
   worker on vLLM, the filter worker with the critic, Feast with SQLite online) on label-free
   behaviour (processors.relevance.neutral_events, or row_events for a table), and every product
   (and replayed query) is read back with `feature_repo.client.FeatureReader`. The augmentation
   text (`feature_repo.client.augmentation`, whole and per relation) is stored beside the features.
3. The bundle (problems + knowledge) goes to `generators.cli eval relevance` in .venv-ml
   (MiniLM, scikit-learn): generators/relevance.py.

Generation is the slow stage (SmolLM2 on 2 CPU cores: about one product a second once the workers
are up); the knowledge file is cached in the output folder, so the encoder evaluation can be re-run
without generating again (`--knowledge FILE` reuses any file).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from generators.relations import RELATIONS
from processors import relevance as data

KNOWLEDGE_VERSION = "k1"  # the replay construction and this file's layout; bump to invalidate caches
PASSED_ENV = ("INTENTFLOW_GENERATION__", "INTENTFLOW_FILTER__", "INTENTFLOW_DTYPE")  # reach the workers
OUT = Path(".intentflow") / "relevance"


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"[relevance {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- what the knowledge depends on ------------------------------------------------------------------


def worker_env(relations: list[str] | None = None) -> dict[str, str]:
    """INTENTFLOW_GENERATION__*, INTENTFLOW_FILTER__* and INTENTFLOW_DTYPE of this shell (the Stack
    gives its workers no other INTENTFLOW_* variable), plus the relations asked for, if any."""
    env = {k: v for k, v in os.environ.items() if k.startswith(PASSED_ENV)}
    if relations:
        unknown = [r for r in relations if r not in RELATIONS]
        if unknown:
            raise ValueError(f"unknown relation(s) {unknown}; known: {sorted(RELATIONS)}")
        env["INTENTFLOW_GENERATION__RELATIONS"] = json.dumps(list(relations))
    return env


def pipeline_versions(env: dict[str, str], critic: str | None) -> dict:
    """What decides the knowledge, as the workers will see it: the model, engine, dtype, prompt
    version and style, relations, a hash of the generation and filter settings, the critic setting
    and its version. Raises generators.critic.CriticNotFound when the critic is not there."""
    from unittest import mock

    from generators.config import MLSettings
    from generators.critic import resolve
    from generators.models import configured_dtype
    from generators.prompts import PROMPT_VERSION

    clean = {k: v for k, v in os.environ.items() if not k.startswith("INTENTFLOW_")}
    with mock.patch.dict(os.environ, {**clean, **env}, clear=True):
        ml = MLSettings()
        setting = critic or ml.filter.critic or "default"
        path = resolve(setting, ml.dtype)
        dtype = configured_dtype(ml.dtype)
    version = json.loads((Path(path) / "critic.json").read_text()).get("version") if path else "off"
    g = ml.generation
    return {"model": g.model, "engine": g.engine, "dtype": dtype, "prompt_version": PROMPT_VERSION,
            "prompt_style": g.prompt_style, "relations": list(g.relations),
            "generation_settings": data.fingerprint(g.model_dump()),
            "filter_settings": data.fingerprint(ml.filter.model_dump()), "critic_setting": setting,
            "critic_version": version}


def replay_plan(loaded: dict, mode: str, seed: int) -> dict:
    """The label-free events for the loaded data and how they were built (see processors.relevance)."""
    if mode == "rows":
        if loaded["task"] != data.TABLE:
            raise ValueError("--replay rows is for labelled tables; IntentionQA is always replayed neutrally "
                             "(replaying its co-purchase pairs would reveal the answers)")
        events = data.row_events(loaded["problems"], seed)
        how = (f"every (query, product) row of the table replayed identically whatever its label: "
               f"{data.EVENTS_PER_PRODUCT} search-buy events, all clicked, one bought")
    elif mode == "neutral":
        events = data.neutral_events(loaded["products"], seed)
        how = (f"every product (query side and candidates alike) replayed identically: {data.EVENTS_PER_PRODUCT} "
               "search-buy events whose query is a product-type phrase guessed from its own title "
               "(guess_type(title, 2)), all clicked, one bought; no co-purchase pair, no label")
    else:
        raise ValueError(f"replay mode {mode!r}: neutral or rows")
    return {"mode": mode, "events": events, "construction": how,
            "pairs": len({(e["query"], e["product"]["product_id"]) for e in events})}


def knowledge_key(loaded: dict, mode: str, versions: dict) -> str:
    """The cache key: the products (and, replaying rows, the query-product pairs) evaluated, the
    replay construction and the pipeline's versions; the seed and limit matter only through them."""
    what = {"v": KNOWLEDGE_VERSION, "mode": mode, "products": loaded["products"], "pipeline": versions}
    if mode == "rows":
        what["pairs"] = sorted((p["query"]["text"], c["key"]) for p in loaded["problems"] for c in p["candidates"])
    return data.fingerprint(what)


# --- reading the knowledge (Feast) ------------------------------------------------------------------


def _only(features: dict, relation: str) -> dict:
    """The features with one relation's knowledge only (the subcategory only when that relation made it)."""
    out: dict = {}
    pk = features.get("product_knowledge")
    if pk:
        out["product_knowledge"] = {**pk, **{r: [] for r in RELATIONS if r != relation}}
    sub = features.get("product_subcategory")
    if sub and sub.get("subcategory_relation") == relation:
        out["product_subcategory"] = sub
    qi = features.get("query_intents")
    if qi:
        keep = [i for i, r in enumerate(qi.get("intent_relations") or []) if r == relation]
        out["query_intents"] = {**qi, "intents": [qi["intents"][i] for i in keep],
                                "intent_relations": [relation] * len(keep)}
    return out


def entry(features: dict) -> dict:
    """One product's or query's knowledge as the ML side takes it: relations -> tails, the
    subcategory, lineage, and the augmentation text whole (`augmentation`) and per relation
    (`by_relation`), rendered by feature_repo.client.augmentation. Empty text: no knowledge."""
    from feature_repo.client import augmentation, plain

    pk = features.get("product_knowledge") or {}
    qi = features.get("query_intents") or {}
    sub = features.get("product_subcategory") or {}
    rels: dict[str, list[str]] = {r: list(pk.get(r) or []) for r in RELATIONS if pk.get(r) is not None and len(pk.get(r))}
    for t, r in zip(qi.get("intents") or [], qi.get("intent_relations") or []):
        rels.setdefault(r, []).append(t)
    lineage = pk or qi
    return {"augmentation": augmentation(features), "relations": rels, "subcategory": sub.get("subcategory") or "",
            "subcategory_relation": sub.get("subcategory_relation") or "",
            "by_relation": {r: augmentation(_only(features, r)) for r in rels},
            "n_edges": int(lineage.get("n_edges") or 0),
            "models": plain(list(lineage.get("models") or [])), "prompt_versions": plain(list(lineage.get("prompt_versions") or [])),
            "critic_versions": plain(list(lineage.get("critic_versions") or []))}


def read_knowledge(reader, products: dict[str, str], queries: list[str], batch: int = 100) -> dict:
    """Every product (by key) and query through a feature_repo.client.FeatureReader: {"products":
    {key: entry}, "queries": {text: entry}, "lineage": models, prompt and critic versions seen}.
    A product the store has no row for gets an entry with empty text."""
    keys = list(products)
    out: dict = {"products": {}, "queries": {}}
    for i in range(0, len(keys), batch):
        for k, f in zip(keys[i:i + batch], reader.products(keys[i:i + batch])):
            out["products"][k] = entry(f)
    for i in range(0, len(queries), batch):
        for q, f in zip(queries[i:i + batch], reader.queries(queries[i:i + batch])):
            out["queries"][q] = entry(f)
    seen = list(out["products"].values()) + list(out["queries"].values())
    out["lineage"] = {k: sorted({x for e in seen for x in e[k]}) for k in ("models", "prompt_versions", "critic_versions")}
    return out


# --- running the pipeline -------------------------------------------------------------------------


def run_pipeline(events: list[dict], products: dict[str, str], queries: list[str], *, data_dir: Path,
                 env: dict[str, str], timeout: float, stall_s: float, progress: bool) -> dict:
    """The whole pipeline on `events` (replayed as live traffic; the workers get `env`, e.g.
    INTENTFLOW_FILTER__CRITIC, and the demo's small micro-batches), followed until every stage caught
    up, then the knowledge read through Feast (read_knowledge) plus what each stage did. Everything
    started is stopped, also on an error or Ctrl-C. Raises streams.demo.StageBehind when the
    pipeline stalls or times out, RuntimeError when a worker dies."""
    from feature_repo.client import FeatureReader
    from feature_repo.store import open_store
    from streams import status
    from streams.demo import DEMO_ENV, follow
    from streams.producer import EventProducer
    from streams.replay import replay
    from streams.settings import Settings
    from streams.stack import Stack

    t0 = time.monotonic()
    stack = Stack(data_dir=data_dir, env_overrides={**DEMO_ENV, **env})
    last = [""]

    def tell(msg: str) -> None:
        if msg != last[0]:
            last[0] = msg
            _say(progress, msg)

    try:
        _say(progress, f"starting the broker and the workers (logs in {data_dir / 'logs'})")
        stack.start(progress=tell)
        t_ready = time.monotonic()
        s = Settings(broker=stack.broker)
        path = data_dir / "events.jsonl"
        path.write_text("".join(json.dumps(e) + "\n" for e in events))
        sent = replay(path, EventProducer(s), progress=progress, now=True)
        _say(progress, f"replayed {sent['sent']} events ({sent['invalid']} invalid) for {len(products)} products; "
                       "following the pipeline (generation is the slow stage)")
        t_sent = time.monotonic()
        follow(stack, s, stall_s, timeout, tell)
        t_done = time.monotonic()
        t, ml = s.topics, status.ML
        counts = status.topic_counts(stack.broker, [t.requests, ml.candidates, t.edges, ml.rejected, t.dlq])
        edges = status.read_json(stack.broker, t.edges)
        store = open_store(s.features.model_copy(update={"online": stack.online}), str(stack.data_dir), s.redis_port,
                           apply=False)
        know = read_knowledge(FeatureReader(store), products, queries)
        per_product = Counter((e.get("product") or {}).get("product_id") for e in edges)
        run = {"events_sent": sent["sent"], "events_invalid": sent["invalid"], "dead_letters": counts[t.dlq],
               "sampled_requests": counts[t.requests], "candidates": counts[ml.candidates],
               "rejected": counts[ml.rejected], "edges": counts[t.edges],
               "edge_behaviors": dict(Counter(e.get("behavior") for e in edges)),
               "products_with_edges": sum(1 for k in products if per_product.get(k)),
               "seconds": {"start_workers": round(t_ready - t0, 1), "replay": round(t_sent - t_ready, 1),
                           "pipeline": round(t_done - t_sent, 1), "read": round(time.monotonic() - t_done, 1),
                           "total": round(time.monotonic() - t0, 1)}}
        _say(progress, f"{run['edges']} edges from {run['candidates']} candidates for {run['sampled_requests']} sampled "
                       f"pairs in {run['seconds']['total']} s")
        return {**know, "run": run}
    finally:
        stack.stop()


def ensure_models(progress: bool) -> None:
    """`generators.cli bootstrap` in .venv-ml: SmolLM2 converted and the default critic trained, once
    (a second call only checks); the critic's version is part of the cache key."""
    from streams.stack import ROOT, ml_python

    _say(progress, "model: checking the bundled SmolLM2 and the default critic (made once, then cached)")
    subprocess.run([ml_python(), "-m", "generators.cli", "bootstrap", "--json"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)


def knowledge(loaded: dict, *, mode: str, seed: int, out_dir: Path, knowledge_file: str | None, refresh: bool,
              critic: str | None, relations: list[str] | None, timeout: float, stall_s: float,
              progress: bool) -> dict:
    """The knowledge for the loaded data: from `knowledge_file`, else from the cache in `out_dir`
    (unless `refresh`), else from a pipeline run (then cached). Adds `source` and `file`."""
    if knowledge_file:
        k = json.loads(Path(knowledge_file).read_text())
        if not isinstance(k, dict) or "products" not in k:
            raise ValueError(f"{knowledge_file}: not a knowledge file from `intentflow eval relevance` (no 'products')")
        missing = [p for p in loaded["products"] if p not in k["products"]]
        return {**k, "source": "file", "file": str(knowledge_file), "products_not_in_file": len(missing)}
    env = worker_env(relations)
    if critic:  # the workers' setting: it wins over INTENTFLOW_FILTER__CRITIC of this shell
        env["INTENTFLOW_FILTER__CRITIC"] = critic
    ensure_models(progress)
    versions = pipeline_versions(env, critic)
    key = knowledge_key(loaded, mode, versions)
    path = out_dir / f"knowledge-{key}.json"
    if path.exists() and not refresh:
        _say(progress, f"knowledge from the cache {path} (--refresh to generate again)")
        return {**json.loads(path.read_text()), "source": "cache", "file": str(path)}
    plan = replay_plan(loaded, mode, seed)
    queries = loaded["queries"] if mode == "rows" else []
    got = run_pipeline(plan["events"], loaded["products"], queries, data_dir=out_dir / "run", env=env,
                       timeout=timeout, stall_s=stall_s, progress=progress)
    k = {"version": KNOWLEDGE_VERSION, "key": key, "made_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
         "data": {x: loaded.get(x) for x in ("task", "path", "sha", "limit", "in_file", "seed")}, "pipeline": versions,
         "replay": {x: plan[x] for x in ("mode", "construction", "pairs")} | {"events": len(plan["events"]),
                                                                             "events_per_pair": data.EVENTS_PER_PRODUCT},
         **got}
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(k))
    tmp.replace(path)
    return {**k, "source": "pipeline", "file": str(path)}


def bundle(loaded: dict, know: dict, out_dir: Path) -> Path:
    """Write the problems and the knowledge for the ML side; returns the file."""
    meta = {x: loaded.get(x) for x in ("task", "path", "sha", "limit", "in_file", "seed", "labels", "notes")}
    body = {"data": meta, "problems": loaded["problems"], "knowledge": know}
    name = data.fingerprint({"data": meta, "problems": [p["id"] for p in loaded["problems"]],
                             "knowledge": know.get("key") or know.get("file")})
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"bundle-{name}.json"
    path.write_text(json.dumps(body))
    return path
