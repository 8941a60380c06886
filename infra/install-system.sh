#!/usr/bin/env bash
# System packages the project needs on Debian: Redis for the Feast online store.
# Idempotent; installs only what is missing (needs root, as on these machines and CI).
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  echo "installed: ${need[*]}"
fi
