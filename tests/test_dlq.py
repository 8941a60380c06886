"""Dead letters: one envelope for every stage, and `intentflow dlq replay` sends them back."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from confluent_kafka import Producer

from infra import services
from processors.dlq import NotRedrivable, envelope, redrive
from tests.kafka_util import read_topic


def test_a_dead_letter_goes_back_with_its_original_key_and_bytes():
    env = json.loads(envelope(source_topic="behavior.search_buy", partition=1, offset=7, key=b"k\xff",
                              value=b"\x00not json", error="not JSON", kind="invalid_event", stage="sample_search_buy"))
    assert redrive(env) == ("behavior.search_buy", b"k\xff", b"\x00not json")


def test_a_request_dead_lettered_alone_goes_back_as_a_batch_of_one():
    req = {"request_id": "r1", "pair_key": "sb|q|P1", "behavior": "search_buy"}
    env = json.loads(envelope(source_topic="generation.batches", partition=0, offset=3, key=b"b1",
                              value=json.dumps(req).encode(), error="engine failed", kind="engine_failed",
                              stage="generate", batch_id="b1", request_id="r1"))
    topic, key, value = redrive(env, now=1.0)
    batch = json.loads(value)
    assert topic == "generation.batches" and batch["requests"] == [req] and key == batch["batch_id"].encode()


def test_a_letter_without_its_origin_is_not_redrivable():
    with pytest.raises(NotRedrivable):
        redrive({"error": "x", "value_b64": None, "source_topic": "t"})
    # a row `intentflow replay` could not read is fixed in its file, not sent to a topic "file:..."
    row = json.loads(envelope(source_topic="file:/data/events.csv", partition=-1, offset=7, key=None, value=b"a;b",
                              error="row 7: query is empty", kind="invalid_event", stage="replay"))
    with pytest.raises(NotRedrivable, match="fix the file"):
        redrive(row)


@pytest.mark.integration
def test_dlq_replay_redrives_once(broker, monkeypatch):
    from streams.cli import main
    from streams.settings import get_settings

    monkeypatch.setenv("INTENTFLOW_BROKER", broker)
    get_settings.cache_clear()
    services.ensure_topics(broker, ["behavior.dlq", "behavior.search_buy"], 2)
    p = Producer({"bootstrap.servers": broker})
    for i in range(3):
        p.produce("behavior.dlq", envelope(source_topic="behavior.search_buy", partition=0, offset=i, key=f"q{i}".encode(),
                                           value=f'{{"event": {i}}}'.encode(), error="bad", kind="invalid_event",
                                           stage="sample_search_buy"))
    p.produce("behavior.dlq", b"garbage")
    # written by `intentflow replay` for a row of a file, and one whose topic is gone: counted, not sent
    p.produce("behavior.dlq", envelope(source_topic="file:/data/e.csv", partition=-1, offset=4, key=None, value=b"x;y",
                                       error="row 4: query is empty", kind="invalid_event", stage="replay"))
    p.produce("behavior.dlq", envelope(source_topic="no.such.topic", partition=0, offset=0, key=None, value=b"{}",
                                       error="bad", kind="invalid_event", stage="sample_search_buy"))
    p.flush(10)
    try:
        first = CliRunner().invoke(main, ["dlq", "replay", "behavior.dlq", "--json"])
        assert first.exit_code == 0, first.output
        out = json.loads(first.output.strip().splitlines()[-1])
        assert out["to behavior.search_buy"] == 3 and out["undecodable"] == 1 and out["not_redrivable"] == 2, out
        missing = CliRunner().invoke(main, ["dlq", "replay", "no.such.dlq", "--json"])
        assert missing.exit_code == 1 and "no such topic" in missing.output, missing.output
        got = sorted((m.key(), m.value()) for m in read_topic(broker, "behavior.search_buy"))
        assert got == [(f"q{i}".encode(), f'{{"event": {i}}}'.encode()) for i in range(3)]
        again = CliRunner().invoke(main, ["dlq", "replay", "behavior.dlq", "--json"])  # nothing new: nothing sent
        assert "to behavior.search_buy" not in json.loads(again.output.strip().splitlines()[-1])
        assert len(read_topic(broker, "behavior.search_buy")) == 3
        # a message that fails every time: each re-drive adds a letter; after 3 failures it is not sent again
        poison = dict(source_topic="behavior.search_buy", partition=1, offset=9, key=b"p", value=b'{"poison": 1}',
                      error="bad", kind="invalid_event", stage="sample_search_buy")
        sent = []
        for _ in range(4):
            p.produce("behavior.dlq", envelope(**poison))  # its first failure, then the worker's after each re-drive
            p.flush(10)
            out = json.loads(CliRunner().invoke(main, ["dlq", "replay", "behavior.dlq", "--json"]).output.strip().splitlines()[-1])
            sent.append((out.get("to behavior.search_buy", 0), out.get("gave_up", 0)))
        assert sent == [(1, 0), (1, 0), (0, 1), (0, 1)], sent
        assert len(read_topic(broker, "behavior.search_buy")) == 5
        # found by a tester: JSON that is not a letter crashed the run (and every later one); a filtered
        # run marked the letters it skipped as read for the unfiltered one, which never sent them
        co = dict(poison, key=b"c", value=b'{"co": 1}', stage="sample_co_purchase")
        for bad in (b'"hello"', b"[1, 2]", b"null"):
            p.produce("behavior.dlq", bad)
        p.produce("behavior.dlq", envelope(**co))
        p.flush(10)

        def run(*args):
            r = CliRunner().invoke(main, ["dlq", "replay", "behavior.dlq", "--json", *args])
            assert r.exit_code == 0, r.output
            return json.loads(r.output.strip().splitlines()[-1])
        filtered = run("--stage", "sample_search_buy")  # its own cursor (group): every letter of that stage again
        assert filtered["skipped"] == 2 and filtered["gave_up"] == 4 and filtered["to behavior.search_buy"] == 3, filtered
        assert b'{"co": 1}' not in {m.value() for m in read_topic(broker, "behavior.search_buy")}
        unfiltered = run()
        assert unfiltered["undecodable"] == 3 and unfiltered["to behavior.search_buy"] == 1, unfiltered
        assert sorted(m.value() for m in read_topic(broker, "behavior.search_buy"))[0] == b'{"co": 1}'
    finally:
        get_settings.cache_clear()
