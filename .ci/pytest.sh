#!/usr/bin/env bash
# The test command (`make test`): runs the whole suite, integration tests on real services included
# (the fixtures start the broker and Redis themselves). pytest's exit 5 (no tests ran) is a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/pytest -ra --durations=15 "$@"
rc=$?
if [ $rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit $rc
