import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from processors.events import EventError
from processors.product_type import guess_type
from processors.samples import search_buy_events
from processors.sources import intentionqa_events, read_rows, row_to_event

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
