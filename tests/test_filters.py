"""Rule stages and the pipeline's ordering, with stand-in scorers (the real models are tested in tests/ml)."""

from processors.filters import FilterConfig, FilterPipeline, TailStats, fluency_rules, restatement

CFG = FilterConfig()


def sb(tail, relation="used_for_audience", **kw):
    return {"behavior": "search_buy", "query": "shoes for pregnant women", "product_title": "Skechers Slip-Resistant Work Shoes",
            "product_type": "work shoes", "relation": relation, "tail": tail, **kw}


def test_fluency_rules_catch_garbage_and_run_on_text():
    assert fluency_rules(sb("pregnant women"), CFG)[1] is None
    assert "run-on" in fluency_rules(sb("a b c d e f g h i j k l m"), CFG)[1]
    assert "repeated" in fluency_rules(sb("shoes shoes shoes shoes"), CFG)[1]
    assert "no words" in fluency_rules(sb("!!!"), CFG)[1]
    assert "not fluent" in fluency_rules(sb("pregnant women", mean_logprob=-9.0), CFG)[1]


def test_restatements_and_trivial_isa():
    assert "restates the query" in restatement(sb("shoes for pregnant women"), CFG)[1]
    assert "restates the product_title" in restatement(sb("skechers slip resistant work shoe"), CFG)[1]
    assert restatement(sb("pregnant women shoes"), CFG)[1]  # same content words as the query
    assert "restates the product_type" in restatement(sb("work shoes", relation="isA"), CFG)[1]
    assert restatement(sb("nurses on long shifts"), CFG)[1] is None
    assert restatement(sb("pregnant women"), CFG)[1] is None  # the query's intent, not a restatement


def test_generic_tails_found_from_running_statistics():
    stats = TailStats({})
    cfg = FilterConfig(generic_min_heads=5, generic_min_entropy=0.7)
    cats = ["Shoes", "Kitchen", "Baby", "Pets", "Home", "Outdoors"]
    for i, cat in enumerate(cats * 2):
        stats.observe({"behavior": "search_buy", "query": f"q{i}", "product_title": f"t{i}", "category": cat,
                       "relation": "cause", "tail": "because they like them"})
        stats.observe({"behavior": "search_buy", "query": f"q{i}", "product_title": f"t{i}", "category": "Shoes",
                       "relation": "used_for_audience", "tail": "runners"})
    assert "generic" in stats.generic_score(sb("Because they like them!"), cfg)[1]
    assert stats.generic_score(sb("runners"), cfg)[1] is None  # frequent but within one category
    assert stats.generic_score(sb("never seen"), cfg)[1] is None


def test_pipeline_runs_stages_in_order_and_scores_only_survivors():
    calls = {"similarity": 0, "critic": 0}

    def similarity(items):
        calls["similarity"] += len(items)
        return [0.95 if it["tail"] == "work shoes for women" else 0.3 for it in items]

    def critic(items):
        calls["critic"] += len(items)
        return [0.1 if it["tail"] == "astronauts" else 0.9 for it in items]

    pipe = FilterPipeline(FilterConfig(), TailStats({}), similarity=similarity, critic=critic)
    tails = ["nurses on long shifts", "shoes for pregnant women", "work shoes for women", "astronauts", "x x x x"]
    verdicts = pipe.run([sb(t) for t in tails])
    got = [(v.kept, v.stage) for v in verdicts]
    assert got == [(True, None), (False, "restatement"), (False, "paraphrase"), (False, "critic"), (False, "fluency")]
    assert calls == {"similarity": 3, "critic": 2}  # each model stage sees only what earlier stages kept
    assert set(verdicts[0].scores) == {"fluency", "restatement", "generic", "paraphrase", "critic"}
    assert verdicts[3].reason.startswith("implausible")


def test_generation_candidates_are_accepted_as_input():
    cand = {"behavior": "co_purchase", "relation": "used_for_event", "tail": "a camping trip", "head": "cp|A|B",
            "product_a": {"title": "Tent"}, "product_b": {"title": "Sleeping bag"}, "lineage": {"mean_logprob": -1.0}}
    (v,) = FilterPipeline(FilterConfig(), TailStats({})).run([cand])
    assert v.kept and v.scores["fluency"] == -1.0
