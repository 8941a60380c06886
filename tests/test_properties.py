"""Generated garbage against the event contract and the replay reader (hypothesis).

Specifications: the decoders raise EventError and nothing else, whatever the bytes; an accepted
event is in canonical form (serialising and parsing it again changes nothing, its keys encode);
normalisation is idempotent and makes NFC/NFD, zero-width and full-width spellings one text; the
reader turns any CSV/JSONL file into events or rows with a reason naming their line, never an
exception.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from processors.events import (EventError, normalize_id, normalize_query, normalize_text, parse_co_purchase,
                               parse_event, parse_search_buy, split_key, to_json)
from processors.sources import Row, read_rows, row_to_event

FAST = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FEW = settings(max_examples=60, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Text from all of Unicode, weighted towards what breaks identity: invisibles, combining marks,
# full-width forms, entities, controls, separators.
NASTY = st.sampled_from(["\u200b", "\u200c", "\u200d", "\u2060", "\u00ad", "\ufeff", "\u0301", "\u0308", "\x00", "\n",
                         "\r", "\t", "\u2028", "\u00a0", "\u3000", "&amp;", "&lt;", "&#8203;", "&", ";", "|", "\\",
                         "ｅ", "Ａ", "ﬁ", "ß", "İ", "é", "e"])
TEXT = st.lists(st.one_of(st.text(max_size=6), NASTY), max_size=8).map("".join)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                    max_leaves=8)


# Text with at least one visible letter, around nasty characters: valid, but rarely tidy. Invalid
# values come from `mangled`, which deletes fields or puts random JSON (TEXT included) in them.
WORDY = st.tuples(TEXT, st.text(st.characters(categories=("L", "N")), min_size=1, max_size=4), TEXT).map("".join)
ID_TEXT = WORDY.map(lambda s: "".join(c for c in s if unicodedata.category(c) not in ("Cc", "Zl", "Zp")))  # ids refuse these


def product():
    return st.fixed_dictionaries({"product_id": ID_TEXT, "title": WORDY},
                                 optional={"product_type": WORDY, "category": WORDY})


TIMES = st.one_of(st.integers(0, 4 * 10**9), st.datetimes().map(lambda d: d.isoformat()),
                  st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()))
SEARCH_BUY = st.fixed_dictionaries(
    {"type": st.just("search_buy"), "event_id": ID_TEXT, "event_time": TIMES, "query": WORDY, "product": product()},
    optional={"session_id": ID_TEXT, "clicked": st.booleans(), "purchased": st.booleans(), "schema_version": st.just(1)})
CO_PURCHASE = st.fixed_dictionaries(
    {"type": st.just("co_purchase"), "event_id": ID_TEXT, "event_time": TIMES, "product_a": product(),
     "product_b": product()}, optional={"session_id": ID_TEXT})


@st.composite
def mangled(draw, events=st.one_of(SEARCH_BUY, CO_PURCHASE)):
    """An event with up to two fields (nested ones too) deleted or replaced by random JSON values."""
    ev = draw(events)
    paths = [(k,) for k in ev] + [(k, f) for k, v in ev.items() if isinstance(v, dict) for f in v]
    n = draw(st.sampled_from([0, 0, 1, 2]))
    for path in draw(st.lists(st.sampled_from(sorted(paths)), min_size=n, max_size=n, unique=True)):
        parent = ev if len(path) == 1 else ev.get(path[0])
        if not isinstance(parent, dict) or path[-1] not in parent:
            continue
        if draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(JSON)
    return ev


def _accepted_is_canonical(ev) -> None:
    again = parse_event(json.loads(to_json(ev)))
    assert again == ev, "an accepted event must already be in canonical form"
    ev.partition_key.encode()
    ev.pair_key.encode()


@FAST
@given(st.binary(max_size=200))
def test_decoders_raise_only_event_error_on_random_bytes(raw):
    for parse in (parse_search_buy, parse_co_purchase):
        try:
            _accepted_is_canonical(parse(raw))
        except EventError:
            pass


@FAST
@given(JSON)
def test_decoders_raise_only_event_error_on_random_json(value):
    raw = json.dumps(value).encode()
    for parse in (parse_search_buy, parse_co_purchase):
        try:
            _accepted_is_canonical(parse(raw))
        except EventError:
            pass
    try:
        parse_event(value)
    except EventError:
        pass


@FAST
@given(mangled())
def test_events_with_random_text_and_missing_fields_are_accepted_canonical_or_refused(ev):
    raw = json.dumps(ev).encode()
    parse = parse_search_buy if ev.get("type") == "search_buy" else parse_co_purchase
    for attempt in (lambda: parse(raw), lambda: parse_event(ev)):
        try:
            _accepted_is_canonical(attempt())
        except EventError as e:
            assert str(e)


@FAST
@given(TEXT)
def test_normalisation_is_idempotent(s):
    t = normalize_text(s)
    assert normalize_text(t) == t
    assert t == t.strip() and "  " not in t
    assert not [c for c in t if c != " " and unicodedata.category(c) in ("Cf", "Cc", "Zs", "Zl", "Zp")]
    q = normalize_query(s)
    assert normalize_query(q) == q == normalize_query(t)
    try:
        i = normalize_id(s)
    except ValueError as e:
        assert "control character" in str(e)
    else:
        assert normalize_id(i) == i


_FULL_WIDTH = {c: chr(ord(c) - 0x21 + 0xFF01) for c in map(chr, range(0x21, 0x7F))}
_ZERO_WIDTH = st.sampled_from(["\u200b", "\u200c", "\u200d", "\u2060", "\u00ad", "\ufeff"])


@FAST
@given(st.text(st.characters(blacklist_characters="&", blacklist_categories=("Cs",)), max_size=20), st.data())
def test_nfc_nfd_zero_width_and_full_width_spellings_are_one_text(s, data):
    want = normalize_text(s)
    assert normalize_text(unicodedata.normalize("NFC", s)) == want
    assert normalize_text(unicodedata.normalize("NFD", s)) == want
    assert normalize_text("".join(_FULL_WIDTH.get(c, c) for c in s)) == want
    cuts = sorted(data.draw(st.lists(st.integers(0, len(s)), max_size=4)))
    spaced, last = [], 0
    for i in cuts:
        spaced += [s[last:i], data.draw(_ZERO_WIDTH)]
        last = i
    assert normalize_text("".join(spaced) + s[last:]) == want
    assert normalize_query(unicodedata.normalize("NFD", s).upper()) == normalize_query(s.upper())


@FAST
@given(st.lists(TEXT, min_size=1, max_size=4))
def test_composite_keys_round_trip(parts):
    from processors.events import join_key

    assert split_key(join_key(*parts)) == parts


# --- the replay reader --------------------------------------------------------------------

COLUMNS = ["event_id", "event_time", "query", "product_id", "title", "product_type", "clicked", "purchased",
           "session_id", "product_a_id", "surprise", ""]
CELL = st.one_of(TEXT, st.sampled_from(["", "2026-01-01T00:00:00Z", "1767225600", "true", "0", "P1", "12.5", "2099-01-01"]))
ENCODINGS = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "cp1252"])


def _check_rows(path) -> None:
    for row in read_rows(path):
        assert isinstance(row, Row) and row.where and row.number >= 1
        try:
            ev = row_to_event(row)
        except EventError as e:
            assert str(e).startswith(row.where + ":"), f"the reason must name the place: {e}"
        else:
            _accepted_is_canonical(ev)


@FEW
@given(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=8, unique=True),
       st.lists(st.lists(CELL, max_size=9), max_size=6), st.sampled_from([",", ";", "\t", "|"]), ENCODINGS,
       st.sampled_from(["\n", "\r\n"]))
def test_random_csv_files_give_events_or_reasons_never_exceptions(tmp_path_factory, header, rows, sep, encoding,
                                                                  newline):
    path = tmp_path_factory.mktemp("csv") / "events.csv"
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=sep, lineterminator=newline)
    w.writerow(header)
    w.writerows(rows)
    path.write_bytes(buf.getvalue().encode(encoding, "replace"))
    from processors.sources import SourceError

    try:
        _check_rows(path)
    except SourceError as e:  # only the header may make a file unreadable
        assert "header" in str(e) or "binary" in str(e), e


@FEW
@given(st.lists(st.one_of(mangled().map(json.dumps), JSON.map(json.dumps), TEXT, st.binary(max_size=30)),
                max_size=6), ENCODINGS)
def test_random_jsonl_files_give_events_or_reasons_never_exceptions(tmp_path_factory, lines, encoding):
    path = tmp_path_factory.mktemp("jsonl") / "events.jsonl"
    body = b"\n".join(l if isinstance(l, bytes) else l.replace("\n", " ").encode(encoding, "replace") for l in lines)
    path.write_bytes(body)
    from processors.sources import SourceError

    try:
        _check_rows(path)
    except SourceError as e:  # a JSON array that is not one, or binary data (zero bytes)
        assert "binary" in str(e) or "JSON array" in str(e) or "not" in str(e), e


SB_COLUMNS = ["event_id", "event_time", "query", "product_id", "title", "product_type", "clicked", "session_id"]
SB_ROW = st.fixed_dictionaries({
    "event_id": ID_TEXT, "event_time": TIMES, "query": st.one_of(WORDY, TEXT), "product_id": ID_TEXT,
    "title": st.one_of(WORDY, TEXT), "product_type": st.one_of(WORDY, st.just(""), TEXT),
    "clicked": st.sampled_from(["true", "0", "", "Yes", "perhaps"]), "session_id": st.one_of(st.just(""), ID_TEXT)})


@FEW
@given(st.permutations(SB_COLUMNS), st.lists(SB_ROW, min_size=1, max_size=5), st.sampled_from([",", ";", "\t", "|"]),
       st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]),
       st.sampled_from([("\r\n", csv.QUOTE_MINIMAL), ("\n", csv.QUOTE_ALL)]))
def test_csv_rows_read_back_normalised_or_name_their_line(tmp_path_factory, columns, rows, sep, encoding, style):
    """Files as a spreadsheet writes them (a cell with a line break is quoted) read back as written."""
    # A cell holding a line that is a whole row of the file's shape reads as a quote left open over
    # a row (processors.sources._rows_inside): documented as ambiguous, so not generated here.
    assume(not any(line.count(sep) >= len(columns) - 1 for r in rows for c in r.values() if isinstance(c, str)
                   for line in re.split(r"\r\n|\r|\n", c)[1:]))
    path = tmp_path_factory.mktemp("csv") / "events.csv"
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=sep, lineterminator=style[0], quoting=style[1])
    w.writerow(columns)
    w.writerows([[r[c] for c in columns] for r in rows])
    path.write_bytes(buf.getvalue().encode(encoding))
    read = list(read_rows(path))
    assert len(read) == len(rows)
    for row, wrote in zip(read, rows):
        try:
            ev = row_to_event(row)
        except EventError as e:
            assert str(e).startswith(row.where + ":"), e
            continue
        _accepted_is_canonical(ev)
        assert (ev.event_id, ev.query) == (normalize_id(wrote["event_id"]), normalize_text(wrote["query"]))
        assert ev.product.product_id == normalize_id(wrote["product_id"])
        assert ev.product.title == normalize_text(wrote["title"])
        assert ev.product.product_type == (normalize_text(wrote["product_type"]) or None)
        assert ev.session_id == (normalize_id(wrote["session_id"]) or None)
        assert ev.clicked == (wrote["clicked"] in ("true", "Yes"))

