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
