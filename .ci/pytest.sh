#!/usr/bin/env bash
# The test command (`make test`): the stream suite in .venv, then the ML suite in .venv-ml
# (real vLLM on CPU, a real `vllm serve`). Integration tests start the broker themselves.
# pytest's exit 5 (no tests ran) counts as a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
check() { if [ "$1" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; return 1; fi; return "$1"; }
.venv/bin/pytest -ra --durations=10 --ignore=tests/ml "$@"; a=$?
.venv-ml/bin/pytest -ra --durations=10 -p no:cacheprovider tests/ml "$@"; b=$?
check $a; a=$?
check $b; b=$?
[ $a -eq 0 ] && [ $b -eq 0 ]
