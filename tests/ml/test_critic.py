"""The critic in the default path: an honest grouped split, quality floors on what it never saw
(co-purchase problems of IntentionQA, search-buy problems derived from its products, the
hand-written search-buy test set), deterministic training, the default setting and its folder.

The default critic comes from `make models` (bootstrap); the session fixture trains it when it is
not there (about a minute). Embeddings come from the disk cache bootstrap fills.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from generators import critic as C

SHARED_IQA = Path(__file__).resolve().parents[3] / "shared" / "data" / "intentionqa" / "task1.jsonl"


def sb(query: str, title: str, relation: str, tail: str) -> dict:
    return {"behavior": "search_buy", "query": query, "product_title": title, "relation": relation, "tail": tail}


@pytest.fixture(scope="session")
def default_critic():
    """(folder, critic.json, the critic) of the bootstrapped default critic."""
    from generators.scorers import load_critic

    info = C.ensure_default(progress=False)
    path = Path(info["path"])
    return path, json.loads((path / "critic.json").read_text()), load_critic(path, embedder=C.embeddings())


@pytest.fixture(scope="session")
def split():
    train, held, report, _ = C.training_problems(C.IQA_DATA, seed=0, holdout=0.2)
    return train, held, report


# --- the split -----------------------------------------------------------------------------------


def test_the_bundled_intentionqa_copy_is_the_shared_data():
    if not SHARED_IQA.exists():
        pytest.skip("../shared/data not present")
    shared = {d["id"]: d for d in C.read_jsonl(SHARED_IQA)}
    bundled = C.read_jsonl(C.IQA_DATA)
    assert len(bundled) == len(shared) == 1378
    for d in bundled:
        assert {k: shared[d["id"]][k] for k in d} == d


def test_grouped_split_has_no_product_and_no_gold_text_on_both_sides(split):
    train, held, report = split
    assert report["holds"] and not any(report["shared"].values())
    assert report["heldout"]["intentionqa"] == 271 and report["train"]["intentionqa"] == 1084

    # checked again from the raw rows, not from the keys the split used
    def sides(ps: list[dict]) -> tuple[set, set, set, set]:
        ids, titles, golds, queries = set(), set(), set(), set()
        for p in ps:
            r = p["raw"]
            if p["source"] == "intentionqa":
                ids |= {r["item_a_id"], r["item_b_id"]}
                titles |= {C.norm(r["item_a_name"]), C.norm(r["item_b_name"])}
                golds.add(C.norm(r["options"][r["gold_ind"]]))
            elif p["source"].startswith("handwritten"):
                ids.add(r["product_id"])
                titles.add(C.norm(r["title"]))
                queries.add(C.norm(r["query"]))
                golds |= {C.norm(t) for _, t in r["plausible"]}
        return ids, titles, golds, queries

    for a, b in zip(sides(train), sides(held)):
        assert not a & b
    # search-buy problems derived from IntentionQA products come from held-out products only
    held_ids = sides(held)[0]
    derived = [p for p in held if p["source"] == "intentionqa_search_buy"]
    assert len(derived) > 200
    assert all(k.removeprefix("id:") in held_ids for p in derived for k in p["keys"] if k.startswith("id:"))


def test_the_search_buy_test_set_shares_nothing_with_training():
    train = C.read_jsonl(C.SEARCH_BUY_TRAIN)
    test = C.read_jsonl(C.SEARCH_BUY_TEST)
    assert not {C.norm(r["query"]) for r in train} & {C.norm(r["query"]) for r in test}
    assert not {C.norm(r["title"]) for r in train} & {C.norm(r["title"]) for r in test}
    every_train_tail = {C.norm(t) for r in train for _, t in r["plausible"] + r["implausible"]}
    assert not every_train_tail & {C.norm(t) for r in test for _, t in r["plausible"]}
    assert not {C.norm(t) for r in train for _, t in r["implausible"]} & {C.norm(t) for r in test for _, t in r["implausible"]}


def test_problems_are_built_as_the_filter_builds_its_inputs():
    from generators.sentences import statement
    from processors.filters import context_text

    d = C.read_jsonl(C.IQA_DATA)[0]
    p = C.iqa_problems([d])[0]
    rel, _, tail = C.iqa_candidate(d["options"][d["gold_ind"]])
    item = C.co_item(d["item_a_name"], d["item_b_name"], rel, tail)
    assert p["context"] == context_text(item) and p["options"][p["gold"]] == statement(item)
    assert p["options"][p["gold"]] == "because both products are a type of USB extension cable."
    h = C.handwritten_problems(C.read_jsonl(C.SEARCH_BUY_TEST), "handwritten_test")[0]
    assert h["context"].startswith("bathroom safety | Medline Shower Chair")
    assert "because the product is meant for seniors at risk of falling." in h["options"]


# --- quality floors on held-out data (the default critic) ----------------------------------------


def test_default_critic_beats_word_overlap_by_15_points_on_held_out_co_purchase(default_critic, split):
    _, meta, critic = default_critic
    _, held, _ = split
    co = [p for p in held if p["source"] == "intentionqa"]
    assert {p["raw"]["id"] for p in co} == {d["id"] for d in C.read_jsonl(default_critic[0] / "heldout.jsonl")}
    res = C.evaluate(co, critic.logits, C.sigmoid)["intentionqa"]
    assert res["accuracy"] >= res["word_overlap"] + 0.15, res  # measured: 0.80 vs 0.61
    assert res["accuracy"] == pytest.approx(meta["heldout"]["intentionqa"]["accuracy"], abs=0.01)


def test_default_critic_keeps_plausible_and_rejects_absurd_search_buy(default_critic):
    _, _, critic = default_critic
    test = C.handwritten_problems(C.read_jsonl(C.SEARCH_BUY_TEST), "handwritten_test")
    res = C.evaluate(test, critic.logits, C.sigmoid)["handwritten_test"]
    # measured (26 products, 104 plausible / 104 implausible): accuracy 0.99, keeps 0.95, rejects 0.92
    assert res["accuracy"] >= 0.85 and res["keeps_plausible"] >= 0.85 and res["rejects_implausible"] >= 0.85, res
    assert res["accuracy"] >= res["word_overlap"] + 0.3
    # the tester's findings with the old critic
    chair, decanter = critic.plausibility([
        sb("bathroom safety", "Medline Shower Chair Bath Seat with Padded Armrests and Back", "used_for_audience",
           "seniors at risk of falling"),
        sb("gifts for dad", "Godinger Whiskey Decanter Set with 4 Glasses", "used_for_audience", "newborn babies")])
    assert chair >= 0.5 > decanter


def test_default_critic_judges_search_buy_on_real_held_out_products(default_critic, split):
    _, _, critic = default_critic
    _, held, _ = split
    res = C.evaluate([p for p in held if p["source"] == "intentionqa_search_buy"], critic.logits, C.sigmoid)
    r = res["intentionqa_search_buy"]
    assert r["accuracy"] >= r["word_overlap"] + 0.1, r  # measured: 0.73 vs 0.56
    assert r["keeps_plausible"] >= 0.65 and r["rejects_implausible"] >= 0.65, r  # measured: 0.80, 0.75


# --- the folder, determinism, the setting --------------------------------------------------------


def test_critic_json_says_what_the_critic_is(default_critic):
    import numpy as np

    path, meta, critic = default_critic
    assert meta["kind"] == "logreg" and meta["version"].startswith("critic-logreg-") and critic.version == meta["version"]
    assert meta["split"]["holds"] and meta["data"]["hash"] and meta["data"]["sources"][0]["blake2b"]
    for behavior in ("behavior:co_purchase", "behavior:search_buy"):
        assert 0.0 <= meta["heldout"][behavior]["word_overlap"] < meta["heldout"][behavior]["accuracy"] <= 1.0
    assert meta["search_buy_test"]["n"] == 104
    assert meta["train_seconds"] < 60 and meta["dtype"] in ("float32", "bfloat16") and meta["cpu"]["cpu"]
    head = np.load(path / "head.npz", allow_pickle=False)  # parameters without pickle
    assert head["weights"].shape == (384 * 3 + 1,) and head["bias"].shape == (1,)
    assert path == C.default_dir()


def test_training_is_deterministic_under_a_seed(tmp_path):
    # IntentionQA only: its texts are in the embedding cache bootstrap filled (derived search-buy
    # problems of another split would need new embeddings)
    a = C.train(C.IQA_DATA, tmp_path / "a", limit=300, seed=3, search_buy=False, progress=False)
    b = C.train(C.IQA_DATA, tmp_path / "b", limit=300, seed=3, search_buy=False, progress=False)
    C.train(C.IQA_DATA, tmp_path / "c", limit=300, seed=4, search_buy=False, progress=False)  # another seed
    assert a["version"] == b["version"] and a["heldout"] == b["heldout"]
    assert (tmp_path / "a" / "heldout.jsonl").read_text() == (tmp_path / "b" / "heldout.jsonl").read_text()
    assert (tmp_path / "a" / "heldout.jsonl").read_text() != (tmp_path / "c" / "heldout.jsonl").read_text()
    from generators.scorers import load_critic

    items = [sb("gifts for dad", "Godinger Whiskey Decanter Set with 4 Glasses", "used_for_audience", "whiskey fans")]
    emb = C.embeddings()
    assert load_critic(tmp_path / "a", embedder=emb).plausibility(items) == load_critic(tmp_path / "b", embedder=emb).plausibility(items)


def test_the_setting_resolves_default_off_and_folders(default_critic, tmp_path, monkeypatch):
    from processors.filters import FilterConfig

    assert FilterConfig().critic == "default"
    assert C.resolve("default") == C.resolve(None) == str(default_critic[0])
    assert C.resolve("off") is None and C.resolve("none") is None and C.resolve("OFF") is None
    assert C.resolve(str(default_critic[0])) == str(default_critic[0])
    with pytest.raises(C.CriticNotFound, match="critic.json"):
        C.resolve(str(tmp_path / "nothing"))
    monkeypatch.setenv("INTENTFLOW_ML_CACHE", str(tmp_path / "fresh-clone"))
    with pytest.raises(C.CriticNotFound, match="make models"):
        C.resolve("default")


def test_the_filter_pipeline_runs_the_default_critic_unless_off(default_critic, monkeypatch):
    from generators.cli import filter_pipeline
    from generators.config import MLSettings
    from processors.filters import TailStats

    make, version = filter_pipeline(MLSettings())
    assert version == default_critic[1]["version"]
    title = "Godinger Whiskey Decanter Set with 4 Glasses"
    verdicts = make(TailStats({})).run([
        {**sb("gifts for dad", title, "used_for_audience", "newborn babies"), "mean_logprob": -2.0},
        {**sb("gifts for dad", title, "used_for_audience", "whiskey lovers"), "mean_logprob": -2.0}])
    assert verdicts[0].stage == "critic" and not verdicts[0].kept
    assert "critic" in verdicts[1].scores
    monkeypatch.setenv("INTENTFLOW_FILTER__CRITIC", "off")
    assert filter_pipeline(MLSettings())[1] is None


def test_critic_loads_either_kind_by_critic_json(default_critic, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from generators.models import minilm_dir
    from generators.scorers import Critic, LogRegCritic, load_critic

    assert isinstance(Critic(str(default_critic[0])), LogRegCritic)
    ce = tmp_path / "ce"  # an (untrained) cross-encoder folder, as `critic train --kind cross-encoder` writes
    AutoModelForSequenceClassification.from_pretrained(minilm_dir(), num_labels=1).save_pretrained(ce)
    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(ce)
    (ce / "critic.json").write_text(json.dumps({"version": "critic-cross-encoder-test", "kind": "cross-encoder"}))
    c = load_critic(ce)
    assert isinstance(c, Critic) and c.version == "critic-cross-encoder-test"
    assert all(0.0 < p < 1.0 for p in c.plausibility([sb("q", "t", "used_for_audience", "x")]))


def _cli(*args: str) -> dict | list:
    r = subprocess.run([sys.executable, "-m", "generators.cli", *args], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_bootstrap_a_second_time_does_nothing(default_critic):
    out = _cli("bootstrap", "--json")
    assert out["critic"] == {"path": str(default_critic[0]), "trained": False, "version": default_critic[1]["version"]}


def test_eval_intents_prints_the_word_overlap_baseline_beside_the_critic():
    res = _cli("eval", "intents", "--data", str(C.SEARCH_BUY_TEST), "--json")
    assert res["scorer"] == "critic" and res["critic_version"].startswith("critic-logreg-") and res["n"] == 104
    row = res["by"]["handwritten_test"]
    assert row["accuracy"] > row["word_overlap"] and {"keeps_plausible", "rejects_implausible", "chance"} <= set(row)


def test_critic_trains_on_an_annotation_store(tmp_path):
    from processors.filters import context_text

    rows = []
    for r in C.read_jsonl(C.SEARCH_BUY_TEST):  # the test set's labels, as reviewers' answers
        for label, pairs in (("yes", r["plausible"]), ("no", r["implausible"])):
            for rel, tail in pairs:
                item = C.sb_item(r["query"], r["title"], rel, tail)
                rows.append({"annotation_id": f"{r['id']}-{rel}-{tail}", "behavior": "search_buy",
                             "context": context_text(item), "relation": rel, "tail": tail,
                             **{q: label if q in ("plausible", "typical") else "yes"
                                for q in ("complete", "relevant", "informative", "plausible", "typical")}})
    store = tmp_path / "annotations.jsonl"
    store.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = C.train(store, tmp_path / "critic", holdout=0.25, search_buy=False, progress=False)
    assert report["split"]["holds"] and report["split"]["train"]["annotations"] > report["split"]["heldout"]["annotations"] > 0
    assert report["heldout"]["annotations"]["accuracy"] > report["heldout"]["annotations"]["word_overlap"]
