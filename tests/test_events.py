import json

import pytest

from processors.events import (EventError, co_pair_key, future_error, join_key, normalize_query, normalize_text,
                               parse_co_purchase, parse_event, parse_search_buy, search_pair_key, split_key)
from processors.features import pair_id, query_id


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


# --- normalisation at the contract: one thing typed several ways is one identity ---------------

CAFE = "café espresso maker"
CAFE_VARIANTS = [
    "cafe\u0301 espresso maker",               # decomposed accent (NFD)
    "caf\u200bé espresso maker",               # zero-width space
    "ｃａｆé ｅｓｐｒｅｓｓｏ ｍａｋｅｒ",        # full-width letters
    "café es\u00adpresso maker",               # soft hyphen
    "\ufeffCafé  Espresso\u2060 maker\u200d",  # BOM, word joiner, zero-width joiner, case, spaces
    "café\u00a0espresso\u3000maker",           # no-break and ideographic spaces
    "café\nespresso\tmaker\x00",               # control characters and a newline
]


@pytest.mark.parametrize("typed", CAFE_VARIANTS)
def test_text_typed_another_way_is_the_same_query(typed):
    ref = parse_search_buy(sb(query=CAFE))
    ev = parse_search_buy(sb(query=typed))
    assert ev.partition_key == ref.partition_key == CAFE
    assert ev.pair_key == ref.pair_key
    assert normalize_query(typed) == CAFE and query_id(typed) == query_id(CAFE)


def test_every_text_field_is_normalised_and_case_is_kept_for_display():
    ev = parse_search_buy(sb(query="Ｓｈｏｅｓ\u200b for  Women", product={
        "product_id": "Ｂ０７\u200bXYZ", "title": "Kids &amp;amp; Toddlers\r\nRain Boot", "product_type": "rain\u00adboot",
        "category": "Shoes\u2028"}))
    assert ev.query == "Shoes for Women" and ev.partition_key == "shoes for women"
    assert ev.product.product_id == "B07XYZ" and ev.product.title == "Kids & Toddlers Rain Boot"
    assert ev.product.product_type == "rainboot" and ev.product.category == "Shoes"
    assert normalize_query("STRASSE") == normalize_query("Straße")  # casefold, not lower


@pytest.mark.parametrize("field, value", [("query", "\u200b\u00ad \ufeff"), ("query", "\n\t"),
                                          ("event_id", "\u2060"), ("product", {"product_id": "P1", "title": "&#8203;"})])
def test_text_empty_after_normalisation_is_an_error(field, value):
    with pytest.raises(EventError, match="empty"):
        parse_search_buy(sb(**{field: value}))


def test_control_characters_in_ids_are_errors():
    with pytest.raises(EventError, match="control character U\\+000A in an id"):
        parse_search_buy(sb(product={"product_id": "P\n1", "title": "t"}))


def test_normalisation_is_idempotent_on_nasty_examples():
    for s in ["&amp;amp;lt;", "＆ａｍｐ；", "e\u200d\u0301", "&#xFF21;&#x301;", "ﬁ ﬂ ㎒", "İstanbul"]:
        once = normalize_text(s)
        assert normalize_text(once) == once
        assert normalize_query(normalize_query(s)) == normalize_query(s)


# --- composite keys -----------------------------------------------------------------------


def test_composite_keys_do_not_collide_and_round_trip():
    assert co_pair_key("a|b", "c") != co_pair_key("a", "b|c")
    assert search_pair_key("a|b", "c") != search_pair_key("a", "b|c")
    assert pair_id("a|b", "c") != pair_id("a", "b|c")
    assert co_pair_key("x\\", "|y") != co_pair_key("x\\|", "y")
    for a, b in [("a|b", "c"), ("a", "b|c"), ("x\\", "|y"), ("\\|\\", "||"), ("A", "B")]:
        assert split_key(co_pair_key(a, b)) == ["cp", *sorted((a, b))]
        assert split_key(pair_id(a, b)) == sorted((a, b))
        assert split_key(join_key(a, b, "")) == [a, b, ""]
    assert split_key(search_pair_key("Gifts | Dad", "P|1")) == ["sb", "gifts | dad", "P|1"]


def test_keys_of_ordinary_ids_stay_readable():
    assert co_pair_key("B", "A") == "cp|A|B" and pair_id("B", "A") == "A|B"
    assert search_pair_key("Gifts for  Dad", "P1") == "sb|gifts for dad|P1"
    assert co_pair_key("a|b", "c") == "cp|a\\|b|c"


def test_keys_are_built_from_normalised_ids():
    assert co_pair_key("Ｂ", "A\u200b") == co_pair_key("B", "A") and pair_id("Ｂ", "A\u200b") == "A|B"


def test_an_event_far_in_the_future_is_refused_with_the_reason():
    ev = parse_search_buy(sb(event_time="2099-01-01T00:00:00Z"))
    now = 1795000000.0  # 2026-11
    assert "event_time 2099-01-01T00:00:00+00:00 is in the future" in future_error(ev, now, 300)
    near = parse_search_buy(sb(event_time=now + 299))
    assert future_error(near, now, 300) is None and future_error(near, now, 0) is not None


@pytest.mark.parametrize("t, ok", [(1767225600, True), (1767225600000, True), ("1767225600", True),
                                   (32503680000, False), (-62135596800, False), ("32503680000", False)])
def test_an_epoch_that_is_neither_seconds_nor_milliseconds_is_an_error_not_1971(t, ok):
    """Found by a tester: pydantic reads numbers above 2e10 as milliseconds, so the year 3000 in
    seconds (3.25e10) became January 1971 without a word. 11-digit epochs now say why they fail."""
    if ok:
        assert parse_search_buy(sb(event_time=t)).ts == 1767225600
    else:
        with pytest.raises(EventError, match="neither seconds"):
            parse_search_buy(sb(event_time=t))


@pytest.mark.parametrize("t, why", [("1e9", "scientific notation"), ("1.7672E+09", "scientific notation"),
                                    ("NaN", "not a time"), ("inf", "not a time"), (float("nan"), "not a time")])
def test_an_epoch_in_scientific_notation_or_nan_says_so(t, why):
    """Found by a tester: these were dead-lettered as "input is too short". A spreadsheet writes big
    numbers as 1.7672E+09, rounded to a few digits: an error that says so, not a time minutes off."""
    with pytest.raises(EventError, match=why):
        parse_search_buy(sb(event_time=t))
