#!/usr/bin/env bash
# System packages the project needs on Debian: Redis for the Feast online store; Chromium and its
# WebDriver for the operator web page test (tests/test_web_page.py drives headless Chromium).
# Idempotent; installs only what is missing (needs root, as on these machines and CI).
# `--test` adds what only the tests need (Chromium); `make demo` runs it without.
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || need+=(redis-server)
if [ "${1:-}" = "--test" ]; then
  [ -x /usr/bin/chromium ] || need+=(chromium)
  [ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
fi
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  echo "installed: ${need[*]}"
fi
