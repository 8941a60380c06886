"""The ML environment loads the project's one settings class, and its workers create no topic."""

from __future__ import annotations

import pytest


def test_the_ml_side_loads_the_one_settings_class(monkeypatch):
    from generators.config import MLSettings
    from infra.settings import Settings

    assert MLSettings is Settings
    monkeypatch.setenv("INTENTFLOW_GENERATION__RELATIONS", '["xWant"]')
    monkeypatch.setenv("INTENTFLOW_GROUPS__GENERATE", "gen")
    monkeypatch.setenv("INTENTFLOW_SAMPLING__PAIR_TTL_S", "5")  # the stream side's sections parse here too
    s = MLSettings()
    assert (s.generation.relations, s.groups.generate, s.sampling.pair_ttl_s) == (("xWant",), "gen", 5.0)
    assert s.consumer_groups["generate_priority"] == "gen.priority"


@pytest.mark.integration
def test_workers_refuse_to_start_without_their_topics_and_start_once_they_are_made(broker):
    from generators.filter_worker import FilterWorker
    from generators.worker import GenerationWorker
    from infra import services
    from infra.settings import Settings

    s = Settings(broker=broker)
    with pytest.raises(RuntimeError, match="intentflow topics create"):
        GenerationWorker(object(), s)
    with pytest.raises(RuntimeError, match="knowledge.candidates"):
        FilterWorker(lambda stats: None, s)
    services.ensure_pipeline_topics(s)
    FilterWorker(lambda stats: None, s).run(idle_exit_s=0)  # what `intentflow topics create` makes is enough
