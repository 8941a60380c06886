import json

import pytest

from processors.events import (EventError, co_pair_key, parse_co_purchase, parse_event, parse_search_buy,
                               search_pair_key)


def sb(**kw):
    d = {"event_id": "e1", "event_time": "2026-01-01T00:00:00Z", "query": "Shoes for  Pregnant Women",
         "product": {"product_id": "P1", "title": "Slip-resistant shoe"}, "purchased": True}
    d.update(kw)
    return json.dumps(d).encode()


def test_search_buy_parses_and_keys_by_normalized_query():
    ev = parse_search_buy(sb())
    assert ev.partition_key == "shoes for pregnant women"
    assert ev.pair_key == search_pair_key("shoes for pregnant women", "P1")
    assert ev.schema_version == 1 and ev.purchased and not ev.clicked


def test_naive_time_is_utc():
    assert parse_search_buy(sb(event_time="2026-01-01T00:00:00")).ts == 1767225600.0


@pytest.mark.parametrize("raw, msg", [
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "expected a JSON object"),
    (sb(query=""), "query"),
    (sb(product={"product_id": "P1"}), "product.title"),
    (sb(purchased="maybe"), "purchased"),
    (sb(surprise=1), "surprise"),
    (sb(schema_version=2), "schema_version"),
    (sb(type="co_purchase"), "type: Input should be 'search_buy'"),
    (sb(event_time="yesterday"), "event_time"),
])
def test_invalid_search_buy_says_why(raw, msg):
    with pytest.raises(EventError, match=msg):
        parse_search_buy(raw)


def test_co_purchase_pair_key_is_order_free_and_rejects_self_pairs():
    base = {"event_id": "c1", "event_time": "2026-01-01T00:00:00Z"}
    a, b = {"product_id": "B", "title": "b"}, {"product_id": "A", "title": "a"}
    ev = parse_co_purchase(json.dumps({**base, "product_a": a, "product_b": b}))
    assert ev.pair_key == co_pair_key("A", "B") == "cp|A|B"
    with pytest.raises(EventError, match="same product"):
        parse_co_purchase(json.dumps({**base, "product_a": a, "product_b": a}))


def test_parse_event_dispatches_on_type():
    d = json.loads(sb())
    assert parse_event({**d, "type": "search_buy"}).type == "search_buy"
    with pytest.raises(EventError):
        parse_event({**d, "type": "click"})
