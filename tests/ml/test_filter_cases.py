"""Hand-written filter cases through the real `intentflow filter --json` with the default set-up (no flags,
no INTENTFLOW_* settings): issue 11's "judges hand-written cases of every kind correctly".

tests/data/filter_cases.jsonl: one filter input per line (the `intentflow filter` format) plus
`expect` ("kept" | "dropped"), `kind` and, where a rule stage must drop it, `stage`. Kinds:

- rule kinds: keyboard_noise, bare_numbering (fluency), generic (generic), fewshot_echo (echo; the
  answers are generators/prompts.py FEWSHOT's, given for other products), injection (safety: URL,
  e-mail, phone, instruction, advertising), restatement (a title fragment, the own type with an
  article, the other product of a pair, the query, mostly a title's words), degenerate (fluency: a word said
  twice, a tail that stops mid-phrase), wrong_form (form: a noun phrase as a function or want, no
  person as an audience), non_ascii and html_entity (good tails that no
  rule stage may drop; one entity-encoded restatement that only decoding reveals). A good tail in a
  script the critic cannot read (Japanese, Russian: all-MiniLM-L6-v2 is English) is rejected by the
  critic stage as "not judged" (precision over recall), never by a rule stage as "no words";
- critic kinds: plausible_search_buy, plausible_co_purchase (kept), absurd_search_buy,
  absurd_co_purchase (dropped).

Its products are in none of generators/data (the critic's training and test data), streams/samples
or the few-shot examples: `test_the_cases_leak_nothing` checks it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "tests" / "data" / "filter_cases.jsonl"
RULE_STAGES = ("safety", "fluency", "restatement", "echo", "generic", "form")
CRITIC_KINDS = ("plausible_search_buy", "plausible_co_purchase", "absurd_search_buy", "absurd_co_purchase")
RULE_KINDS = ("keyboard_noise", "bare_numbering", "generic", "fewshot_echo", "injection", "restatement", "non_ascii",
              "html_entity", "degenerate", "wrong_form")
# Where the models are is not a setting of the filter: kept, so a relocated model cache still works.
KEEP_ENV = {"INTENTFLOW_ML_CACHE"}
TITLES = ("product_title", "product_a_title", "product_b_title")


def load_cases() -> list[dict]:
    return [json.loads(line) for line in CASES.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def judged() -> list[tuple[dict, dict]]:
    """(case, verdict) for every case, from one run of the CLI on the file itself (the extra keys
    expect/kind/stage travel along as the format allows)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTENTFLOW_") or k in KEEP_ENV}
    env.setdefault("HF_HUB_OFFLINE", "1")
    r = subprocess.run([sys.executable, "-m", "generators.cli", "filter", str(CASES), "--json"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    verdicts = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    cases = load_cases()
    assert len(verdicts) == len(cases), (len(verdicts), len(cases))
    return list(zip(cases, verdicts))


def right(case: dict, v: dict) -> bool:
    if (case["expect"] == "kept") != v["kept"]:
        return False
    return case["expect"] == "kept" or not case.get("stage") or v["stage"] == case["stage"]


def describe(case: dict, v: dict) -> str:
    ctx = case.get("query") or case.get("product_a_title")
    title = case.get("product_title") or case.get("product_b_title")
    got = "kept" if v["kept"] else f"dropped by {v['stage']} ({v['reason']})"
    want = case["expect"] + (f" by {case['stage']}" if case.get("stage") else "")
    return (f"[{case['kind']}] {case['relation']} {case['tail']!r} for {ctx!r} / {title!r}: want {want}, got {got}; "
            f"scores {v['scores']}")


def test_the_file_covers_every_kind():
    cases = load_cases()
    n = Counter(c["kind"] for c in cases)
    assert set(n) == set(CRITIC_KINDS) | set(RULE_KINDS), n
    assert n["plausible_search_buy"] >= 30 and n["absurd_search_buy"] >= 15, n
    assert n["plausible_co_purchase"] >= 10 and n["absurd_co_purchase"] >= 10, n
    assert all(n[k] >= 3 for k in RULE_KINDS), n
    for c in cases:
        assert c["expect"] in ("kept", "dropped") and c["behavior"] in ("search_buy", "co_purchase"), c
        assert c.get("stage") in (None, *RULE_STAGES) or c["kind"] == "non_ascii" and c["stage"] == "critic", c
        assert (c["expect"] == "kept") == c["kind"].startswith("plausible") or c["kind"] in RULE_KINDS, c
    assert {c["behavior"] for c in cases if c["kind"] in RULE_KINDS} == {"search_buy", "co_purchase"}
    # the tails the issue names, and few-shot answers that are the prompt's own
    from generators.prompts import fewshot_answers
    from generators.parsing import normalize

    tails = {normalize(c["tail"]) for c in cases}
    for t in ("asdfgh jkl", "because they like them", "used for the same reason", "things", "stuff people need",
              "best product buy now", "kids amp toddlers", "seniors at risk of falling", "new parents",
              "newborn babies"):
        assert t in tails, t
    echoes = [c for c in cases if c["kind"] == "fewshot_echo"]
    assert all(normalize(c["tail"]) in fewshot_answers() for c in echoes)


def test_the_cases_leak_nothing():
    """No product of the cases is in the critic's training or test data, the bundled samples or the
    few-shot examples (a brand and model name found there would be a product the critic has seen)."""
    from generators.prompts import fewshot_inputs

    seen = [p.read_text(encoding="utf-8").casefold() for p in
            [*(ROOT / "generators" / "data").glob("*.jsonl"), *(ROOT / "streams" / "samples").glob("*.jsonl")]]
    seen.append("\n".join(fewshot_inputs()).casefold())
    for c in load_cases():
        for k in TITLES:
            if c.get(k):
                name = " ".join(re.findall(r"[\w'&+-]+", c[k].casefold())[:3])  # brand and model: "hario v60 ceramic"
                assert not any(name in s for s in seen), (name, c[k])


def test_rule_stages_judge_their_kinds(judged):
    """Each rule kind is dropped by its own stage; a good tail of a rule kind (other scripts, HTML
    entities) passes every rule stage (what the critic makes of it is judged below)."""
    bad = []
    for case, v in judged:
        if case["kind"] not in RULE_KINDS:
            continue
        if case["expect"] == "dropped" and not right(case, v):
            bad.append(describe(case, v))
        if case["expect"] == "kept" and v["stage"] in RULE_STAGES:
            bad.append(describe(case, v))
    assert not bad, "rule stages misjudge:\n" + "\n".join(bad)


def test_every_kind_is_judged_right(judged):
    """The whole default path, per kind (printed with -s): plausible knowledge kept, absurd dropped,
    every rule kind right. A failure lists each wrong case with every stage's score."""
    per: dict[str, list[bool]] = defaultdict(list)
    bad, misses = [], []
    for case, v in judged:
        ok = right(case, v)
        per[case["kind"]].append(ok)
        if not ok and case.get("known_miss") and v["stage"] == "critic":
            misses.append(describe(case, v) + f" (known: {case['known_miss']})")
        elif not ok:
            bad.append(describe(case, v))
    table = "\n".join(f"{k:24s} {sum(oks):3d}/{len(oks):<3d} {sum(oks) / len(oks):.0%}" for k, oks in sorted(per.items()))
    total = [ok for oks in per.values() for ok in oks]
    table += f"\n{'all':24s} {sum(total):3d}/{len(total):<3d} {sum(total) / len(total):.0%}"
    print("\n" + table + ("\n\nknown misses:\n" + "\n".join(misses) if misses else ""))
    assert not bad, table + "\n\nwrong:\n" + "\n".join(bad)
    # a known miss is the critic's, named in the case with why; more than a few would be a regression
    assert len(misses) <= 2, "\n".join(misses)
