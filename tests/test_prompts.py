"""Prompts: untrusted fields cannot change a prompt's structure; few-shot examples are not data."""

import json
from pathlib import Path

import pytest

from generators import prompts
from generators.relations import RELATIONS
from processors.safety import instruction_reasons, request_reasons

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
INJECTIONS = [json.loads(line) for line in (ROOT / "tests" / "data" / "injections.jsonl").read_text().splitlines()]


def request(query="gifts for dad", title="Leatherman Wave Plus Multitool", category="Tools"):
    return {"request_id": "r1", "pair_key": "k", "behavior": "search_buy", "query": query, "event_id": "e",
            "event_time": 0.0, "product": {"product_id": "P1", "title": title, "category": category}}


def test_there_are_at_least_twenty_injection_cases_and_each_is_flagged():
    assert len(INJECTIONS) >= 20
    for case in INJECTIONS:
        assert instruction_reasons(case["text"]), case["text"]


@pytest.mark.parametrize("case", INJECTIONS, ids=[c["text"][:30] for c in INJECTIONS])
def test_untrusted_fields_cannot_change_the_prompt_structure(case):
    benign = prompts.build(request())[0].text
    hostile = request(**{case["field"]: case["text"]})
    text = prompts.build(hostile)[0].text
    # the same lines in the same places: the field is one JSON string on its own line
    assert text.count("\n") == benign.count("\n")
    assert [line.split(":")[0] for line in text.splitlines()] == [line.split(":")[0] for line in benign.splitlines()]
    line = next(line for line in text.splitlines()[-4:] if line.startswith("Search:" if case["field"] == "query" else "Bought:"))
    value = json.loads(line.split(": ", 1)[1])  # parses back as one string: nothing escaped it
    assert value.rstrip(".") in " ".join(case["text"].split()) or value.endswith("...")
    assert request_reasons(hostile)


def test_fields_are_capped_in_characters_and_in_tokens():
    long_title = "Ultra " * 400
    text = prompts.build(request(title=long_title))[0].text
    assert len(text.splitlines()[-2]) < prompts.MAX_FIELD_CHARS["title"] + 20
    ja = "日本製の高品質なステンレス製の水筒" * 50
    capped = prompts.field(ja, "title", count_tokens=len)  # one "token" per character
    assert len(json.loads(capped)) <= prompts.MAX_FIELD_TOKENS["title"] + 3


def test_prompts_of_one_request_share_everything_but_the_last_line():
    ps = [p.text for p in prompts.build(request(), ("used_for_function", "used_for_audience", "xWant"))]
    common = ps[0].rsplit("\n", 2)[0]
    assert all(p.startswith(common) for p in ps)
    assert all(p.startswith(prompts.shared_prefix("general")) for p in ps)


def _norm(s: str) -> str:
    return " ".join(s.lower().split())


def test_fewshot_inputs_are_disjoint_from_bundled_samples_and_evaluation_data():
    shown = {_norm(x) for x in prompts.fewshot_inputs()}
    data = set()
    for name in ("search_buy.jsonl", "co_purchase.jsonl"):
        for line in (ROOT / "streams" / "samples" / name).read_text().splitlines():
            ev = json.loads(line)
            data.update(_norm(v) for v in (ev.get("query"), *(ev.get(k, {}).get("title") for k in ("product", "product_a", "product_b"))) if v)
    from processors.samples import CATALOGUE, QUERIES

    data.update(_norm(t) for t, _, _ in CATALOGUE.values())
    data.update(_norm(q) for q in QUERIES)
    if SHARED.exists():
        for name in ("task1.jsonl", "task2.jsonl"):
            for line in (SHARED / "intentionqa" / name).read_text().splitlines():
                d = json.loads(line)
                data.update(_norm(d[k]) for k in ("item_a_name", "item_b_name"))
                if name == "task2.jsonl":
                    data.update(_norm(v) for v in d["options"].values())
        for line in (SHARED / "wands" / "query.tsv").read_text().splitlines()[1:]:
            data.add(_norm(line.split("\t")[1]))
    assert not shown & data, shown & data


def test_fewshot_answers_name_their_own_contexts():
    answers = prompts.fewshot_answers()
    assert len(answers) == sum(len(items) for shots in prompts.FEWSHOT.values() for *_, items in shots)
    assert all(ctx for ctx in answers.values())


def test_every_fewshot_relation_exists():
    assert all(r in RELATIONS for shots in prompts.FEWSHOT.values() for _, _, r, _ in shots)
