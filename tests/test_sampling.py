from processors import sampling
from processors.config import SamplingConfig
from processors.events import parse_co_purchase, parse_search_buy
import json

import pytest

CFG = SamplingConfig(min_events=3, min_purchases=1, min_purchase_rate=0.2, min_click_rate=0.3)


def sb_event(i, query="gifts for dad", pid="P1", ptype="multitool", purchased=False, clicked=False, t=0.0, eid=None):
    return parse_search_buy(json.dumps({
        "event_id": eid or f"e{i}", "event_time": 1767225600 + t + i, "query": query,
        "product": {"product_id": pid, "title": f"title {pid}", "product_type": ptype},
        "clicked": clicked, "purchased": purchased}))


class Run:
    """Feeds events to the sampler as one partition would, with increasing offsets."""

    def __init__(self, cfg=CFG):
        self.cfg, self.pairs, self.queries, self.seen, self.offset = cfg, {}, {}, {}, 0

    def sb(self, ev, offset=None):
        if offset is None:
            offset, self.offset = self.offset, self.offset + 1
        return sampling.sample_search_buy(ev, 0, offset, self.pairs, self.queries, self.seen, self.cfg)


def test_pair_emitted_once_when_rates_pass():
    r = Run()
    outs = [r.sb(sb_event(0, purchased=True)), r.sb(sb_event(1)), r.sb(sb_event(2, clicked=True)), r.sb(sb_event(3, purchased=True))]
    assert [o.outcome for o in outs] == ["few_events", "few_events", "emitted", "recently_emitted"]
    (emit,) = outs[2].emits
    assert emit.to == "request" and emit.value["pair_key"] == "sb|gifts for dad|P1"
    assert emit.value["signals"] == {"events": 3, "clicks": 2, "purchases": 1}


def test_low_purchase_and_click_rates_block():
    r = Run()
    for i in range(6):
        out = r.sb(sb_event(i, clicked=True))
    assert out.outcome == "few_purchases"
    r = Run(SamplingConfig(min_events=3, min_purchase_rate=0.5, min_click_rate=0.0))
    for i in range(4):
        out = r.sb(sb_event(i, purchased=i == 0))
    assert out.outcome == "low_purchase_rate"
    r = Run(SamplingConfig(min_events=2, min_purchase_rate=0.0, min_click_rate=0.9))
    for i in range(4):
        out = r.sb(sb_event(i, purchased=i == 0))
    assert out.outcome == "low_click_rate"


def test_duplicate_event_id_is_ignored_but_redelivery_is_recognised():
    r = Run()
    r.sb(sb_event(0, purchased=True))
    assert r.sb(sb_event(0, purchased=True)).outcome == "duplicate_event"   # same id, new message
    assert r.pairs["sb|gifts for dad|P1"]["n"] == 1
    assert r.sb(sb_event(0, purchased=True), offset=0).outcome == "redelivered"  # same message again
    assert r.pairs["sb|gifts for dad|P1"]["n"] == 1


def test_an_event_handed_over_after_a_newer_one_of_its_pair_is_counted_not_taken_for_a_redelivery():
    """Found by `bench faults` (1 co-purchase event of 151 neither counted nor remembered): an older
    offset of a pair that arrives after a newer one was taken for a redelivery by the pair's offset
    alone. Its id is not remembered: it was never counted."""
    r = Run()
    r.sb(sb_event(1, purchased=True), offset=7)
    late = r.sb(sb_event(0, purchased=True), offset=5)
    pair = r.pairs["sb|gifts for dad|P1"]
    assert late.outcome == "few_events" and pair["n"] == 2 and pair["off"] == 7 and r.seen["e0"][1] == 5
    assert r.sb(sb_event(0, purchased=True), offset=5).outcome == "redelivered"  # now it is one
    assert r.sb(sb_event(1, purchased=True), offset=7).outcome == "redelivered"
    assert r.pairs["sb|gifts for dad|P1"]["n"] == 2


def test_an_old_redelivery_whose_id_expired_is_still_not_counted_twice():
    """Ids are forgotten after the dedup TTL (event time); a redelivered message older than that
    horizon is judged by the pair's offset alone, as before, in this process or after a restart."""
    now = 1767225600.0 + 10_000
    table = sampling.MemoryTable()
    seen = sampling.SeenIds(table, wall=lambda: now, ttl_s=3600)
    pairs, queries = {}, {}
    old, new = sb_event(0, purchased=True), sb_event(1, purchased=True, t=9000)
    for off, ev in ((0, old), (1, new)):
        seen.begin()
        sampling.sample_search_buy(ev, 0, off, pairs, queries, seen, CFG)
        seen.commit(ev.ts, 3600)
    assert "e0" not in seen and seen.horizon == new.ts - 3600  # expired with its block
    assert sampling.sample_search_buy(old, 0, 0, pairs, queries, seen, CFG).outcome == "redelivered"
    restarted = sampling.SeenIds(table, wall=lambda: now, ttl_s=3600)  # the table as recovered
    restarted.begin()
    assert restarted.horizon == new.ts - 3600
    assert sampling.sample_search_buy(old, 0, 0, pairs, queries, restarted, CFG).outcome == "redelivered"
    assert pairs["sb|gifts for dad|P1"]["n"] == 2
    assert sampling.SeenIds(table).horizon == float("inf")  # no TTL known: the pair's offset decides


def test_redelivery_of_the_emitting_message_resends_the_same_request():
    r = Run()
    for i in range(3):
        out = r.sb(sb_event(i, purchased=True))
    rid = out.emits[0].value["request_id"]
    again = r.sb(sb_event(2, purchased=True), offset=2)
    assert again.outcome == "redelivered" and again.emits[0].value["request_id"] == rid


def test_pair_ttl_allows_regeneration_later():
    r = Run(SamplingConfig(min_events=1, min_purchase_rate=0, min_click_rate=0, pair_ttl_s=100))
    first = r.sb(sb_event(0, purchased=True))
    assert r.sb(sb_event(1, purchased=True, t=50)).outcome == "recently_emitted"
    later = r.sb(sb_event(2, purchased=True, t=200))
    assert later.outcome == "emitted"
    assert later.emits[0].value["request_id"] != first.emits[0].value["request_id"]


def test_query_specificity_broad_vs_specific():
    cfg = SamplingConfig(specificity_min_purchases=4, specificity_broad_types=4)
    assert sampling.query_specificity({"n": 2, "t": {"a": 2}}, cfg) == 0.5  # not enough evidence
    assert sampling.query_specificity({"n": 8, "t": {"a": 8}}, cfg) == 1.0
    assert sampling.query_specificity({"n": 8, "t": {"a": 2, "b": 2, "c": 2, "d": 2}}, cfg) == 0.0
    mid = sampling.query_specificity({"n": 8, "t": {"a": 6, "b": 2}}, cfg)
    assert 0.5 < mid < 1


def test_broad_queries_get_higher_priority_and_too_specific_are_dropped():
    cfg = SamplingConfig(min_events=1, min_purchase_rate=0, min_click_rate=0, specificity_min_purchases=2,
                         specificity_broad_types=2, max_query_specificity=0.9)
    r = Run(cfg)
    r.sb(sb_event(0, query="iphone 13 case", pid="A", ptype="case", purchased=True))
    assert r.sb(sb_event(1, query="iphone 13 case", pid="B", ptype="case", purchased=True)).outcome == "too_specific"
    r.sb(sb_event(2, query="gifts", pid="C", ptype="tool", purchased=True))
    broad = r.sb(sb_event(3, query="gifts", pid="D", ptype="mug", purchased=True))
    assert broad.outcome == "emitted" and broad.emits[0].value["priority"] == 1.0


def _ticks():
    n = iter(range(10**6))
    return lambda: next(n)


def test_event_ids_are_stored_as_one_block_per_partition_and_batch():
    table = sampling.MemoryTable()
    seen = sampling.SeenIds(table, clock=_ticks())
    seen.begin()
    seen["a"], seen["b"], seen["c"] = [0, 10, 100.0], [0, 11, 101.0], [1, 5, 102.0]
    assert seen.get("a") == [0, 10, 100.0] and "c" in seen and seen.get("z") is None
    seen.commit(now_ts=102.0, ttl_s=200)
    assert table == {"0:10:0": {"ids": {"a": [0, 10, 100.0], "b": [0, 11, 101.0]}}, "1:5:1": {"ids": {"c": [1, 5, 102.0]}}}


def test_event_id_blocks_expire_after_the_ttl_only():
    table = sampling.MemoryTable()
    seen = sampling.SeenIds(table, clock=_ticks())
    seen.begin()
    seen["a"], seen["b"] = [0, 1, 100.0], [0, 2, 500.0]  # one block, newest 500
    seen.commit(now_ts=500.0, ttl_s=200)
    seen.begin()
    seen["c"] = [0, 3, 650.0]
    seen.commit(now_ts=650.0, ttl_s=200)
    assert seen.get("a") and seen.get("b") and len(table) == 2  # "a" is old, but its block is not
    seen.begin()
    seen.commit(now_ts=701.0, ttl_s=200)
    assert seen.get("a") is None and seen.get("b") is None and seen.get("c") and list(table) == ["0:3:1"]
    seen.begin()
    seen["d"] = [0, 4, 900.0]
    seen.commit(now_ts=900.0, ttl_s=200)
    assert list(table) == ["0:4:2"] and [k for k in ("a", "b", "c", "d") if seen.get(k)] == ["d"]


def test_event_ids_are_read_back_after_a_restart_or_a_rebalance():
    table = sampling.MemoryTable()
    seen = sampling.SeenIds(table)
    seen.begin()
    seen["a"] = [0, 1, 100.0]
    seen.commit(now_ts=100.0, ttl_s=200)
    restarted = sampling.SeenIds(table)  # the table recovered from its changelog
    restarted.begin()
    assert restarted.get("a") == [0, 1, 100.0]
    table["1:7:99"] = {"ids": {"x": [1, 7, 120.0]}}  # partition 1 assigned: its blocks recovered
    table["2:1:5"] = {"ids": {"y": [2, 1, 130.0]}}  # partition 2: a standby copy of another worker's
    restarted.owned, restarted.stale = {0, 1}, True  # what the worker's assignment hook sets
    restarted.begin()
    assert restarted.get("x") == [1, 7, 120.0] and restarted.get("a") and restarted.get("y") is None
    restarted.owned, restarted.stale = {1}, True  # partition 0 revoked
    restarted.begin()
    assert restarted.get("a") is None and restarted.get("x")
    restarted.commit(now_ts=400.0, ttl_s=200)  # recovered blocks expire like any other; not the standby's
    assert {k.split(":")[0] for k in table} == {"0", "2"}  # partition 1's expired; the others are not ours
    assert restarted.get("x") is None


def test_a_replayed_batch_does_not_overwrite_the_first_blocks():
    """After a crash the same offsets are processed again; ids the pairs already counted are not
    remembered again, so the replay's block must not replace the earlier one."""
    table = sampling.MemoryTable()
    seen = sampling.SeenIds(table)
    seen.begin()
    seen["a"], seen["b"] = [0, 1, 100.0], [0, 2, 100.0]
    seen.commit(now_ts=100.0, ttl_s=200)
    again = sampling.SeenIds(table)
    again.begin()
    again["a"] = [0, 1, 100.0]
    again.commit(now_ts=100.0, ttl_s=200)
    assert again.get("b") and len(table) == 2


def test_sampler_drops_producer_duplicates_through_blocks():
    cfg = SamplingConfig(min_events=1, min_purchases=0, min_purchase_rate=0, min_click_rate=0)
    pairs, queries, seen = {}, {}, sampling.SeenIds(sampling.MemoryTable())
    seen.begin()
    ev = sb_event(0, query="gifts", pid="A", ptype="mug", purchased=True)
    assert sampling.sample_search_buy(ev, 0, 0, pairs, queries, seen, cfg).outcome == "emitted"
    seen.commit(ev.ts, cfg.event_id_ttl_s)
    seen.begin()
    assert sampling.sample_search_buy(ev, 0, 1, pairs, queries, seen, cfg).outcome == "duplicate_event"


def cp_event(i, a=("A", "case", "Phones"), b=("B", "charger", "Phones"), eid=None):
    return parse_co_purchase(json.dumps({
        "event_id": eid or f"c{i}", "event_time": 1767225600 + i,
        "product_a": {"product_id": a[0], "title": f"t{a[0]}", "product_type": a[1], "category": a[2]},
        "product_b": {"product_id": b[0], "title": f"t{b[0]}", "product_type": b[1], "category": b[2]}}))


def test_co_purchase_needs_repeat_and_related_types():
    cfg = SamplingConfig(min_co_purchases=2, min_type_pair_support=2)
    pairs, types, seen = {}, {}, {}
    run = lambda ev, off: sampling.sample_co_purchase(ev, 0, off, pairs, types, seen, cfg)
    assert run(cp_event(0), 0).outcome == "few_co_purchases"
    out = run(cp_event(1), 1)
    assert out.outcome == "emitted"
    assert [e.value["kind"] for e in out.emits] == ["observe", "observe", "check"]
    # different types and categories, linked by only one product pair: unrelated
    odd = dict(a=("X", "lipstick", "Beauty"), b=("Y", "tire", "Auto"))
    run(cp_event(2, **odd), 2)
    assert run(cp_event(3, **odd), 3).outcome == "unrelated_types"
    # a second product pair linking the same two types makes them related
    run(cp_event(4, a=("X2", "lipstick", "Beauty"), b=("Y2", "tire", "Auto")), 4)
    assert run(cp_event(5, **odd), 5).outcome == "emitted"


def test_product_degree_drops_noisy_products():
    cfg = SamplingConfig(max_product_types=2)
    products = {}
    for t in ["a", "b", "c", "c"]:
        sampling.product_degree_step({"kind": "observe", "product": "N", "other_type": t}, products, cfg)
    sampling.product_degree_step({"kind": "observe", "product": "Q", "other_type": "a"}, products, cfg)
    req = {"pair_key": "cp|N|Q"}
    assert sampling.product_degree_step({"kind": "check", "remaining": ["N", "Q"], "request": req}, products, cfg).outcome == "noisy_product"
    hop = sampling.product_degree_step({"kind": "check", "remaining": ["Q", "N"], "request": req}, products, cfg)
    assert hop.outcome == "checked" and hop.emits[0].key == "N"
    ok = sampling.product_degree_step({"kind": "check", "remaining": ["Q"], "request": req}, products, cfg)
    assert ok.outcome == "emitted" and ok.emits[0].to == "request" and ok.emits[0].key == "cp|N|Q"


# --- event time is bounded by the wall clock ------------------------------------------------


def test_one_far_future_event_does_not_expire_remembered_ids():
    now = 1795000000.0  # the wall clock (2026-11)
    table = sampling.MemoryTable()
    seen = sampling.SeenIds(table, clock=_ticks(), wall=lambda: now)
    seen.begin()
    seen["a"] = [0, 1, now - 10]
    seen.commit(now_ts=now - 10, ttl_s=3600)
    seen.begin()
    seen["z"] = [0, 2, 4070908800.0]  # 2099, from a producer's broken clock
    seen.commit(now_ts=4070908800.0, ttl_s=3600)
    assert seen.get("a") and len(table) == 2  # the watermark is min(event time, wall clock)
    seen.begin()
    seen.commit(now_ts=now + 3600, ttl_s=3600)  # when the wall clock really gets there, it expires
    later = sampling.SeenIds(table, clock=_ticks(), wall=lambda: now + 3600)
    later.begin()
    later.commit(now_ts=now + 3600, ttl_s=3600)
    assert later.get("a") is None and later.get("z")


def test_a_duplicate_resent_after_a_far_future_event_is_still_a_duplicate():
    cfg = SamplingConfig(min_events=2, min_purchases=0, min_purchase_rate=0, min_click_rate=0, event_id_ttl_s=3600)
    pairs, queries = {}, {}
    seen = sampling.SeenIds(sampling.MemoryTable(), wall=lambda: 1767225700.0)
    step = lambda ev, off: sampling.sample_search_buy(ev, 0, off, pairs, queries, seen, cfg)
    seen.begin()
    assert step(sb_event(0, query="gifts", pid="A"), 0).outcome == "few_events"
    seen.commit(1767225600.0, cfg.event_id_ttl_s)
    seen.begin()
    step(sb_event(1, query="other", pid="B", t=4070908800 - 1767225600), 1)  # dated 2099 (a skew allowing it)
    seen.commit(4070908800.0, cfg.event_id_ttl_s)
    seen.begin()
    assert step(sb_event(0, query="gifts", pid="A"), 2).outcome == "duplicate_event"  # resent: not counted again


def test_product_types_containing_the_separator_do_not_share_statistics():
    assert sampling._type_pair_key(0, "a|b", "c") != sampling._type_pair_key(0, "a", "b|c")
    assert sampling._type_pair_key(0, "mug", "tea") == "0|mug|tea"


# --- partition ownership (streams.producer: the murmur2 partitioner every client agrees on) ---


def test_owner_partition_is_the_murmur2_partition_faust_and_librdkafka_compute():
    from aiokafka.partitioner import DefaultPartitioner

    from streams.producer import owner_partition

    for n in (1, 3, 4, 12):
        for key in (b"", b"gifts for dad", b"cp|A|B", "café".encode(), bytes(range(256))):
            assert owner_partition(key, n) == DefaultPartitioner()(key, list(range(n)), list(range(n)))
    with pytest.raises(ValueError):
        owner_partition(b"k", 0)


def test_a_message_is_routed_again_when_its_key_or_its_partition_is_not_its_owners():
    from streams.producer import misrouted, owner_partition

    key, n = b"gifts for dad", 4
    home = owner_partition(key, n)
    assert not misrouted(key, home, key, n)
    assert misrouted(None, home, key, n) and misrouted(b"Gifts For Dad", home, key, n)
    assert misrouted(key, (home + 1) % n, key, n)  # right key, another partitioner (e.g. CRC32)
