"""processors.contracts: one module names the contract of every topic, and the producers of
dead letters, rejections and feature rows write what their consumers parse."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from processors import contracts
from processors.contracts import DeadLetter, Edge, FeatureRowMessage, Rejection
from processors.dlq import NotRedrivable, envelope, redrive
from tests.feature_data import co_edge, product, search_edge


def test_every_topic_of_the_settings_has_a_contract_named_in_the_module():
    from infra.settings import Topics

    doc = contracts.__doc__
    for field, name in Topics().model_dump().items():
        assert name in doc, (field, name)  # the worker-own topics too, with where their shape lives
    for model in contracts.__all__:
        assert hasattr(contracts, model)


def test_a_dead_letter_is_the_model_and_keeps_its_stage_specific_keys():
    env = json.loads(envelope(source_topic="generation.batches", partition=0, offset=3, key=None, value=b"\xff",
                              error="engine failed", kind="engine_failed", stage="generate", request_id="r1"))
    letter = DeadLetter.model_validate(env)
    assert (letter.stage, letter.kind, letter.value_text, env["request_id"]) == ("generate", "engine_failed", None, "r1")
    assert letter.failed_at > 0 and letter.key_b64 is None
    with pytest.raises(NotRedrivable, match="not a dead letter"):
        redrive({"source_topic": "t", "value_b64": "AA=="})  # no error, kind or stage


def test_edges_as_the_filter_worker_writes_them_parse_and_bad_ones_say_which_field():
    shoe, sock = product("B1", "Walking shoe", "shoes"), product("B2", "Socks", "socks")
    for e in (search_edge("shoes for nurses", shoe, "used_for_audience", "nurses", 0.9, 1.0),
              co_edge(shoe, sock, "used_with", "long walks", 0.7, 1.0)):
        assert Edge.model_validate_json(json.dumps(e)).edge_id == e["edge_id"]
    bad = {**search_edge("q", shoe, "xWant", "stay dry", 0.9, 1.0), "score": 1.5, "relation": "likes"}
    with pytest.raises(ValidationError) as err:
        Edge.model_validate_json(json.dumps(bad))
    assert {e["loc"][0] for e in err.value.errors()} == {"score", "relation"}


def test_rejections_of_both_workers_and_feature_rows_parse():
    r = Rejection(kind="request", stage="input", reason="instruction in the query", pair_key=None, request={"a": 1})
    assert json.loads(r.model_dump_json())["request"] == {"a": 1}
    assert Rejection.model_validate({"stage": "critic", "reason": "0.31 < 0.5", "tail": "x"}).kind == "candidate"
    with pytest.raises(ValidationError):
        Rejection.model_validate({"stage": "", "reason": "x"})
    row = FeatureRowMessage.model_validate_json(b'{"view": "query_intents", "row": {"intent_scores": [NaN]}}')
    assert row.view == "query_intents"
    with pytest.raises(ValidationError):
        FeatureRowMessage.model_validate_json(b'{"view": "no_such_view", "row": {}}')
