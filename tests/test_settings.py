from pathlib import Path

from streams.settings import Settings, settings_markdown


def test_nested_settings_from_environment(monkeypatch):
    monkeypatch.setenv("INTENTFLOW_SAMPLING__MIN_EVENTS", "7")
    monkeypatch.setenv("INTENTFLOW_BATCH__MAX_SIZE", "64")
    monkeypatch.setenv("INTENTFLOW_TOPICS__BATCHES", "gen.b")
    s = Settings()
    assert (s.sampling.min_events, s.batch.max_size, s.topics.batches) == (7, 64, "gen.b")


def test_configuration_doc_lists_every_setting():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "CONFIGURATION.md").read_text()
    assert doc == settings_markdown(), "regenerate: intentflow config --markdown > docs/CONFIGURATION.md"


def test_the_high_watermark_workaround_is_for_loopback_brokers_unless_set():
    from streams.settings import Settings, needs_true_highwaters

    assert needs_true_highwaters(Settings(broker="127.0.0.1:9092"))
    assert needs_true_highwaters(Settings(broker="localhost:9092,[::1]:9093"))
    assert not needs_true_highwaters(Settings(broker="kafka-1.prod:9092,127.0.0.1:9092"))
    assert not needs_true_highwaters(Settings(broker="10.0.0.5:9092"))
    assert needs_true_highwaters(Settings(broker="10.0.0.5:9092", broker_true_highwaters=True))
    assert not needs_true_highwaters(Settings(broker="127.0.0.1:9092", broker_true_highwaters=False))


def test_both_environments_load_one_settings_class():
    import generators.config
    import infra.settings
    import streams.settings

    assert generators.config.MLSettings is infra.settings.Settings is streams.settings.Settings
    assert generators.config.KafkaSecurity is streams.settings.KafkaSecurity


def test_every_section_reads_its_variables(monkeypatch):
    from infra.settings import Settings

    for k, v in {"INTENTFLOW_APP_ID": "flow2", "INTENTFLOW_PARTITIONS": "3", "INTENTFLOW_DTYPE": "float32",
                 "INTENTFLOW_TOPICS__CANDIDATES": "c.t", "INTENTFLOW_TOPICS__TAIL_STATS": "ts.t",
                 "INTENTFLOW_GROUPS__FILTER": "f.g", "INTENTFLOW_GENERATION__TEMPERATURE": "0",
                 "INTENTFLOW_FILTER__MIN_PLAUSIBILITY": "0.7", "INTENTFLOW_DEDUP__TTL_S": "60",
                 "INTENTFLOW_KAFKA__SECURITY_PROTOCOL": "SSL"}.items():
        monkeypatch.setenv(k, v)
    s = Settings()
    assert (s.topics.candidates, s.groups.filter, s.generation.temperature, s.filter.min_plausibility,
            s.dedup.ttl_s, s.kafka.security_protocol, s.dtype) == ("c.t", "f.g", 0.0, 0.7, 60.0, "SSL", "float32")
    assert s.consumer_groups == {"stream": "flow2", "generate": "intentflow-generate",
                                 "generate_priority": "intentflow-generate.priority", "filter": "f.g"}
    specs = {x.name: x for x in s.topic_specs()}
    assert specs["c.t"].partitions == 3 and specs["ts.t"].compacted and not specs["c.t"].compacted
    assert specs["flow2-sent_requests-changelog"] == ("flow2-sent_requests-changelog", 3, True)
    assert specs["flow2-__assignor-__leader"].partitions == 1


def test_the_registry_holds_every_topic_once_with_every_table_changelog():
    from infra.settings import TABLES, Settings

    s = Settings(app_id="a")
    names = [x.name for x in s.topic_specs()]
    assert len(names) == len(set(names))
    assert set(s.topics.model_dump().values()) <= set(names)
    assert {f"a-{t}-changelog" for t in TABLES} <= set(names)
    assert {"knowledge.candidates", "knowledge.rejected", "knowledge.tail_stats", "generation.dlq",
            "filter.dlq", "behavior.dlq", "generation.batches", "knowledge.edges"} <= set(names)


def test_config_markdown_lists_every_variable_once():
    import re

    from click.testing import CliRunner

    from infra.settings import Settings
    from streams.cli import main

    out = CliRunner().invoke(main, ["config", "--markdown"]).output
    names = re.findall(r"^\| `(INTENTFLOW_[A-Z0-9_]+)`", out, re.M)
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    assert {"INTENTFLOW_BROKER", "INTENTFLOW_DTYPE", "INTENTFLOW_GROUPS__GENERATE", "INTENTFLOW_TOPICS__CANDIDATES",
            "INTENTFLOW_TOPICS__SEARCH_BUY", "INTENTFLOW_GENERATION__RELATIONS", "INTENTFLOW_FILTER__CRITIC",
            "INTENTFLOW_SAMPLING__PAIR_TTL_S", "INTENTFLOW_DEDUP__TTL_S"} <= set(names)
    leaves = sum(len(f.annotation.model_fields) if isinstance(f.annotation, type) and hasattr(f.annotation, "model_fields")
                 else 1 for f in Settings.model_fields.values())
    assert len(names) == leaves


def test_status_reads_the_groups_from_the_settings():
    from infra.settings import Settings
    from streams.status import stages

    s = Settings(app_id="flow2", groups={"generate": "g", "filter": "f"})
    groups = {st: g for st, g, _ in stages(s.topics, s)}
    assert groups == {"sample": "flow2", "dedup + batch": "flow2", "generate": "g", "generate (priority)": "g.priority",
                      "filter": "f", "features": "flow2", "offline writer": "flow2"}
