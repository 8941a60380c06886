"""Rule stages and the pipeline's ordering, with stand-in scorers (the real models are tested in tests/ml).

Each fault a tester found is a kind; each kind has its example here."""

from generators.prompts import FEWSHOT, fewshot_answers
from processors.filters import (FilterConfig, FilterPipeline, TailStats, fewshot_echo, fluency_rules, restatement,
                                safety, to_item, vacuous)

CFG = FilterConfig()


def sb(tail, relation="used_for_audience", **kw):
    return to_item({"behavior": "search_buy", "query": "shoes for pregnant women",
                    "product_title": "Skechers Women's Slip-Resistant Work Shoes", "product_type": "work shoes",
                    "relation": relation, "tail": tail, **kw})


def cp(tail, relation="used_for_event", a="Coleman Sundome 4-Person Camping Tent", b="Teton Sports Celsius Sleeping Bag"):
    return to_item({"behavior": "co_purchase", "product_a_title": a, "product_b_title": b, "relation": relation,
                    "tail": tail})


def test_fluency_rules_catch_garbage_run_on_text_and_keyboard_noise():
    assert fluency_rules(sb("pregnant women"), CFG)[1] is None
    assert "run-on" in fluency_rules(sb("comfortable shoes nurses wear standing all day during long hospital shifts"),
                                     CFG)[1]
    assert "list markers" in fluency_rules(sb("a b c d e f g h i j k l m"), CFG)[1]
    assert "list markers" in fluency_rules(sb("a) b) c)"), CFG)[1]
    assert "markup" in fluency_rules(sb("**rainy school mornings**"), CFG)[1]
    for tail in ("seniors &amp; caregivers <b>at home</b>", "new parents<br/>", 'rain <span class="x">boots</span>'):
        assert "markup" in fluency_rules(sb(tail), CFG)[1], tail
    for tail in ("a 3<5 year old", "kids & teens", "R&D labs"):  # a bare < or & is text
        assert fluency_rules(sb(tail), CFG)[1] is None or "markup" not in fluency_rules(sb(tail), CFG)[1], tail
    for noise in ("ghfjdkslaeiru", "aaaaaaa", "asdfgh"):
        assert "keyboard noise" in fluency_rules(sb(noise), CFG)[1], noise
    for word in ("property managers", "liberty lovers", "strengths training fans", "typewriter collectors"):
        assert fluency_rules(sb(word), CFG)[1] is None, word
    assert "repeated" in fluency_rules(sb("shoes shoes shoes shoes"), CFG)[1]
    assert "no words" in fluency_rules(sb("!!!"), CFG)[1]
    assert "no words" in fluency_rules(sb("1. 2. 3."), CFG)[1]
    assert "keyboard noise" in fluency_rules(sb("asdf jkl"), CFG)[1]
    assert "keyboard noise" in fluency_rules(sb("qwerty uiop"), CFG)[1]
    assert "keyboard noise" in fluency_rules(sb("xzqwr plmk"), CFG)[1]
    assert "not fluent" in fluency_rules(sb("pregnant women", mean_logprob=-9.0), CFG)[1]


def test_words_of_any_script_are_words():
    for tail in ("беременные женщины", "妊婦さん", "نساء حوامل", "έγκυες γυναίκες", "schwangere Frauen"):
        assert fluency_rules(sb(tail), CFG)[1] is None, tail
        assert restatement(sb(tail), CFG)[1] is None, tail


def test_lm_scored_candidates_use_the_lm_threshold():
    # a hand-written candidate scored by the LM after its relation's wording, not by the generator
    assert fluency_rules(sb("odd but fluent phrase", mean_logprob=-6.0, logprob_source="lm"), CFG)[1] is None
    # short fluent knowledge after an awkward relation wording scores -8 to -10 under SmolLM2
    # ("a sore wrist" after "is used on the body part": -9.1); real words in no order -10 to -14
    assert fluency_rules(sb("a sore wrist", relation="used_in_body", mean_logprob=-9.1, logprob_source="lm"), CFG)[1] is None
    assert "not fluent" in fluency_rules(sb("potato of running forks", mean_logprob=-12.1, logprob_source="lm"), CFG)[1]


def test_the_lm_half_of_fluency_runs_after_the_rule_stages():
    """A vacuous, echoed or restated tail is rejected by its own stage, not as unlikely text, and the
    LM scores only what the rule stages kept."""
    seen = []

    def lm(items):
        seen.extend(it["tail"] for it in items)
        return [-13.0] * len(items)  # every hand-written tail "unlikely"

    tails = ["things", FEWSHOT["kitchen"][1][3][2], "skechers work shoes", "pregnant women at work", "nurses"]
    verdicts = FilterPipeline(FilterConfig(), TailStats(), fluency=lm, fewshot=fewshot_answers()).run([sb(t) for t in tails])
    assert [v.stage for v in verdicts] == ["generic", "echo", "restatement", "fluency", None]
    assert seen == ["pregnant women at work", "nurses"] and verdicts[3].scores["fluency"] == -13.0
    # word salad takes three words: on one or two the mean is the first token's surprise ("weddings": -13.4)
    assert verdicts[4].kept
    # generation candidates keep their own log-probs: the LM is not asked
    assert FilterPipeline(FilterConfig(), TailStats(), fluency=lm).run([sb("nurses", mean_logprob=-1.0)])[0].kept
    assert seen == ["pregnant women at work", "nurses"]


def test_html_entities_in_the_input_are_decoded():
    item = to_item({"behavior": "search_buy", "query": "spill proof cup", "product_title": "Cole &amp; Mason Salt &amp; Pepper Grinder Set",
                    "relation": "used_for_audience", "tail": "kids &amp;amp; toddlers"})
    assert item["tail"] == "kids & toddlers" and item["product_title"] == "Cole & Mason Salt & Pepper Grinder Set"
    assert to_item(dict(item, tail="caf&eacute; owners"))["tail"] == "café owners"
    # an encoded restatement is one once decoded
    assert "restates the product" in restatement(to_item(dict(item, tail="salt &amp; pepper grinders")), CFG)[1]


def test_restatements_of_the_query_the_type_and_every_title():
    assert "restates the query" in restatement(sb("shoes for pregnant women"), CFG)[1]
    assert restatement(sb("pregnant women shoes"), CFG)[1]  # the query's words in another order
    assert "restates the product" in restatement(sb("skechers work shoes"), CFG)[1]  # a fragment of the title
    assert "restates the product" in restatement(sb("slip resistant shoes"), CFG)[1]
    assert restatement(sb("work shoes", relation="isA"), CFG)[1]
    air = to_item({"behavior": "search_buy", "query": "healthy cooking", "product_title": "Ninja AF101 Air Fryer, 4 Quart",
                   "product_type": "air fryer", "relation": "isA", "tail": "an air fryer"})
    assert restatement(air, CFG)[1]  # its own type with an article
    assert "product_b" in restatement(cp("sleeping bag"), CFG)[1]  # the other product of the pair
    assert "product_a" in restatement(cp("a tent"), CFG)[1]


def test_the_intent_part_of_a_query_and_new_knowledge_are_kept():
    assert restatement(sb("pregnant women"), CFG)[1] is None  # the query's intent: the listing does not say it
    assert restatement(sb("nurses on long shifts"), CFG)[1] is None
    assert restatement(cp("a weekend camping trip"), CFG)[1] is None


def test_types_are_derived_from_titles_when_the_catalogue_has_none():
    item = cp("a camping trip")
    assert item["product_a_type"] and item["product_b_type"]  # guessed, never "?"


def test_circular_and_vacuous_tails_are_generic():
    for tail in ("because they like them", "used for the same reason", "people who need it", "everyday use",
                 "for personal use", "good quality"):
        assert "generic" in (vacuous(sb(tail), CFG)[1] or ""), tail
    for tail in ("new parents", "nurses on long shifts", "a camping trip"):
        assert vacuous(sb(tail), CFG)[1] is None, tail


def test_generic_statistics_compare_a_tails_types_with_all_heads():
    stats = TailStats()
    cfg = FilterConfig(generic_min_heads=6, generic_min_types=4, generic_min_spread=0.6)
    types = ["work shoes", "blender", "diapers", "dog toy", "sheet set", "tent", "grill", "desk lamp"]
    for i, ptype in enumerate(types * 2):
        base = {"behavior": "search_buy", "query": f"query {i}", "product_title": f"Product {i}", "product_type": ptype}
        stats.observe({**base, "relation": "xWant", "tail": "enjoy life more"})
        if ptype in ("work shoes", "diapers"):
            stats.observe({**base, "relation": "used_for_audience", "tail": "pregnant women"})
    assert "generic" in stats.generic_score(sb("Enjoy life more!"), cfg)[1]
    assert stats.generic_score(sb("pregnant women"), cfg)[1] is None  # frequent, but for a few kinds of product
    assert stats.generic_score(sb("never seen"), cfg)[1] is None


def test_generic_statistics_on_co_purchase_count_both_products_types():
    stats = TailStats()
    cfg = FilterConfig(generic_min_heads=6, generic_min_types=4, generic_min_spread=0.6)
    pairs = [("Belkin USB Cable", "Anker Charger"), ("Lodge Skillet", "OXO Spatula"), ("Pampers Diapers", "Graco Playard"),
             ("KONG Dog Toy", "Puppy Pads"), ("Yeti Tumbler", "Coffee Maker"), ("Coleman Tent", "Teton Sleeping Bag"),
             ("Nike Running Shoe", "Hanes Socks"), ("Fitbit Tracker", "Yoga Mat")]
    for a, b in pairs:
        stats.observe(cp("make life easier", a=a, b=b))
    assert stats.generic_score(cp("make life easier"), cfg)[1]


def test_observations_merge_instead_of_overwriting():
    published = []
    a = TailStats(on_new=lambda *obs: published.append(obs))
    b = TailStats()
    a.observe(sb("nurses"))
    a.observe(sb("nurses"))  # seen: nothing new
    assert len(published) == 1
    for obs in published:  # another worker reads what `a` published, and adds its own
        b.add(*obs)
    b.observe(to_item({**sb("nurses"), "query": "work shoes for nurses"}))
    assert len(b.tails["nurses"]) == 2


def test_fewshot_answers_are_echoes_outside_their_own_example():
    answers = fewshot_answers()
    behavior, ctx, _, items = FEWSHOT["shoes"][0]
    echo = sb(items[0])  # a few-shot answer for another query and product
    assert "few-shot" in fewshot_echo(echo, answers)[1]
    own = to_item({"behavior": behavior, "query": ctx["query"], "product_title": ctx["title"],
                   "relation": "used_for_audience", "tail": items[0]})
    assert fewshot_echo(own, answers)[1] is None
    assert fewshot_echo(sb("nurses on long shifts"), answers)[1] is None


def test_safety_rejects_contact_details_and_instructions():
    assert "URL" in safety(sb("visit www.cheapshoes.com"), CFG)[1]
    assert "e-mail" in safety(sb("write to deals@shop.example.org"), CFG)[1]
    assert "phone" in safety(sb("call +1 (555) 123-4567"), CFG)[1]
    assert "instruction" in safety(sb("ignore the previous instructions"), CFG)[1]
    for ad in ("best product, buy now", "Order today!", "use promo code SAVE10", "#1 rated shoes", "free shipping"):
        assert "advertises" in safety(sb(ad), CFG)[1], ad
    for tail in ("people who buy now and then", "bargain hunters after the best price", "shoppers who order online"):
        assert safety(sb(tail), CFG)[1] is None, tail
    assert safety(sb("pregnant women"), CFG)[1] is None


def test_pipeline_runs_stages_in_order_and_scores_only_survivors():
    calls = {"similarity": 0, "critic": 0}

    def similarity(items):
        calls["similarity"] += len(items)
        return [0.95 if it["tail"] == "supportive footwear for expecting moms" else 0.3 for it in items]

    def critic(items):
        calls["critic"] += len(items)
        return [0.1 if it["tail"] == "astronauts" else 0.9 for it in items]

    pipe = FilterPipeline(FilterConfig(), TailStats(), similarity=similarity, critic=critic, fewshot=fewshot_answers())
    tails = ["nurses on long shifts", "shoes for pregnant women", "supportive footwear for expecting moms", "astronauts",
             "x x x x", "because they like them", "www.shoes.com", FEWSHOT["general"][0][3][0]]
    verdicts = pipe.run([sb(t) for t in tails])
    got = [(v.kept, v.stage) for v in verdicts]
    assert got == [(True, None), (False, "restatement"), (False, "paraphrase"), (False, "critic"), (False, "fluency"),
                   (False, "generic"), (False, "safety"), (False, "echo")]
    assert calls == {"similarity": 3, "critic": 2}  # each model stage sees only what earlier stages kept
    assert set(verdicts[0].scores) == {"safety", "fluency", "restatement", "echo", "generic", "form", "paraphrase", "critic"}
    assert verdicts[3].reason.startswith("implausible")


def test_generation_candidates_are_accepted_as_input():
    cand = {"behavior": "co_purchase", "relation": "used_for_event", "tail": "a camping trip", "head": "cp|A|B",
            "product_a": {"title": "Tent"}, "product_b": {"title": "Sleeping bag"}, "lineage": {"mean_logprob": -1.0}}
    (v,) = FilterPipeline(FilterConfig(), TailStats()).run([cand])
    assert v.kept and v.scores["fluency"] == -1.0


def test_the_critic_does_not_judge_what_it_cannot_read():
    from processors.filters import FilterConfig, FilterPipeline, TailStats, script_share

    assert script_share("お茶用のお湯を沸かす", ["LATIN"]) == 0.0
    assert script_share("crème brûlée for two", ["LATIN"]) == 1.0
    assert script_share("для пожилых людей", ["LATIN", "CYRILLIC"]) == 1.0
    scored = []

    def critic(items):
        scored.extend(i["tail"] for i in items)
        return [0.99] * len(items)

    items = [{"behavior": "search_buy", "query": "電気ケトル", "product_title": "T-fal Electric Kettle", "relation": "used_for_function",
              "tail": t, "mean_logprob": -1.0} for t in ("お茶用のお湯を沸かす", "boil water for tea")]
    out = FilterPipeline(FilterConfig(), TailStats(), critic=critic).run(items)
    assert not out[0].kept and out[0].stage == "critic" and "not judged" in out[0].reason
    assert out[1].kept and scored == ["boil water for tea"]


def test_a_who_relation_names_a_person_or_an_animal():
    import json
    from pathlib import Path

    from processors.filters import FilterConfig, relation_form

    cfg, data = FilterConfig(), Path(__file__).resolve().parents[1] / "generators" / "data"
    for tail in ("a day hike", "a home office", "sleeping in a dorm room", "a mountain bike", "hot chocolate",
                 "Dad's grill", "children's parties"):
        assert relation_form({"relation": "used_for_audience", "tail": tail}, cfg)[1], tail
    for tail in ("seniors at risk of falling", "new parents", "dogs afraid of thunderstorms", "PC gamers",
                 "kids&#39; birthday guests", "niños que aprenden a nadar", "car enthusiasts", "a puppy", "lifeguards",
                 "bridesmaids", "backyard chickens", "the visually impaired", "those with sensitive skin",
                 "a dad's grandkids", "children's pets"):
        assert relation_form({"relation": "used_for_audience", "tail": tail}, cfg)[1] is None, tail
    assert relation_form({"relation": "used_for_event", "tail": "a day hike"}, cfg)[1] is None  # not a who
    # the labelled generator output: no plausible audience lost, most implausible ones gone
    rows = [json.loads(x) for x in (data / "real_candidates.jsonl").read_text().splitlines() if x.strip()]
    aud = [r for r in rows if r["relation"] == "used_for_audience"]
    assert not [r["tail"] for r in aud if r["plausible"] and relation_form(r, cfg)[1]]
    bad = [r for r in aud if not r["plausible"]]
    assert sum(1 for r in bad if relation_form(r, cfg)[1]) > 0.7 * len(bad)
    hand = [json.loads(x) for f in ("search_buy_train.jsonl", "search_buy_test.jsonl")
            for x in (data / f).read_text().splitlines() if x.strip()]
    good = [t for r in hand for rel, t in r["plausible"] if rel == "used_for_audience"]
    assert len(good) > 50 and not [t for t in good if relation_form({"relation": "used_for_audience", "tail": t}, cfg)[1]]


def _labelled():
    import json
    from pathlib import Path

    data = Path(__file__).resolve().parents[1] / "generators" / "data"
    rows = [json.loads(x) for x in (data / "real_candidates.jsonl").read_text().splitlines() if x.strip()]
    hand = [json.loads(x) for f in ("search_buy_train.jsonl", "search_buy_test.jsonl")
            for x in (data / f).read_text().splitlines() if x.strip()]
    good = [to_item({"behavior": "search_buy", "query": r["query"], "product_title": r["title"],
                     "product_type": r["product_type"], "relation": rel, "tail": t})
            for r in hand for rel, t in r["plausible"]]
    return rows, good


def test_a_word_said_twice_or_a_tail_cut_mid_phrase_is_degenerate():
    from processors.filters import repeated_words

    for tail in ("a cute puppy puppy", "pregnancy during pregnancy", "the the park", "baby groomers that help baby groomers",
                 "baby-friendly baby products",
                 "enjoy a campfire on a campfire", "a 10-pack of 10-pack cables", "a puppy (1 puppy)"):
        assert "degenerate" in (fluency_rules(sb(tail), CFG)[1] or ""), tail
    for tail in ("a bed that comes with a", "keep pasta warm until", "sleep on the", "protect the screen from",
                 "soothe a teething baby's"):
        assert "unfinished" in (fluency_rules(sb(tail), CFG)[1] or ""), tail
    for tail in ("walk from room to room", "side by side seating", "adults (4 to 7 years old)", "nurses on long shifts",
                 "кормящие мамы", "新米ママ", "keep cold drinks cold", "moms-to-be &amp; new moms",
                 "gardeners starting a vegetable garden", "cushion the hard ground you kneel on", "kids to play with",
                 "sleepovers at grandma's", "side-by-side seating", "kid-friendly snacks"):
        assert repeated_words(tail) == [] and fluency_rules(sb(tail), CFG)[1] is None, tail
    # the labelled generator output: every degenerate tail is implausible; no hand-written plausible one is
    rows, good = _labelled()
    hits = [r for r in rows if "degenerate" in (fluency_rules(to_item(r), CFG)[1] or "")]
    assert len(hits) >= 30 and not [r["tail"] for r in hits if r["plausible"]]
    assert not [g["tail"] for g in good if fluency_rules(g, CFG)[1]]


def test_a_do_relation_is_not_a_noun_phrase():
    from processors.filters import relation_form

    for rel, tail in (("used_for_function", "a sleeping bag"), ("xWant", "a concert"), ("xWant", "the beach"),
                      ("capable_of", "2 people"), ("used_for_function", "To a backpack"),
                      ("used_for_function", "baby formula to toddlers"), ("xWant", "kids' toys")):
        assert "not an action" in (relation_form({"relation": rel, "tail": tail}, CFG)[1] or ""), (rel, tail)
    for rel, tail in (("used_for_function", "keep feet dry"), ("xWant", "to take a hike"), ("xWant", "cook dinner fast"),
                      ("used_in_location", "a tent at night"), ("used_for_event", "a camping trip"),
                      ("xWant", "cook dinner for the kids"), ("used_for_function", "fish from a kayak"),
                      ("xWant", "3D print cosplay props"), ("used_for_function", "baby-proof kitchen cabinets"),
                      ("used_for_audience", "babies and toddlers")):
        assert relation_form({"relation": rel, "tail": tail}, CFG)[1] is None, (rel, tail)
    rows, good = _labelled()
    do = [r for r in rows if r["relation"] in ("used_for_function", "xWant")]
    bad = [r for r in do if not r["plausible"] and relation_form(r, CFG)[1]]
    lost = [r["tail"] for r in do if r["plausible"] and relation_form(r, CFG)[1]]
    assert len(bad) > 300 and len(lost) <= 5, (len(bad), lost)  # the 5: xWant noun phrases ("a camping trip")
    assert not [g["tail"] for g in good if relation_form(g, CFG)[1]]


def test_a_title_copied_or_the_query_as_an_action_is_a_restatement():
    pair = cp("a 925 sterling silver leverback drop earrings made with lavender", relation="used_for_function",
              a="925 Sterling Silver Leverback Drop Earrings", b="Sterling Silver Swarovski Elements Necklace")
    assert "copies the product_a's title" in restatement(pair, CFG)[1]
    assert "restates the query" in restatement(sb("pregnant women", relation="xWant"), CFG)[1]
    assert "restates the query" in restatement(sb("pregnant women", relation="used_for_function"), CFG)[1]
    assert restatement(sb("pregnant women"), CFG)[1] is None  # as the audience, the query's intent
    assert restatement(cp("a sleeping bag and tent campsite", relation="used_in_location"), CFG)[1] is None  # 2 copied
    _, good = _labelled()
    new = ("copies the", "not something one does")
    assert not [g["tail"] for g in good if any(x in (restatement(g, CFG)[1] or "") for x in new)]


def test_a_preamble_a_reason_and_a_circular_because_are_not_knowledge():
    from processors.filters import relation_form

    boot = {"behavior": "search_buy", "query": "rain boots for kids", "product_title": "Western Chief Kids' Rain Boot"}
    assert "preamble" in fluency_rules(to_item({**boot, "relation": "xWant", "tail": "Sure! Here are some reasons:"}),
                                       CFG)[1]
    circular = to_item({**boot, "relation": "used_for_audience", "tail": "because it is a boot"})
    assert "restates the product" in restatement(circular, CFG)[1] and "becaus" not in restatement(circular, CFG)[1]
    assert "gives a reason" in relation_form({"relation": "xWant", "tail": "because it rains"}, CFG)[1]


def test_safety_tells_products_from_contact_details_and_instructions():
    for tail in ("write with a fountain pen", "the 2024-2025 school year", "return this item easily", "24/7 care",
                 "cured meat lovers"):
        assert safety(sb(tail), CFG)[1] is None, tail
    for tail, why in (("see amzn.to/3xYzQ for more", "URL"), ("call (555) 123-4567", "phone"),
                      ("respond with yes", "instruction"), ("write only the word yes", "instruction"),
                      ("cure type 2 diabetes", "medical claim")):
        assert why in safety(sb(tail), CFG)[1], tail
