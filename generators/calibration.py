"""Per-relation thresholds for self-evaluation (E-CARE's P(YES) - P(NO)), calibrated on labels.

The small generator's yes/no judgement is biased differently per relation (it answers YES to
almost any audience, rarely to a cause), so one threshold does not fit all. From annotated
candidates (`intentflow annotate import`: the `plausible` answer is the label) we pick, per
relation, the threshold that classifies the labels best (ties: the higher one, precision over
recall); relations with too few labels fall back to the threshold fitted on all of them.
Pure: the scorer is passed in, so this runs without a model in tests.
"""

from __future__ import annotations

from typing import Callable, Sequence


def best_threshold(scores: Sequence[float], labels: Sequence[bool]) -> dict:
    """The cut (keep score >= t) with the best accuracy, and its precision and recall."""
    if not scores:
        raise ValueError("no labelled scores to calibrate on")
    cands = sorted(set(scores)) + [max(scores) + 1e-3]  # the last: keep nothing
    best = None
    for t in cands:
        tp = sum(s >= t and y for s, y in zip(scores, labels))
        fp = sum(s >= t and not y for s, y in zip(scores, labels))
        fn = sum(s < t and y for s, y in zip(scores, labels))
        acc = (len(labels) - fp - fn) / len(labels)
        key = (acc, t)
        if best is None or key > best[0]:
            best = (key, {"threshold": round(t, 4), "accuracy": round(acc, 4), "n": len(labels),
                          "precision": round(tp / (tp + fp), 4) if tp + fp else None,
                          "recall": round(tp / (tp + fn), 4) if tp + fn else None})
    return best[1]


def item_of(row: dict) -> dict:
    """An annotation row back into the candidate shape the scorers read (context 'a | b')."""
    a, _, b = row["context"].partition(" | ")
    if row["behavior"] == "search_buy":
        return {"behavior": "search_buy", "query": a, "product_title": b, "relation": row["relation"], "tail": row["tail"]}
    return {"behavior": "co_purchase", "product_a_title": a, "product_b_title": b, "relation": row["relation"],
            "tail": row["tail"]}


def calibrate(rows: list[dict], score: Callable[[list[dict]], list[float]], min_labels: int = 20) -> dict:
    """{min_self_eval, self_eval_by_relation, report} from annotated rows (plausible = label)."""
    items = [item_of(r) for r in rows]
    scores = [float(s) for s in score(items)]
    labels = [bool(r["plausible"]) for r in rows]
    overall = best_threshold(scores, labels)
    by_rel, report = {}, {"all": overall}
    for rel in sorted({r["relation"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["relation"] == rel]
        if len(idx) < min_labels or len({labels[i] for i in idx}) < 2:
            report[rel] = {"n": len(idx), "threshold": overall["threshold"], "fallback": "too few or one-sided labels"}
            continue
        fit = best_threshold([scores[i] for i in idx], [labels[i] for i in idx])
        by_rel[rel] = fit["threshold"]
        report[rel] = fit
    return {"min_self_eval": overall["threshold"], "self_eval_by_relation": by_rel, "report": report}
