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
