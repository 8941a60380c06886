import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from processors.events import EventError
from processors.product_type import guess_type
from processors.samples import search_buy_events
from processors.sources import SourceError, intentionqa_events, read_rows, row_to_event

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "intentionqa" / "task1.jsonl"


def test_flat_csv_rows_become_events(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text("event_id,event_time,query,product_id,title,product_type,clicked,purchased\n"
                 "e1,2026-01-01T00:00:00Z,dog bed,P1,Orthopedic Dog Bed,dog bed,true,0\n")
    (row,) = read_rows(p)
    ev = row_to_event(row)
    assert ev.type == "search_buy" and ev.clicked and not ev.purchased and ev.product.product_type == "dog bed"


def test_parquet_flat_co_purchase(tmp_path):
    p = tmp_path / "e.parquet"
    pq.write_table(pa.table({"event_id": ["c1"], "event_time": ["2026-01-01T00:00:00Z"],
                             "product_a_id": ["A"], "product_a_title": ["Tent"],
                             "product_b_id": ["B"], "product_b_title": ["Sleeping bag"]}), p)
    ev = row_to_event(next(read_rows(p)))
    assert ev.type == "co_purchase" and ev.pair_key == "cp|A|B"


def test_bad_rows_raise_clear_errors(tmp_path):
    p = tmp_path / "e.jsonl"
    p.write_text('{"event_id": "x"\n')
    with pytest.raises(EventError, match="line 1: not JSON"):
        row_to_event(next(read_rows(p)))
    with pytest.raises(EventError, match="clicked: not a boolean"):
        row_to_event({"event_id": "e", "event_time": "2026-01-01", "query": "q", "product_id": "p", "title": "t", "clicked": "perhaps"})


def test_guess_type():
    assert guess_type("Belkin USB A/A Extension Cable, USB Type-A Female") == "cable"
    assert guess_type("Crocs Women's Crocband Avengers Mule") == "mule"
    assert guess_type("12") is None


@pytest.mark.skipif(not SHARED.exists(), reason="shared data not present")
def test_intentionqa_conversion_yields_valid_distinct_pairs():
    evs = [row_to_event(r) for r in intentionqa_events(SHARED, events_per_pair=2, limit=50)]
    assert len(evs) == 100
    assert len({e.pair_key for e in evs}) == 50 and len({e.event_id for e in evs}) == 100


def test_search_buy_sample_is_deterministic_and_valid():
    a, b = list(search_buy_events(300, seed=3)), list(search_buy_events(300, seed=3))
    assert a == b
    evs = [row_to_event(r) for r in a]
    assert sum(e.purchased for e in evs) > 20 and len({e.query for e in evs}) > 10


# --- files from ordinary tools --------------------------------------------------------------

HEADER = "event_id,event_time,query,product_id,title,product_type,clicked,purchased"
ROWS = ["e1,2026-01-01T00:00:00Z,dog bed,P1,Orthopedic Dog Bed,dog bed,true,0",
        "e2,2026-01-01T00:00:01Z,dog bed,P2,Cooling Mat,,false,1"]


def _events(path):
    out = []
    for row in read_rows(path):
        try:
            out.append(row_to_event(row))
        except EventError as e:
            out.append(str(e))
    return out


def _same_as_plain_csv(tmp_path, events):
    plain = tmp_path / "plain.csv"
    plain.write_text("\n".join([HEADER, *ROWS]) + "\n")
    assert events == _events(plain) and all(not isinstance(e, str) for e in events)


def test_csv_with_a_byte_order_mark_and_crlf_as_a_spreadsheet_saves_it(tmp_path):
    p = tmp_path / "excel.csv"
    p.write_bytes(("\ufeff" + "\r\n".join([HEADER, *ROWS]) + "\r\n").encode())
    _same_as_plain_csv(tmp_path, _events(p))


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_csv_delimiter_is_detected_on_the_header(tmp_path, sep):
    p = tmp_path / "semi.csv"
    p.write_text("\n".join(line.replace(",", sep) for line in [HEADER, *ROWS]) + "\n")
    _same_as_plain_csv(tmp_path, _events(p))


def test_csv_in_utf16_with_a_byte_order_mark(tmp_path):
    p = tmp_path / "u16.csv"
    p.write_bytes("\r\n".join([HEADER, *ROWS]).encode("utf-16"))
    _same_as_plain_csv(tmp_path, _events(p))


def _sb_line(i):
    return json.dumps({"event_id": f"e{i}", "event_time": "2026-01-01T00:00:00Z", "query": "q",
                       "product": {"product_id": "P", "title": "t"}})


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-32"])
def test_jsonl_with_a_bom_or_in_utf16_keeps_every_row(tmp_path, encoding):
    p = tmp_path / "e.jsonl"
    p.write_bytes(("\n".join(_sb_line(i) for i in range(3)) + "\n").encode(encoding))
    assert [e.event_id for e in _events(p)] == ["e0", "e1", "e2"]


def test_parquet_from_pandas_with_integer_ids_reads_like_the_csv(tmp_path):
    import pandas as pd

    df = pd.DataFrame({"event_id": ["e1", "e2"], "event_time": ["2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z"],
                       "query": ["dog bed", "dog bed"], "product_id": [101, 102], "title": ["Orthopedic Dog Bed", "Mat"],
                       "product_type": ["dog bed", None], "clicked": [True, False], "purchased": [False, True]},
                      index=[7, 9])  # a filtered frame: pandas stores the index as a column
    df.to_parquet(tmp_path / "e.parquet")
    df.to_csv(tmp_path / "e.csv", index=False)
    pq_events, csv_events = _events(tmp_path / "e.parquet"), _events(tmp_path / "e.csv")
    assert pq_events == csv_events and [e.product.product_id for e in pq_events] == ["101", "102"]
    df["product_id"] = [101.0, 12.5]  # a float column: 101.0 is the id "101"; 12.5 is not an id
    df.to_parquet(tmp_path / "f.parquet")
    good, bad = _events(tmp_path / "f.parquet")
    assert good.product.product_id == "101"
    assert bad.startswith("row 2: column 'product_id': the number 12.5 is not an id")


def test_parquet_with_a_named_pandas_index_keeps_every_row_and_an_event_id_index(tmp_path):
    """Found by a tester: df.to_parquet() of a frame with a named index stores it as a column, and
    every row was rejected for an unknown column. A named index is the frame's row labels unless it
    is an event field (df.set_index("event_id"))."""
    import pandas as pd

    df = pd.DataFrame({"event_id": ["e1", "e2"], "event_time": ["2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z"],
                       "query": ["dog bed", "dog bed"], "product_id": ["101", "102"], "title": ["Dog Bed", "Mat"],
                       "purchased": [False, True]})
    df.rename_axis("myidx").to_parquet(tmp_path / "named.parquet")
    df.set_index("event_id").to_parquet(tmp_path / "by_id.parquet")
    named, by_id = _events(tmp_path / "named.parquet"), _events(tmp_path / "by_id.parquet")
    assert [e.event_id for e in named] == [e.event_id for e in by_id] == ["e1", "e2"]


def test_header_names_as_a_spreadsheet_writes_them_are_the_fields(tmp_path):
    (tmp_path / "e.csv").write_text(" Event_ID ;Event Time;QUERY;Product_Id;Title;Purchased\n"
                                    "e1;2026-01-01T00:00:00Z;dog bed;P1;Dog Bed;yes\n", encoding="utf-8")
    [ev] = _events(tmp_path / "e.csv")
    assert (ev.event_id, ev.query, ev.product.product_id, ev.purchased) == ("e1", "dog bed", "P1", True)


@pytest.mark.parametrize("content", [b"", b"\n\r\n  ", b"\xef\xbb\xbf"])
def test_an_empty_file_is_one_clear_error_not_zero_events(tmp_path, content):
    (tmp_path / "e.csv").write_bytes(content)
    with pytest.raises(SourceError, match="the file is empty"):
        list(read_rows(tmp_path / "e.csv"))


def test_empty_cells_optional_means_missing_required_is_an_error_naming_column_and_line(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text(HEADER + ",session_id\n"
                 "e1,2026-01-01T00:00:00Z,dog bed,P1,Dog Bed,,,,\n"         # optional cells empty: missing
                 "e2,2026-01-01T00:00:00Z,dog bed,P1, \u200b ,bed,true,0,\n"  # a required cell blank
                 "e3,,dog bed,P1,Dog Bed,bed,true,0,s1\n")
    ok, no_title, no_time = _events(p)
    assert ok.product.product_type is None and ok.session_id is None and not ok.clicked
    assert no_title == "line 3: column 'title' is empty (a required field)"
    assert no_time == "line 4: column 'event_time' is empty (a required field)"


def test_bad_rows_name_their_line_and_the_rest_of_the_file_is_read(tmp_path):
    p = tmp_path / "e.csv"
    p.write_bytes("\n".join([
        HEADER,
        ROWS[0],
        'e2,2026-01-01T00:00:00Z,dog bed,P1,"A title over',         # a quoted cell over two lines
        'two lines",,true,0',
        "e3,2026-01-01T00:00:00Z,caf\udce9,P1,Bed,,,".encode("utf-8", "surrogateescape").decode("latin-1"),
        ROWS[1] + ",extra",
        "",
        "e5,2026-01-01T00:00:00Z,dog bed,P1,Bed,,perhaps,0",
        ROWS[1],
    ]).encode("latin-1"))
    got = _events(p)
    assert got[0].event_id == "e1" and got[1].product.title == "A title over two lines"
    assert got[2] == "line 5: not UTF-8 text (undecodable bytes at column 28); save the file as UTF-8"
    assert got[3] == "line 6: 9 cells, but the header has 8 columns (separator ',')"
    assert got[4] == "line 8: clicked: not a boolean: 'perhaps'"
    assert got[5].event_id == "e2" and len(got) == 6


def test_a_json_array_file_and_jsonl_line_numbers(tmp_path):
    p = tmp_path / "e.json"
    p.write_text(json.dumps([json.loads(_sb_line(1)), [1], {**json.loads(_sb_line(2)), "query": ""}], indent=2))
    first, not_object, empty = _events(p)
    assert first.event_id == "e1" and not_object == "item 2: expected a JSON object, got array"
    assert empty == "item 3: column 'query' is empty (a required field)"
    p = tmp_path / "e.jsonl"
    p.write_text(f"{_sb_line(1)}\n\n[]\n{{broken\n{_sb_line(2)}\n")
    one, arr, broken, two = _events(p)
    assert arr == "line 3: expected a JSON object, got array" and broken.startswith("line 4: not JSON")
    assert (one.event_id, two.event_id) == ("e1", "e2")


@pytest.mark.parametrize("name, content, why", [
    ("missing.csv", None, "cannot open"),
    ("book.csv", b"PK\x03\x04\x14\x00\x06\x00", "Excel workbook"),
    ("e.txt.gz", b"\x1f\x8b\x08\x00", "gzip"),
    ("e.xml", b"<events/>", "unknown format"),
    ("e.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\xff\xfe", "binary"),
    ("e.csv", b"name,age\nbob,3\n", "no known column in the header"),
    ("e.csv", b"event_id,title,title\n", "column 'title' appears twice"),
    ("e.parquet", b"PAR1 not really", "not a readable Parquet file"),
])
def test_a_file_that_cannot_be_read_is_one_clear_error(tmp_path, name, content, why):
    p = tmp_path / name
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(SourceError, match=why):
        list(read_rows(p))


def test_undecodable_bytes_in_a_record_over_two_lines_name_the_record_and_the_line(tmp_path):
    p = tmp_path / "e.csv"
    p.write_bytes(HEADER.encode() + b'\ne1,2026-01-01T00:00:00Z,dog bed,P1,"Dog\nBed caf\xe9",,true,0\n' + ROWS[1].encode())
    bad, ok = _events(p)
    assert bad == "line 2: not UTF-8 text (undecodable bytes at line 3, column 8); save the file as UTF-8"
    assert ok.event_id == "e2"


@pytest.mark.parametrize("later", ["none", "a quoted cell", "an extra cell"])
def test_a_quote_never_closed_is_an_error_of_its_line_and_the_rows_below_are_read(tmp_path, later):
    """Found by a tester: a stray quote ran over every line below it into one cell (non-strict CSV),
    and those rows became one dead letter. Now only its own line is an error; the lines after it are
    read again, whether the quote runs to the end of the file or closes on a later line."""
    tail = {"none": ROWS[1],
            "a quoted cell": 'e4,2026-01-01T00:00:00Z,dog bed,P1,"Bed, large",,true,0',
            "an extra cell": 'e4,2026-01-01T00:00:00Z,dog bed,P1,Bed",x,,true,0'}[later]
    p = tmp_path / "e.csv"
    p.write_text("\n".join([HEADER, ROWS[0], 'e2,2026-01-01T00:00:00Z,dog bed,P1,"Bed,,true,0',
                            "e3,2026-01-01T00:00:00Z,dog bed,P1,Bed,,true,0", tail]) + "\n")
    got = _events(p)
    assert got[0].event_id == "e1"
    assert got[1].startswith("line 3: ") and "read again" in got[1], got[1]
    assert got[2].event_id == "e3"
    if later == "an extra cell":  # the quote closes there, in a row too long: read again, on its own
        assert "9 cells over several lines" in got[1]
        assert got[3] == "line 5: 9 cells, but the header has 8 columns (separator ',')"
    else:
        assert "not CSV" in got[1] and got[3].event_id == ("e2" if later == "none" else "e4")
    assert len(got) == 4


def test_a_quote_that_closes_at_the_end_of_a_later_row_does_not_swallow_the_rows_between(tmp_path):
    """Found by a tester: `"Dell Monitor 24` ... `LG Monitor 27"` is valid CSV of the header's width,
    one record whose title held two whole rows; they were sent as its title and lost. A later line of
    a multi-line record that is a row of its own (the header's width or more) makes the record's
    first line an error, and the lines after it are read again. A description with line breaks is
    still one cell."""
    p = tmp_path / "n.csv"
    p.write_text("event_id,event_time,query,product_id,title\n"
                 'n-02,2026-01-01T00:00:00Z,monitor,P1,"Dell Monitor 24\n'
                 "n-03,2026-01-01T00:00:00Z,tv,P2,Samsung TV\n"
                 'n-04,2026-01-01T00:00:00Z,monitor,P3,LG Monitor 27"\n'
                 'n-05,2026-01-01T00:00:00Z,w,P4,"Wool hat\nknitted, warm"\n')
    got = _events(p)
    assert got[0].startswith("line 2: a quote opened on this line runs over line 3, which is a row of its own")
    assert [g.event_id for g in got[1:]] == ["n-03", "n-04", "n-05"]
    assert got[2].product.title == 'LG Monitor 27"' and got[3].product.title == "Wool hat knitted, warm"
    # over two lines: the row is the quoted cell's last line, up to the quote that closes it
    p.write_text("event_id,event_time,query,product_id,title\n"
                 'n-02,2026-01-01T00:00:00Z,monitor,P1,"Dell Monitor 24\n'
                 'n-03,2026-01-01T00:00:00Z,monitor,P3,LG Monitor 27"\n')
    assert [g if isinstance(g, str) else g.event_id for g in _events(p)][1:] == ["n-03"]
    # a query cell with a line break and separators after it (hypothesis found this one): one cell
    p.write_text('event_id|query|event_time|product_id|title\r\n0|"x\r\n0|0"|2026-01-01T00:00:00Z|P1|T\r\n')
    (ev,) = _events(p)
    assert ev.event_id == "0" and ev.product.product_id == "P1"
