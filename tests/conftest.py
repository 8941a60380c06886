import os

import pytest

from infra import services


@pytest.fixture
def broker(tmp_path):
    """A fresh Tansu broker on a free loopback port for one test (memory storage: nothing leaks)."""
    port = services.free_port()
    svc = services.broker_up(port, tmp_path / "run")
    yield f"127.0.0.1:{port}"
    services.down(svc)


@pytest.fixture
def redis(tmp_path):
    """A fresh Redis on a free loopback port (append-only file under tmp_path, so a restart keeps data)."""
    port = services.free_port()
    svc = services.redis_up(port, tmp_path / "redis-run")
    yield svc
    services.down(svc)


@pytest.fixture
def settings_for(monkeypatch):
    """Settings pointed at a test broker, for in-process producers."""
    from streams.settings import Settings, get_settings

    def make(bootstrap: str, **env: str) -> Settings:
        for k in list(os.environ):
            if k.startswith("INTENTFLOW_"):
                monkeypatch.delenv(k)
        monkeypatch.setenv("INTENTFLOW_BROKER", bootstrap)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        get_settings.cache_clear()
        return get_settings()

    yield make
    get_settings.cache_clear()


@pytest.fixture
def stream_env(broker, tmp_path, settings_for):
    """(a stream worker's environment, in-process Settings) on the test broker with the test
    workload's thresholds (tests/workload.ENV), every stream topic created."""
    from tests import workload
    from tests.kafka_util import create_topics, worker_env

    e = worker_env(broker, tmp_path / "data", **workload.ENV)
    s = settings_for(broker, **workload.ENV)
    create_topics(broker, s)
    return e, s


# tests/ml needs the ML environment (.venv-ml: vLLM, torch); .ci/pytest.sh runs it there.
import importlib.util  # noqa: E402

collect_ignore = [] if importlib.util.find_spec("vllm") else ["ml"]
