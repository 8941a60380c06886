"""Relations, prompts and parsing: pure text, no model."""

import pytest

from generators import prompts, relations
from generators.parsing import normalize, parse_list

SB = {"request_id": "r1", "behavior": "search_buy", "query": "shoes for pregnant women",
      "product": {"product_id": "P1", "title": "Skechers Slip-Resistant Work Shoes", "category": "Shoes"}}
CP = {"request_id": "r2", "behavior": "co_purchase",
      "product_a": {"product_id": "A", "title": "Coleman Tent"}, "product_b": {"product_id": "B", "title": "Sleeping Bag"}}


def test_vocabulary_has_seeds_and_fine_relations_with_scopes():
    assert set(relations.SEEDS) <= set(relations.RELATIONS)
    for name in ("used_for_function", "used_for_audience", "used_in_location", "xWant", "xIs_a", "used_with"):
        r = relations.RELATIONS[name]
        assert r.definition and r.stem and r.scope in {"who", "where_when", "why_need", "utility"}
    assert "used_with" not in [r.name for r in relations.for_behavior("search_buy", ("used_with", "isA"))]
    with pytest.raises(KeyError, match="unknown relation"):
        relations.for_behavior("search_buy", ("madeUp",))


def test_prompts_one_per_relation_with_domain_fewshot_and_version():
    ps = prompts.build(SB, ("used_for_audience", "xWant"))
    assert [p.relation for p in ps] == ["used_for_audience", "xWant"]
    assert all(p.version == prompts.PROMPT_VERSION and p.request_id == "r1" for p in ps)
    assert ps[0].text.endswith('Bought: "Skechers Slip-Resistant Work Shoes"\nThe product is meant for:\n1.')
    assert "restaurant line cooks" in ps[0].text  # the shoes domain's examples
    cp = prompts.build(CP, ("used_for_event",))[0].text
    assert cp.endswith('Bought together: "Coleman Tent" and "Sleeping Bag"\nBoth products are used for the activity:\n1.')
    assert "staying dry between meetings" in cp  # general domain


def test_self_eval_prompt_asks_yes_no():
    t = prompts.self_eval_prompt({"query": "q", "title": "t"}, "search_buy", "capableOf", "keep warm")
    assert t.endswith("Answer YES or NO.\nAnswer:") and "is capable of keep warm" in t


@pytest.mark.parametrize("text, want, dropped", [
    (" walking all day\n2. standing at work\n3. long shifts\n", ["walking all day", "standing at work", "long shifts"], {}),
    (" walking\n2) walking\n3. Walking!\n4. hiking", ["walking", "hiking"], {"repeated": 2}),
    (" \n2. \n3. ok then", ["ok then"], {"empty": 2}),
    (" a very long run on item that keeps going and going and going without any end in sight at all\n2. fine",
     ["fine"], {"too_long": 1}),
    (" first thing. And then the model rambles on\n2. second", ["first thing", "second"], {}),
    (" pregnant women\n2. nurses\n\nSearch: \"x\"\nBought: \"y\"\n1. leaked", ["pregnant women", "nurses"], {}),
    (" pregnant women\n2. nurses\nSearch: \"x\"", ["pregnant women", "nurses"], {}),
    (" 123\n2. ---\n3. \"quoted item\"", ["quoted item"], {"no_letters": 1, "empty": 1}),
    ("", [], {"empty": 1}),
    (" long item that wraps\nonto the next line\n2. next", ["long item that wraps onto the next line", "next"], {}),
])
def test_parse_list_handles_ugly_output(text, want, dropped):
    p = parse_list(text, max_items=5, max_words=12)
    assert [t for _, t in p.items] == want
    assert [r for r, _ in p.items] == list(range(1, len(want) + 1))
    assert dict(p.dropped) == dropped


def test_parse_chat_style_output_that_numbers_its_first_item():
    assert [t for _, t in parse_list("1. camping\n2. hiking").items] == ["camping", "hiking"]


def test_parse_caps_items_and_normalizes():
    p = parse_list(" a\n2. b\n3. c\n4. d", max_items=2)
    assert [t for _, t in p.items] == ["a", "b"] and p.dropped["over_max_items"] == 2
    assert normalize("  Keep the Wearer WARM!! ") == "keep the wearer warm"


def test_parse_never_raises_on_garbage():
    import random

    rng = random.Random(0)
    for _ in range(300):
        s = "".join(rng.choice("1234.)\n -abcXYZ:\"'*") for _ in range(rng.randrange(80)))
        parse_list(s)
