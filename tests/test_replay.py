"""`intentflow replay` without a broker: what it sends, what it dead-letters and why, when it stops."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from processors.config import SamplingConfig
from streams.replay import ReplayError, replay
from streams.settings import Topics

T = "2026-01-01T00:00:00Z"
FUTURE = "2099-01-01T00:00:00Z"


class FakeProducer:
    """The part of streams.producer.EventProducer that replay uses, recording what it is given."""

    def __init__(self, refuse: set[str] = frozenset()):
        self.settings = SimpleNamespace(sampling=SamplingConfig())
        self.topics = Topics()
        self.sent, self.dlq, self.refuse = [], [], refuse

    def send(self, event, topic=None):
        if event.event_id in self.refuse:
            from confluent_kafka import KafkaError, KafkaException

            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        self.sent.append(event)

    def send_raw(self, topic, value, key=None, timestamp_ms=None):
        assert topic == self.topics.dlq
        self.dlq.append(json.loads(value))

    def flush(self, timeout=60.0):
        return len(self.sent) + len(self.dlq)


def sb(i, **kw):
    return json.dumps({"event_id": f"e{i}", "event_time": T, "query": "dog bed",
                       "product": {"product_id": "P1", "title": "Dog Bed"}, **kw})


def test_a_far_future_row_is_dead_lettered_with_the_reason_and_the_rest_is_sent(tmp_path):
    p = tmp_path / "e.jsonl"
    p.write_text("\n".join([sb(1), sb(2, event_time=FUTURE), sb(3)]) + "\n")
    prod = FakeProducer()
    counts = replay(p, prod, progress=False)
    assert (counts["sent"], counts["invalid"]) == (2, 1) and [e.event_id for e in prod.sent] == ["e1", "e3"]
    (d,) = prod.dlq
    assert d["error"].startswith("line 2: event_time 2099-01-01T00:00:00+00:00 is in the future")
    assert d["offset"] == 2 and d["stage"] == "replay" and json.loads(d["value_text"])["event_id"] == "e2"


def test_now_restamps_instead_of_refusing(tmp_path):
    p = tmp_path / "e.jsonl"
    p.write_text(sb(1, event_time=FUTURE) + "\n")
    prod = FakeProducer()
    assert replay(p, prod, progress=False, now=True)["sent"] == 1 and not prod.dlq


def test_bad_rows_never_stop_the_replay_and_each_names_its_line(tmp_path):
    p = tmp_path / "e.csv"
    p.write_bytes(b"\xef\xbb\xbfevent_id;event_time;query;product_id;title;clicked\r\n"
                  b"e1;2026-01-01T00:00:00Z;dog bed;P1;Dog Bed;yes\r\n"
                  b"e2;2026-01-01T00:00:00Z;dog bed;P1;;yes\r\n"
                  b"e3;2026-01-01T00:00:00Z;caf\xe9;P1;Bed;\r\n"
                  b"e4;2099-01-01T00:00:00Z;dog bed;P1;Bed;\r\n"
                  b"e5;2026-01-01T00:00:00Z;dog bed;P1;Bed;maybe\r\n"
                  b"e6;2026-01-01T00:00:00Z;dog bed;P1;Bed;no;extra\r\n"
                  b"e7;2026-01-01T00:00:00Z;dog bed;P1;Bed;no\r\n")
    prod = FakeProducer(refuse={"e7"})
    counts = replay(p, prod, progress=False)
    assert [e.event_id for e in prod.sent] == ["e1"] and counts["invalid"] == 6
    errors = {d["offset"]: d["error"] for d in prod.dlq}
    assert errors[3] == "line 3: column 'title' is empty (a required field)"
    assert errors[4].startswith("line 4: not UTF-8 text")
    assert errors[5].startswith("line 5: event_time 2099-01-01T00:00:00+00:00 is in the future")
    assert errors[6] == "line 6: clicked: not a boolean: 'maybe'"
    assert errors[7] == "line 7: 7 cells, but the header has 6 columns (separator ';')"
    assert errors[8].startswith("line 8: not produced:") and "MSG_SIZE_TOO_LARGE" in errors[8]
    bad_bytes = next(d for d in prod.dlq if d["offset"] == 4)
    assert base64.b64decode(bad_bytes["value_b64"]) == b"e3;2026-01-01T00:00:00Z;caf\xe9;P1;Bed;"  # as it was


def test_limit_counts_bad_rows_too(tmp_path):
    p = tmp_path / "e.jsonl"
    p.write_text("\n".join([sb(1), "{oops", sb(3), sb(4)]) + "\n")
    prod = FakeProducer()
    counts = replay(p, prod, progress=False, limit=3)
    assert (counts["sent"], counts["invalid"]) == (2, 1)


def test_a_file_that_cannot_be_read_ends_replay_with_a_clear_error(tmp_path):
    p = tmp_path / "book.csv"
    p.write_bytes(b"PK\x03\x04 an xlsx saved under the wrong name")
    with pytest.raises(ReplayError, match="Excel workbook"):
        replay(p, FakeProducer(), progress=False)


def test_the_cli_exits_non_zero_with_the_message_and_no_traceback(tmp_path, monkeypatch):
    from streams import cli

    monkeypatch.setenv("INTENTFLOW_BROKER", "127.0.0.1:1")  # never contacted: the file fails first
    from streams.settings import get_settings

    get_settings.cache_clear()
    p = tmp_path / "e.csv"
    p.write_text("name,age\nbob,3\n")
    try:
        result = CliRunner().invoke(cli.main, ["replay", str(p), "--json"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert "Error:" in result.output and "no known column in the header" in result.output
    assert "Traceback" not in result.output


def test_an_event_before_1970_is_produced_with_the_brokers_time_not_a_negative_timestamp(monkeypatch):
    from processors.events import parse_search_buy
    from streams.producer import EventProducer
    from streams.settings import Settings

    p = EventProducer(Settings(broker="127.0.0.1:1"))
    calls = []
    monkeypatch.setattr(p, "send_raw", lambda topic, value, key=None, timestamp_ms=None: calls.append(timestamp_ms))
    p.send(parse_search_buy(sb(1, event_time="1969-07-20T20:17:00Z")))
    p.send(parse_search_buy(sb(2)))
    assert calls == [None, 1767225600000]
