"""`intentflow eval relevance`, the stream side: evaluation data, label-free replay, knowledge read through Feast."""

from __future__ import annotations

import codecs
import json
import time
from collections import Counter
from pathlib import Path

import pytest

from processors import relevance as data
from processors.config import SamplingConfig
from processors.events import parse_event
from processors.sampling import sample_search_buy

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "streams" / "samples" / "relevance_esci.csv"


def _task2_row(i: int, a: tuple[str, str], b: tuple[str, str], distractors: list[tuple[str, str]], gold: str = "B") -> dict:
    letters = "ABCD"[:len(distractors) + 1]
    others = iter(t for _, t in distractors)
    options = {x: (b[1] if x == gold else next(others)) for x in letters}
    return {"id": f"FS_{i}", "item_a_id": a[0], "item_a_name": a[1], "item_b_id": b[0], "item_b_name": b[1],
            "relation": "all", "assertion": "PersonX bought a product of Item A and a product of Item B because they "
                                            "both are a type of USB cable.",
            "distractors_id": [d for d, _ in distractors], "distractors_product": [t for _, t in distractors],
            "gold_ind": gold, "options": options, "typicality": 0.5, "hadFalseNegative": 0}


@pytest.fixture
def task2(tmp_path) -> Path:
    cable, hub = ("A1", "Belkin USB Cable, 6 ft"), ("B1", "Anker 4-Port USB Hub")
    ring, mug = ("A2", "Silver Ring &amp; Box"), ("B2", "Ceramic Coffee Mug")
    rows = [
        # distractor ids deliberately wrong (as in the shared file): "B2" next to the ring's title
        _task2_row(1, cable, hub, [("B2", "Silver Ring & Box"), ("X9", "Lonely Lamp Shade")]),
        _task2_row(2, ring, mug, [("A1", "Anker 4-Port USB Hub")], gold="A"),
    ]
    p = tmp_path / "task2.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_task2_problems_key_options_by_their_titles_not_the_misaligned_distractor_ids(task2):
    d = data.load(task2)
    assert d["task"] == data.TASK2 and len(d["problems"]) == 2
    p1, p2 = d["problems"]
    assert p1["query"] == {"text": "Belkin USB Cable, 6 ft", "key": "A1", "role": "item_a"}
    assert p1["intent"] == "because they both are a type of USB cable."
    keys = {c["title"]: c["key"] for c in p1["candidates"]}
    assert keys["Anker 4-Port USB Hub"] == "B1"                      # the gold: item_b_id
    assert keys["Silver Ring & Box"] == "A2"                         # a title that is item A elsewhere: that id
    assert keys["Lonely Lamp Shade"].startswith("iqa-t-")            # no trustworthy id: keyed by its title
    assert p1["candidates"][p1["gold"]]["key"] == "B1" and p1["candidates"][p1["gold"]]["role"] == "gold"
    assert p2["query"]["text"] == "Silver Ring & Box"                # HTML entities decoded, as replay does
    assert {c["key"] for c in p2["candidates"]} == {"B2", "B1"}
    assert d["notes"]["distractors_keyed_by_ab_id"] == 2 and d["notes"]["distractors_keyed_by_title"] == 1


def test_limit_draws_the_same_problems_for_a_seed():
    path = ROOT.parent / "shared" / "data" / "intentionqa" / "task2.jsonl"
    if not path.exists():
        pytest.skip("shared IntentionQA not here")
    a, b = data.load(path, limit=5, seed=3), data.load(path, limit=5, seed=3)
    assert [p["id"] for p in a["problems"]] == [p["id"] for p in b["problems"]]
    assert [p["id"] for p in a["problems"]] != [p["id"] for p in data.load(path, limit=5, seed=4)["problems"]]


def test_bundled_table_reads_with_esci_labels():
    d = data.load(TABLE)
    assert d["task"] == data.TABLE and d["labels"]["scheme"] == "esci"
    assert d["labels"]["classes"] == ["Complement", "Exact", "Irrelevant", "Substitute"]
    assert len(d["problems"]) == 14 and all(sum(c["label"] == "Exact" for c in p["candidates"]) == 1 for p in d["problems"])
    assert set(d["products"]) == {f"P{i:03d}" for i in range(1, 41)}


def test_spreadsheet_csv_with_bom_semicolons_and_esci_letters(tmp_path):
    p = tmp_path / "esci.csv"
    p.write_bytes(codecs.BOM_UTF8 + "Query;Product_ID;Product_Title;ESCI_Label\r\nair fryer;B1;Ninja Air Fryer, 4 qt;E\r\n"
                  "air fryer;B2;Spatula;c\r\n".encode())
    d = data.load(p)
    (prob,) = d["problems"]
    assert [(c["key"], c["title"], c["label"]) for c in prob["candidates"]] == [
        ("B1", "Ninja Air Fryer, 4 qt", "Exact"), ("B2", "Spatula", "Complement")]


@pytest.mark.parametrize("body, message", [
    ("query,product_id,title,label\nair fryer,B1,Ninja,Exact\nair fryer,B2,Pan,Maybe\n",
     "line 3: unknown label 'Maybe'"),
    ("query,product_id,title\nair fryer,B1,Ninja\n", "header: no column for label"),
    ("query,product_id,title,label\nair fryer,B1,,Exact\n", "line 2: empty title"),
    ("query,product_id,title,label\nair fryer,B1,Ninja,Substitute\nair fryer,B2,Pan,Partial\n",
     "line 3: label 'Partial' is WANDS, but earlier rows use ESCI"),
    ("query,product_id,title,label\nair fryer,B1,Ninja,Exact\nAir Fryer,B1,Ninja,Irrelevant\n",
     "line 3: query 'Air Fryer' and product 'B1' are already labelled on line 2"),
])
def test_bad_tables_fail_naming_the_line(tmp_path, body, message):
    p = tmp_path / "bad.csv"
    p.write_text(body)
    with pytest.raises(data.DataError) as e:
        data.load(p)
    assert message in str(e.value) and str(p) in str(e.value)


def test_wands_labels(tmp_path):
    p = tmp_path / "wands.tsv"
    p.write_text("query\tproduct_id\tproduct_name\tlabel\nsalon chair\t1\tHydraulic Salon Chair\tExact\n"
                 "salon chair\t2\tOffice Chair\tPartial\n")
    d = data.load(p)
    assert d["labels"]["scheme"] == "wands" and d["labels"]["not_relevant"] == ["Partial"]


def _outcomes(events: list[dict]) -> dict[str, str]:
    """The real sampler (default thresholds) over the events: the last outcome per product."""
    pairs, queries, seen, last = {}, {}, {}, {}
    for i, e in enumerate(events):
        ev = parse_event(e)
        last[ev.product.product_id] = sample_search_buy(ev, 0, i, pairs, queries, seen, SamplingConfig()).outcome
    return last


def test_neutral_events_treat_gold_and_distractors_alike_and_pass_the_sampler(task2):
    d = data.load(task2)
    events = data.neutral_events(d["products"], seed=1)
    by_product: dict[str, list[dict]] = {}
    for e in events:
        by_product.setdefault(e["product"]["product_id"], []).append(e)
    assert set(by_product) == set(d["products"])                                  # item A, gold and distractors
    shapes = {tuple((e["clicked"], e["purchased"], e["added_to_cart"]) for e in es) for es in by_product.values()}
    assert shapes == {((True, True, True), (True, False, False), (True, False, False))}  # one shape for all
    for key, es in by_product.items():                                             # the query comes from its own title
        assert {e["query"] for e in es} == {data.neutral_query(d["products"][key])}
    text = json.dumps(events)
    assert "gold" not in text and "distractor" not in text and "co_purchase" not in text
    assert set(_outcomes(events).values()) == {"emitted"}                          # every pair is explained
    assert [e["event_id"] for e in events] != [e["event_id"] for e in data.neutral_events(d["products"], seed=2)]


def test_row_replay_sends_every_row_the_same_whatever_its_label():
    d = data.load(TABLE)
    events = data.row_events(d["problems"])
    per_pair = Counter((e["query"], e["product"]["product_id"]) for e in events)
    assert len(per_pair) == sum(len(p["candidates"]) for p in d["problems"]) and set(per_pair.values()) == {3}
    assert "Exact" not in json.dumps(events) and set(_outcomes(events).values()) == {"emitted"}


def test_replaying_intentionqa_rows_is_refused(task2):
    from streams.relevance import replay_plan

    with pytest.raises(ValueError, match="reveal the answers"):
        replay_plan(data.load(task2), "rows", 0)


def test_knowledge_key_follows_products_and_pipeline_versions(task2):
    from streams.relevance import knowledge_key

    d = data.load(task2)
    v = {"model": "smollm2", "prompt_version": "p2", "critic_version": "c1"}
    k = knowledge_key(d, "neutral", v)
    assert k == knowledge_key(data.load(task2), "neutral", dict(v))
    assert k != knowledge_key(d, "neutral", {**v, "critic_version": "c2"})
    assert k != knowledge_key(d, "neutral", {**v, "prompt_version": "p3"})
    fewer = {**d, "products": dict(list(d["products"].items())[:-1])}
    assert k != knowledge_key(fewer, "neutral", v)


def test_knowledge_is_read_through_feast_with_augmentation_per_relation(tmp_path):
    """Features written to a Feast store (SQLite online) by the feature writer's pusher, read back
    as the evaluation reads them."""
    from feature_repo.client import FeatureReader, Pusher, augmentation
    from feature_repo.store import open_store
    from processors import features
    from processors.features import FeatureConfig
    from streams.relevance import read_knowledge
    from tests.feature_data import product, search_edge

    store = open_store(FeatureConfig(online="sqlite", repo_dir=str(tmp_path / "feast")), str(tmp_path), 0)
    shoe = product("B01", "Skechers Slip-Resistant Work Shoes", "work shoes")
    t0 = time.time() - 60
    edges = [search_edge("work shoes", shoe, "used_for_audience", "nurses", 0.9, t0),
             search_edge("work shoes", shoe, "used_for_function", "prevent slipping", 0.8, t0),
             search_edge("work shoes", shoe, "xWant", "stand all day", 0.7, t0)]
    cfg, states, by_view = FeatureConfig(), {}, {}
    for e in edges:
        for key, c in features.contributions(e):
            states[key], _ = features.apply(states.get(key), c, cfg)
    for key, st in states.items():
        for view, row in features.rows(key, st, cfg):
            by_view.setdefault(view, []).append(features.stamp(row, time.time()))
    Pusher(store).push(by_view, "online")
    reader = FeatureReader(store)
    k = read_knowledge(reader, {"B01": shoe["title"], "B02": "Unknown Product"}, ["work shoes", "never searched"])
    b01 = k["products"]["B01"]
    assert b01["augmentation"] == augmentation(reader.product("B01")) == (
        "is a kind of [work shoes for nurses], can be used for [prevent slipping], used by [nurses], "
        "with intention of [stand all day]")
    assert b01["by_relation"] == {"used_for_function": "can be used for [prevent slipping]",
                                  "used_for_audience": "is a kind of [work shoes for nurses], used by [nurses]",
                                  "xWant": "with intention of [stand all day]"}
    assert b01["relations"]["used_for_audience"] == ["nurses"] and b01["models"] == ["smollm2"]
    assert k["products"]["B02"]["augmentation"] == "" and k["products"]["B02"]["relations"] == {}
    assert k["queries"]["work shoes"]["by_relation"]["xWant"] == "with intention of [stand all day]"
    assert k["queries"]["never searched"]["augmentation"] == ""
    assert k["lineage"] == {"models": ["smollm2"], "prompt_versions": ["p1-2026-11/plain"], "critic_versions": ["critic-test"]}


def test_bundle_carries_problems_and_knowledge(tmp_path, task2):
    from streams.relevance import bundle

    d = data.load(task2)
    know = {"key": "k", "products": {}, "queries": {}, "source": "file"}
    path = bundle(d, know, tmp_path)
    b = json.loads(path.read_text())
    assert b["data"]["task"] == data.TASK2 and len(b["problems"]) == 2 and b["knowledge"]["key"] == "k"


def test_without_a_limit_intentionqa_runs_a_sample_and_a_table_runs_whole(task2):
    """The issue's command (`eval relevance --data task2.jsonl`, no --limit) must finish in minutes, not
    hours: 60 problems by default; --limit 0 asks for the whole file."""
    shared = ROOT.parent / "shared" / "data" / "intentionqa" / "task2.jsonl"
    assert data.resolve_limit(task2, "auto", None) == data.TASK2_LIMIT == 60
    assert data.resolve_limit(task2, "auto", 0) is None and data.resolve_limit(task2, "auto", 7) == 7
    assert data.resolve_limit(TABLE, "auto", None) is None
    with pytest.raises(data.DataError, match="--limit -1"):
        data.resolve_limit(task2, "auto", -1)
    if shared.exists():
        d = data.load(shared, "auto", data.resolve_limit(shared, "auto", None), 0)
        assert len(d["problems"]) == 60 and d["in_file"] == 1378 and d["limit"] == 60
