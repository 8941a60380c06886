"""ML-side tests run in .venv-ml (vLLM, torch): `make test` runs them after the stream suite."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never the hub in tests
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def smollm2():
    from generators.models import smollm2_dir

    return str(smollm2_dir())


@pytest.fixture(scope="session")
def vllm_engine(smollm2):
    from generators.engines import VLLMEngine

    return VLLMEngine(smollm2, max_model_len=2048)
