"""`intentflow eval relevance`, the ML side: texts, metrics on hand-checked cases, the bootstrap, the
grouped split, the frozen-encoder head, and one run with the real MiniLM on a hand-made bundle."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from generators import relevance as R

ROOT = Path(__file__).resolve().parents[2]


# --- texts ----------------------------------------------------------------------------------------

KNOW = {"products": {
    "A1": {"augmentation": "can be used for [charge a phone]", "by_relation": {"used_for_function": "can be used for [charge a phone]"}},
    "B1": {"augmentation": "is a kind of [hub for laptops], used by [students]",
           "by_relation": {"used_for_audience": "is a kind of [hub for laptops], used by [students]"}},
    "B2": {"augmentation": "", "by_relation": {}}}, "queries": {}}
PROBLEM = {"id": "FS_1", "source": R.TASK2, "behavior": "co_purchase", "query": {"text": "Belkin USB Cable", "key": "A1"},
           "intent": "because they both are a type of USB cable.", "gold": 0,
           "candidates": [{"key": "B1", "title": "Anker USB Hub", "label": 1, "role": "gold"},
                          {"key": "B2", "title": "Ceramic Mug", "label": 0, "role": "distractor"},
                          {"key": "B9", "title": "Lamp Shade", "label": 0, "role": "distractor"}]}


def test_augmented_texts_with_all_knowledge_one_relation_or_none():
    q, cs = R.problem_texts(PROBLEM, KNOW, "all")
    assert q == "Belkin USB Cable; can be used for [charge a phone]. because they both are a type of USB cable."
    assert cs == ["Anker USB Hub; is a kind of [hub for laptops], used by [students]", "Ceramic Mug", "Lamp Shade"]
    q, cs = R.problem_texts(PROBLEM, KNOW, None)
    assert q == "Belkin USB Cable. because they both are a type of USB cable." and cs == ["Anker USB Hub", "Ceramic Mug", "Lamp Shade"]
    q, cs = R.problem_texts(PROBLEM, KNOW, "used_for_audience")
    assert q.startswith("Belkin USB Cable.") and cs[0] == "Anker USB Hub; is a kind of [hub for laptops], used by [students]"
    assert R.relations_in(KNOW) == ["used_for_function", "used_for_audience"]  # the vocabulary's order


# --- metrics --------------------------------------------------------------------------------------


def test_macro_and_micro_f1_of_hand_computed_confusions():
    # true x predicted: class 0: tp 5, fp 2, fn 1 -> F1 10/13; class 1: tp 2, fp 1, fn 2 -> F1 4/7
    macro, micro = R.f1_scores(np.array([[5, 1], [2, 2]], dtype=float))
    assert macro == pytest.approx((10 / 13 + 4 / 7) / 2) and micro == pytest.approx(7 / 10)
    # three classes, one never predicted nor true (left out of the macro mean), one predicted but never right (F1 0)
    conf = np.array([[3, 0, 1], [0, 0, 0], [1, 0, 0]], dtype=float)  # class 0: F1 6/8; class 2: tp 0 -> 0
    macro, micro = R.f1_scores(conf)
    assert macro == pytest.approx((6 / 8 + 0) / 2) and micro == pytest.approx(3 / 5)
    from sklearn.metrics import f1_score

    y_true, y_pred = [0, 0, 0, 0, 2], [0, 0, 0, 2, 0]
    assert macro == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert (R.confusion(y_true, y_pred, 3) == conf).all()


def test_choice_metrics_count_ties_as_a_random_pick():
    m = R.choice_metrics([0.9, 0.9, 0.1, 0.1], gold=0)  # gold tied first with one other: rank 1 or 2
    assert m["accuracy"] == 0.5 and m["recall@2"] == 1.0 and m["mrr"] == pytest.approx(0.75)
    assert m["conf"].tolist() == [[2.5, 0.5], [0.5, 0.5]]
    m = R.choice_metrics([0.1, 0.5, 0.9, 0.2], gold=0)  # gold ranked last of four
    assert (m["accuracy"], m["recall@2"], m["mrr"]) == (0.0, 0.0, 0.25)


def test_precision_and_recall_at_k_with_ties():
    scores, rel = [3, 2, 2, 1], [0, 1, 0, 1]
    # top 1: the 3 (not relevant); top 2 adds one of the tied 2s: relevant half the time
    assert R.expected_topk(scores, rel, 1) == 0 and R.expected_topk(scores, rel, 2) == 0.5
    m = R.ranking_metrics(scores, rel, [1, 2, 5])
    assert m == {"p@1": 0.0, "r@1": 0.0, "p@2": 0.25, "r@2": 0.25, "p@5": 0.4, "r@5": 1.0}
    assert R.ranking_metrics([1, 2], [0, 0], [1]) == {"p@1": None, "r@1": None}  # no relevant item: left out


# --- bootstrap ------------------------------------------------------------------------------------


def _acc(n: int, p: float, seed: int) -> tuple:
    v = (np.random.default_rng(seed).random(n) < p).astype(float)
    return v, np.ones(n, dtype=bool)


def test_bootstrap_interval_holds_the_point_is_seeded_and_narrows_with_n():
    def ci(n, seed=0):
        return R.paired_bootstrap("mean", _acc(n, 0.8, 1), _acc(n, 0.6, 2), n, B=1000, seed=seed)

    small, big = ci(40), ci(1000)
    for d in (small, big):
        assert d["ci95"][0] <= d["point"] <= d["ci95"][1]
    assert ci(40) == small
    cont = (np.random.default_rng(7).random(40), np.ones(40, dtype=bool))  # continuous values: no percentile grid
    zero = (np.zeros(40), np.ones(40, dtype=bool))
    assert R.paired_bootstrap("mean", cont, zero, 40, seed=0) == R.paired_bootstrap("mean", cont, zero, 40, seed=0)
    assert R.paired_bootstrap("mean", cont, zero, 40, seed=0) != R.paired_bootstrap("mean", cont, zero, 40, seed=1)
    assert big["ci95"][1] - big["ci95"][0] < (small["ci95"][1] - small["ci95"][0]) / 3
    assert big["ci95"][0] > 0  # 0.8 vs 0.6 over 1,000 problems: the interval excludes 0
    # F1 differences resample per-unit confusions the same way
    conf_w = np.stack([R.choice_metrics([1, 0], 0)["conf"]] * 30 + [R.choice_metrics([0, 1], 0)["conf"]] * 10)
    conf_wo = np.stack([R.choice_metrics([1, 0], 0)["conf"]] * 20 + [R.choice_metrics([0, 1], 0)["conf"]] * 20)
    d = R.paired_bootstrap("macro", conf_w, conf_wo, 40, B=500, seed=0)
    assert d["point"] == pytest.approx(0.25) and d["ci95"][0] <= 0.25 <= d["ci95"][1]


# --- split and head -------------------------------------------------------------------------------


def _iqa_bundle(n: int = 24) -> dict:
    """Problems whose products chain: problem i shares its item A with problem i+1 when i is even."""
    problems = []
    for i in range(n):
        a = f"A{i - i % 2}"
        cands = [{"key": f"G{i}", "title": f"gold thing {i} cable", "label": 1, "role": "gold"}] + [
            {"key": f"D{i}-{j}", "title": f"other item {i} {j}", "label": 0, "role": "distractor"} for j in range(3)]
        problems.append({"id": f"FS_{i}", "source": R.TASK2, "behavior": "co_purchase",
                         "query": {"text": f"thing {i} cable", "key": a, "role": "item_a"},
                         "intent": "because they both are a type of cable.", "candidates": cands, "gold": 0})
    know = {"products": {f"G{i}": {"augmentation": "can be used for [wires]", "by_relation": {"used_for_function": "can be used for [wires]"}}
                         for i in range(0, n, 2)}, "queries": {}, "lineage": {}}
    return {"data": {"task": R.TASK2, "path": "test"}, "problems": problems, "knowledge": know}


def test_split_is_grouped_by_product_and_seeded():
    b = _iqa_bundle()
    train, test, rep = R.split_units(b, 0.5, seed=0)
    assert rep["holds"] and rep["products_on_both_sides"] == 0 and train and test and not train & test
    keys = {p["id"]: {p["query"]["key"], *(c["key"] for c in p["candidates"])} for p in b["problems"]}
    assert not set().union(*(keys[i] for i in train)) & set().union(*(keys[i] for i in test))
    assert R.split_units(b, 0.5, seed=0)[:2] == (train, test) and R.split_units(b, 0.5, seed=1)[:2] != (train, test)
    # table rows: a product's rows all on one side, a query's rows may be on both
    rows = {"data": {"task": R.TABLE}, "problems": [
        {"id": f"q{i}", "source": R.TABLE, "query": {"text": f"q{i}", "key": None},
         "candidates": [{"key": f"P{(i + j) % 7}", "title": "t", "label": "Exact"} for j in range(3)]} for i in range(7)]}
    train, test, rep = R.split_units(rows, 0.5, seed=0)
    side = {}
    for p in rows["problems"]:
        for j, c in enumerate(p["candidates"]):
            side.setdefault(c["key"], set()).add(f"{p['id']}#{j}" in test)
    assert rep["holds"] and all(len(s) == 1 for s in side.values())


class FakeEncoder:
    """Deterministic pseudo-embeddings (a hash of the text seeds them) in place of MiniLM."""

    def _v(self, t) -> np.ndarray:
        v = np.random.default_rng(int(hashlib.md5(repr(t).encode()).hexdigest()[:8], 16)).normal(size=384)
        return (v / np.linalg.norm(v)).astype("float32")

    def single(self, texts):
        return np.stack([self._v(t) for t in texts])

    def joint(self, pairs):
        return np.stack([self._v(tuple(p)) for p in pairs])


def test_head_training_is_deterministic_under_a_seed():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(80, 20)), rng.integers(0, 2, 80)
    a, b = R.fit_head(X, y, seed=3), R.fit_head(X, y, seed=3)
    assert np.array_equal(a.coef_, b.coef_) and np.array_equal(a.intercept_, b.intercept_)
    with pytest.raises(ValueError, match="one label"):
        R.fit_head(X, np.zeros(80, dtype=int))
    bundle = _iqa_bundle()
    r1 = R.evaluate(bundle, encoder=FakeEncoder(), seed=5, B=200)
    r2 = R.evaluate(json.loads(json.dumps(bundle)), encoder=FakeEncoder(), seed=5, B=200)
    assert r1["results"] == r2["results"] and r1["split"] == r2["split"]
    assert R.evaluate(bundle, encoder=FakeEncoder(), seed=6, B=200)["split"] != r1["split"]


def test_report_counts_coverage_per_role():
    rep = R.evaluate(_iqa_bundle(), encoder=FakeEncoder(), seed=0, B=100)
    cov = rep["knowledge"]["coverage"]
    assert cov["by_group"]["gold"] == {"products": 24, "with_knowledge": 12, "share": 0.5, "share_of_slots": 0.5}
    assert cov["by_group"]["distractor"]["with_knowledge"] == 0 and cov["by_relation"] == {"used_for_function": 12}
    lex = rep["results"]["lexical"]["all"]
    assert lex["n"] == 24 and set(lex["difference"]) == {"accuracy", "recall@2", "mrr", "macro_f1", "micro_f1"}
    assert rep["results"]["head"]["test"]["n"] == rep["split"]["test_units"]
    c = lex["changed"]
    assert c["metric"] == "accuracy" and c["better"] + c["worse"] + c["same"] == 24


# --- the real encoder, once -----------------------------------------------------------------------


def test_run_on_the_bundled_table_with_real_minilm(tmp_path):
    """The bundled hand-labelled table with hand-written knowledge for a few products, through the
    real frozen MiniLM and the head: a report with every method, a plot, and the split check."""
    import csv

    rows = list(csv.DictReader((ROOT / "streams" / "samples" / "relevance_esci.csv").open()))
    problems: dict[str, dict] = {}
    for r in rows:
        p = problems.setdefault(r["query"], {"id": f"q{len(problems)}", "source": R.TABLE, "behavior": "search_buy",
                                             "query": {"text": r["query"], "key": None}, "candidates": []})
        p["candidates"].append({"key": r["product_id"], "title": r["title"], "label": r["label"]})
    know = {"products": {"P001": {"augmentation": "used by [nurses], can be used for [prevent slipping]",
                                  "by_relation": {"used_for_audience": "used by [nurses]"}},
                         "P015": {"augmentation": "can be used for [fry food without oil]",
                                  "by_relation": {"used_for_function": "can be used for [fry food without oil]"}}},
            "queries": {}, "lineage": {"models": ["SmolLM2"], "prompt_versions": ["p"], "critic_versions": ["c"]}}
    path = tmp_path / "bundle-test.json"
    path.write_text(json.dumps({"data": {"task": R.TABLE, "path": "relevance_esci.csv", "labels": {"scheme": "esci"}},
                                "problems": list(problems.values()), "knowledge": know}))
    rep = R.run(path, tmp_path, seed=0, B=300, progress=False)
    assert rep["split"]["holds"] and rep["knowledge"]["coverage"]["with_knowledge"] == 2
    assert set(rep["results"]) == {"lexical", "bi_encoder", "head"}
    head = rep["results"]["head"]["test"]
    assert {"p@1", "macro_f1", "label_macro_f1", "label_micro_f1"} <= set(head["difference"])
    assert 0 <= head["without"]["label_macro_f1"] <= 1 and rep["metrics"]["k"][0] == 1
    assert set(rep["by_relation"]) == {"used_for_function", "used_for_audience"}
    assert Path(rep["plot_file"]).stat().st_size > 10_000 and json.loads(Path(rep["report_file"]).read_text())["task"] == R.TABLE
    assert "frozen MiniLM + trained head" in R.render(rep)
