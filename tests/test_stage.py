"""streams.stage: the micro-batch loop of every agent (outcomes counted when the next batch is asked
for, dead letters with the stage and reason, a failing batch retried then given up), and
streams.app: built by create_app(), so importing it patches nothing."""

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from streams import take as take_mod
from streams.stage import Stage
from tests.channel_fakes import Ev, Stream

ROOT = Path(__file__).resolve().parents[1]


class DeadLetters:  # the dlq topic's send, as Faust's Topic.send is called
    def __init__(self):
        self.sent: list[dict] = []

    async def send(self, key=None, value=None):
        self.sent.append(json.loads(value))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def count(stage: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("intentflow_events_total", {"stage": stage, "outcome": outcome}) or 0.0


def batches_timed(stage: str) -> float:
    return REGISTRY.get_sample_value("intentflow_stage_batch_seconds_count", {"stage": stage}) or 0.0


def test_outcomes_and_dead_letters_are_counted_once_the_agent_is_done_with_the_batch():
    dlq = DeadLetters()
    stage = Stage("test_stage_counts", dlq, max_attempts=3)

    async def main():
        s = Stream()
        s.put([Ev(0, value=b"ok"), Ev(1, value=b"\xffbad")])
        it = stage.batches(s, 10, 0.02)
        batch = await it.__anext__()
        for event in batch.events:
            if event.message.value == b"ok":
                batch.outcomes["emitted"] += 1
            else:
                await batch.dead_letter(event, "invalid_event", "not UTF-8")
        assert count("test_stage_counts", "emitted") == 0  # the agent may still fail this batch
        s.put([Ev(2, value=b"ok")])
        await it.__anext__()
        assert count("test_stage_counts", "emitted") == 1 and count("test_stage_counts", "dead_letter") == 1
        assert batches_timed("test_stage_counts") == 1
        assert batch.events[0].acks == 1 and batch.events[1].acks == 1

    run(main())
    [letter] = dlq.sent
    assert (letter["stage"], letter["kind"], letter["error"]) == ("test_stage_counts", "invalid_event", "not UTF-8")
    assert (letter["source_topic"], letter["offset"], letter["partition"]) == ("t", 1, 0)


def test_a_batch_the_agent_raised_on_comes_again_then_is_dead_lettered_with_the_stage(monkeypatch):
    monkeypatch.setattr(take_mod, "RETRY_MAX_S", 0.01)
    dlq = DeadLetters()
    stage = Stage("test_stage_poison", dlq, max_attempts=2)
    seen: list[list[int]] = []

    async def agent(s):  # what an agent of streams/app.py does, raising on the poison event
        async for batch in stage.batches(s, 10, 0.02):
            seen.append([e.message.offset for e in batch.events])
            if any(e.message.value == b"poison" for e in batch.events):
                raise RuntimeError("poison")
            batch.outcomes["ok"] += len(batch.events)
            return batch.events

    async def main():
        s = Stream()
        evs = [Ev(0, value=b"poison"), Ev(1)]
        s.put(evs)
        for _ in range(2):  # Faust's supervisor restarts the actor on the same stream after each raise
            with pytest.raises(RuntimeError):
                await agent(s)
        assert [e.acks for e in evs] == [0, 0] and not dlq.sent  # not skipped: tried again
        later = [Ev(2)]
        s.put(later)
        assert await agent(s) == later
        assert [e.acks for e in evs] == [1, 1]

    run(main())
    assert seen == [[0, 1], [0, 1], [2]]
    assert [(d["offset"], d["stage"], d["kind"]) for d in dlq.sent] == [(0, "test_stage_poison", "batch_failed"),
                                                                         (1, "test_stage_poison", "batch_failed")]
    assert "2 times" in dlq.sent[0]["error"]


def test_importing_the_app_patches_nothing_and_create_app_builds_every_stage():
    """`import streams.app` leaves Faust as it is; `streams.app.app` (what `intentflow worker` and
    `faust -A streams.app` use) is built once, with the patches, the tables and one agent per stage."""
    code = """
import json
import faust.transport.consumer as fc
import faust.transport.drivers.aiokafka as fa
import faust.tables.recovery as fr
now = lambda: (fc.Consumer._drain_messages, fc.Consumer._commit_offsets, fc.Consumer._new_offset,
               fa.AIOKafkaConsumerThread.seek_to_committed, fa.AIOKafkaConsumerThread.verify_event_path,
               fr.Recovery.on_recovery_completed, fr.Recovery._resume_streams)
before = now()
import streams.app as m
untouched = before == now()
app = m.app
after = now()
print(json.dumps({"untouched": untouched, "patched": [a is not b for a, b in zip(before, after)],
                  "same": m.app is app, "agents": [a.name for a in app.agents.values()],
                  "topics": [a.channel.get_topic_name() for a in app.agents.values()],
                  "tables": sorted(app.tables)}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTENTFLOW_")}
    env["INTENTFLOW_BROKER"] = "127.0.0.1:1"  # never contacted: nothing starts
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    got = json.loads(r.stdout.decode().strip().splitlines()[-1])
    from infra.settings import TABLES

    assert got["untouched"] and got["patched"] == [True] * 7 and got["same"]
    assert got["agents"] == [f"streams.app.{n}" for n in (
        "sample_search_buy", "sample_co_purchase", "check_products", "batch_requests", "batch_priority_requests",
        "route_edges", "write_features", "write_offline")]
    assert got["topics"] == ["behavior.search_buy", "behavior.co_purchase", "co_purchase.by_product",
                             "knowledge.requests", "knowledge.requests.priority", "knowledge.edges",
                             "features.by_entity", "features.rows"]
    assert got["tables"] == sorted(TABLES)
