# Two commands do all set-up: `make demo` (the main job) and `make test` (the test suite).
PY ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test unit system clean venv

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

system:
	bash infra/install-system.sh

test: system venv
	bash .ci/pytest.sh

unit: venv
	$(VENV)/bin/pytest -q -m "not integration"

demo: system venv
	$(VENV)/bin/intentflow demo

clean:
	rm -rf $(VENV) .intentflow .pytest_cache
