"""Self-evaluation thresholds per relation, fitted on labels (pure: a scorer stands in for the model)."""

import pytest

from generators.calibration import best_threshold, calibrate, item_of


def test_best_threshold_separates_the_labels_and_prefers_precision_on_ties():
    fit = best_threshold([-0.5, -0.2, 0.1, 0.4, 0.6], [False, False, True, True, True])
    assert fit["threshold"] == 0.1 and fit["accuracy"] == 1.0 and fit["precision"] == 1.0
    assert best_threshold([0.2, 0.2], [True, False])["threshold"] > 0.2  # a tie: keep nothing rather than a coin flip


def _row(rel, tail, plausible, behavior="search_buy"):
    return {"annotation_id": f"{rel}-{tail}", "behavior": behavior, "context": "shoes for nurses | Clogs",
            "relation": rel, "tail": tail, "plausible": plausible}


def test_each_relation_gets_its_own_threshold_and_sparse_ones_fall_back():
    # the "model" says YES to every audience (bias +0.5) but is fair on functions
    bias = {"used_for_audience": 0.5, "used_for_function": 0.0}
    rows = [_row(rel, f"t{i}", i % 2 == 0) for rel in bias for i in range(40)]
    rows += [_row("xWant", f"w{i}", i % 2 == 0) for i in range(5)]

    def score(items):
        return [bias.get(it["relation"], 0.0) + (0.3 if int(it["tail"][1:]) % 2 == 0 else -0.3) for it in items]

    res = calibrate(rows, score, min_labels=20)
    assert res["self_eval_by_relation"]["used_for_audience"] == pytest.approx(0.8)
    assert res["self_eval_by_relation"]["used_for_function"] == pytest.approx(0.3)
    assert "xWant" not in res["self_eval_by_relation"] and res["report"]["xWant"]["fallback"]
    assert res["report"]["used_for_audience"]["accuracy"] == 1.0


def test_annotation_rows_become_scorer_items():
    assert item_of(_row("xWant", "walk", True)) == {"behavior": "search_buy", "query": "shoes for nurses",
                                                    "product_title": "Clogs", "relation": "xWant", "tail": "walk"}
    it = item_of(_row("used_with", "socks", False, behavior="co_purchase"))
    assert it["product_a_title"] == "shoes for nurses" and it["product_b_title"] == "Clogs"


def test_calibration_without_labels_is_an_error():
    with pytest.raises(ValueError):
        calibrate([], lambda items: [])
