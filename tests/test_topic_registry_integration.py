"""`intentflow topics create` makes every topic the pipeline uses: afterwards a stream worker
(Faust, a subprocess) and the ML workers (in process: a stand-in engine and the filter's rule
stages, the workers' own Kafka code) run events end to end and the broker has no new topic."""

from __future__ import annotations

import json
import subprocess

import pytest
from confluent_kafka.admin import AdminClient

from generators.engines import Completion
from generators.filter_worker import FilterWorker
from generators.worker import GenerationWorker
from processors.filters import FilterPipeline
from streams.status import topic_counts
from tests import workload
from tests.kafka_util import (ALL_STAGES, FEATURE_STAGES, INTENTFLOW, ROOT, TOPIC, Worker, produce, wait_caught_up,
                              worker_env)

pytestmark = pytest.mark.integration

APP = "flowtest"  # not the default: changelogs, Faust's leader topic and the stream group follow INTENTFLOW_APP_ID


class Echo:
    """A stand-in engine: the same short list for every prompt (the model is not under test)."""
    name, model = "echo", "echo"

    def generate(self, prompts, params):
        return [Completion(" new parents\n2. long walks with the dog\n", 8) for _ in prompts]


def _topics(broker: str) -> dict[str, int]:
    """Topic -> partitions; the broker's own (`__consumer_offsets`) are not the pipeline's."""
    md = AdminClient({"bootstrap.servers": broker}).list_topics(timeout=10).topics
    return {t: len(m.partitions) for t, m in md.items() if not t.startswith("__")}


def test_no_worker_creates_a_topic_after_topics_create(broker, tmp_path, settings_for):
    extra = {"INTENTFLOW_APP_ID": APP, "INTENTFLOW_FEATURES__ONLINE": "sqlite",
             "INTENTFLOW_FEATURES__OFFLINE_FLUSH_S": "0.5", **workload.ENV}
    env = worker_env(broker, tmp_path / "data", **extra)
    made = subprocess.run([INTENTFLOW, "topics", "create"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert made.returncode == 0, made.stderr
    before = _topics(broker)
    s = settings_for(broker, INTENTFLOW_SESSION_TIMEOUT_S="6", **extra)
    assert {x.name: x.partitions for x in s.topic_specs()} == before
    assert before[f"{APP}-entity_knowledge-changelog"] == s.partitions and before[f"{APP}-__assignor-__leader"] == 1

    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        worker.wait_ready(timeout=120)
        w = workload.build(n_search=300, n_co=60, seed=3)
        produce(s, w.noise + w.main)
        wait_caught_up(broker, APP, ALL_STAGES, timeout=120, settle=1.0)
        batches = topic_counts(broker, [TOPIC.batches])[TOPIC.batches]
        assert batches, "no request reached generation"
        gen = GenerationWorker(Echo(), s).run(max_batches=batches, idle_exit_s=60)
        cands = topic_counts(broker, [s.topics.candidates])[s.topics.candidates]
        filt = FilterWorker(lambda stats: FilterPipeline(s.filter, stats), s).run(max_candidates=cands, idle_exit_s=60)
        wait_caught_up(broker, APP, FEATURE_STAGES, timeout=120, settle=1.0)
        status = subprocess.run([INTENTFLOW, "status", "--json", "--window", "0.2"], env=env, cwd=ROOT,
                                capture_output=True, text=True, timeout=120)
    finally:
        worker.stop()
    assert gen["batches"] == batches and filt["candidates"] == cands > 0
    assert filt["kept"], f"nothing reached the feature writer: {dict(filt)}"
    assert _topics(broker) == before, "a worker created a topic `intentflow topics create` did not"

    assert status.returncode == 0, status.stderr
    groups = {x["stage"]: (x["group"], x["lag"]) for x in json.loads(status.stdout)["stages"]}
    assert groups["sample"] == groups["features"] == (APP, 0)  # INTENTFLOW_APP_ID's group, caught up
    assert groups["generate"] == ("intentflow-generate", 0) and groups["filter"] == ("intentflow-filter", 0)
