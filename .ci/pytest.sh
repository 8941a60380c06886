#!/usr/bin/env bash
# The test command (`make test`): `ruff check` ([tool.ruff] in pyproject.toml), the stream suite in
# .venv, then the ML suite in .venv-ml (real vLLM on CPU, a real `vllm serve`). Integration tests
# start the broker themselves. pytest's exit 5 (no tests ran) counts as a failure, and so does a
# lint finding (the suites still run). The last line sums both suites.
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# what tests leave to look at (the operator page's screenshots)
export INTENTFLOW_ARTIFACTS="${INTENTFLOW_ARTIFACTS:-$PWD/.ci/artifacts}"
mkdir -p "$INTENTFLOW_ARTIFACTS"
out=$(mktemp -d)
check() { if [ "$1" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; return 1; fi; return "$1"; }
.venv/bin/ruff check .; lint=$?
.venv/bin/pytest -ra --durations=10 --ignore=tests/ml --junitxml="$out/stream.xml" "$@"; a=$?
.venv-ml/bin/pytest -ra --durations=10 -p no:cacheprovider --junitxml="$out/ml.xml" tests/ml "$@"; b=$?
check $a; a=$?
check $b; b=$?
python3 - "$out"/*.xml <<'PY'
import sys, xml.etree.ElementTree as ET
t = f = s = 0
for path in sys.argv[1:]:
    for suite in ET.parse(path).getroot().iter("testsuite"):
        n, fail, err, skip = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
        t += n - fail - err - skip; f += fail + err; s += skip
print(f"total: {t} passed, {f} failed, {s} skipped")
PY
[ $lint -eq 0 ] || echo "ruff check failed (see above)" >&2
[ $lint -eq 0 ] && [ $a -eq 0 ] && [ $b -eq 0 ]
