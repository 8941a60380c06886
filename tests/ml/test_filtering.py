"""Model-based filtering on CPU with the bundled models: fluency, paraphrase, critic training,
intent-scoring evaluation, and the `filter` command end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

IQA = Path(__file__).resolve().parents[3] / "shared" / "data" / "intentionqa" / "task1.jsonl"
needs_iqa = pytest.mark.skipif(not IQA.exists(), reason="../shared/data not present")


def sb(tail, relation="used_for_audience"):
    return {"behavior": "search_buy", "query": "shoes for pregnant women", "product_title": "Skechers Slip-Resistant Work Shoes",
            "product_type": "work shoes", "relation": relation, "tail": tail}


def test_lm_fluency_prefers_fluent_text():
    from generators.scorers import LMFluency

    good, bad = LMFluency().score([sb("pregnant women"), sb("zqx blorp vrrk ptang")])
    assert good > bad


def test_paraphrase_similarity_is_high_for_restated_context():
    from generators.scorers import Embedder

    para, novel = Embedder().similarity([sb("slip resistant work shoes for pregnant women"), sb("nurses on long shifts")])
    assert para > novel and para > 0.7


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    p = tmp_path_factory.mktemp("iqa") / "task1_small.jsonl"
    p.write_text("".join(IQA.read_text().splitlines(keepends=True)[:120]))
    return p


@pytest.fixture(scope="module")
def trained_critic(small_data, tmp_path_factory):
    from generators.critic import train

    out = tmp_path_factory.mktemp("critic")
    report = train(small_data, out, holdout=0.25, epochs=1, limit=80, progress=False)
    return out, report


@needs_iqa
def test_critic_trains_with_a_held_out_report_and_a_version(trained_critic):
    out, report = trained_critic
    assert report["version"].startswith("critic-") and report["heldout_problems"] == 20
    for k in ("heldout_accuracy", "heldout_precision", "heldout_recall"):
        assert 0.0 <= report[k] <= 1.0
    assert json.loads((out / "critic.json").read_text())["version"] == report["version"]
    assert len((out / "heldout.jsonl").read_text().splitlines()) == 20
    from generators.scorers import Critic

    scores = Critic(str(out)).plausibility([sb("pregnant women"), sb("astronauts on mars")])
    assert all(0.0 < s < 1.0 for s in scores)


@needs_iqa
def test_eval_intents_embedding_beats_chance(small_data):
    r = subprocess.run([sys.executable, "-m", "generators.cli", "eval", "intents", "--data", str(small_data),
                        "--scorer", "embedding", "--json"], capture_output=True, text=True, check=True)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["n"] == 116 and res["accuracy"] > 0.4  # 4 of the 120 have a single option (no choice); chance 0.25


@needs_iqa
def test_filter_command_gives_a_verdict_per_line(tmp_path, trained_critic):
    out, _ = trained_critic
    cands = [sb("nurses on long shifts"), sb("shoes for pregnant women"), sb("a b c d e f g h i j k l"),
             {"behavior": "co_purchase", "product_a_title": "Coleman Tent", "product_b_title": "Sleeping Bag",
              "relation": "used_for_event", "tail": "a camping trip"}]
    f = tmp_path / "c.jsonl"
    f.write_text("".join(json.dumps(c) + "\n" for c in cands))
    r = subprocess.run([sys.executable, "-m", "generators.cli", "filter", str(f), "--critic", str(out), "--json"],
                       capture_output=True, text=True, check=True)
    verdicts = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert len(verdicts) == 4
    assert verdicts[1]["stage"] == "restatement" and verdicts[2]["stage"] == "fluency"
    for v in (verdicts[0], verdicts[3]):
        assert "fluency" in v["scores"] and "restatement" in v["scores"] and "generic" in v["scores"]
        assert v["kept"] or v["stage"] in ("paraphrase", "critic", "fluency")
        if v["kept"] or v["stage"] == "critic":
            assert "critic" in v["scores"] and "paraphrase" in v["scores"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"behavior": "search_buy", "tail": "x"}\nnot json\n')
    r = subprocess.run([sys.executable, "-m", "generators.cli", "filter", str(bad)], capture_output=True, text=True)
    assert r.returncode != 0 and "nothing filtered" in r.stderr and "bad.jsonl:2" in r.stderr
