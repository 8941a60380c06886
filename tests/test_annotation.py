"""The annotation loop: weighted sampling, all-or-nothing import, annotations as critic problems."""

import json

import pytest

from generators.annotation import AnnotationError, import_file, problems, sample, validate
from processors.contracts import QUESTIONS


def cand(query, tail, relation="used_for_audience"):
    return {"behavior": "search_buy", "query": query, "product_title": f"title for {query}", "relation": relation, "tail": tail}


def test_sample_prefers_popular_heads_and_rare_tails_without_repeats():
    cands = [cand("popular query", f"rare tail {i}") for i in range(30)] + \
            [cand(f"q{i}", "because they like them") for i in range(30)]
    rows = sample(cands, 20, seed=1)
    assert len(rows) == 20 and len({r["annotation_id"] for r in rows}) == 20
    assert sum(r["tail"].startswith("rare tail") for r in rows) >= 15
    assert all(r[q] is None for r in rows for q in QUESTIONS)


def filled(rows, **answers):
    return [{**r, **{q: answers.get(q, "yes") for q in QUESTIONS}} for r in rows]


def test_import_is_all_or_nothing_with_clear_errors(tmp_path):
    rows = sample([cand("q", "nurses"), cand("q", "astronauts")], 2)
    good = filled(rows)
    bad = good[:1] + [{**good[1], "plausible": "maybe"}]
    f = tmp_path / "a.jsonl"
    store = tmp_path / "store.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in bad))
    with pytest.raises(AnnotationError, match="nothing imported") as err:
        import_file(f, store)
    assert "row 2: plausible must be yes/no (true/false), got 'maybe'" in str(err.value)
    assert not store.exists()
    f.write_text("".join(json.dumps(r) + "\n" for r in good))
    assert import_file(f, store)["imported"] == 2
    assert import_file(f, store) == {"imported": 0, "already_there": 2, "store": str(store)}


def test_annotations_become_critic_problems():
    rows = validate(filled(sample([cand("q", "nurses"), cand("q", "astronauts"), cand("q", "doctors")], 3)))
    rows[1]["plausible"] = False
    ps = problems(rows)
    assert len(ps) == 2 and all(p["gold"] == 0 and len(p["options"]) == 2 for p in ps)
    assert all(p["options"][0].startswith("because the product is meant for") for p in ps)


def test_the_row_is_typed_answers_are_read_and_bad_rows_are_named():
    from processors.contracts import AnnotationRow

    row = sample([cand("q", "nurses")], 1)[0]
    assert set(row) == set(AnnotationRow.model_fields)  # the sampled row is the contract, nothing else
    ok = validate([{**row, **{q: a for q, a in zip(QUESTIONS, ("YES", "n", True, "True", " no "))}, "note": "close call"}])[0]
    assert [ok[q] for q in QUESTIONS] == [True, False, True, True, False] and ok["note"] == "close call"
    with pytest.raises(AnnotationError) as err:
        validate([{**filled([row])[0], "behavior": "browsing"}, {**filled([row])[0], "annotation_id": "other", "typical": None},
                  {**filled([row])[0], "annotation_id": "third", "relevant": 1.5}])
    text = str(err.value)
    assert "row 1: behavior" in text and "row 2: typical must be yes/no (true/false), got None" in text
    assert "row 3: relevant must be yes/no (true/false), got 1.5" in text
