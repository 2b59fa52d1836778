#!/usr/bin/env bash
# Install the system tools the tests need that pip cannot provide, idempotently: Debian's `prometheus` package
# brings `promtool` (rule checks and rule unit tests in tests/test_monitoring_rules.py) and the `prometheus` server.
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  echo "install-system.sh: promtool is missing and this user can neither install Debian packages (not root) nor" >&2
  echo "use sudo without a password. Install it yourself: apt-get install prometheus (Debian/Ubuntu), or put a" >&2
  echo "promtool binary from https://prometheus.io/download/ on PATH." >&2
  exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system.sh: promtool is missing and there is no apt-get on this system; put a promtool binary from" >&2
  echo "https://prometheus.io/download/ on PATH." >&2
  exit 1
fi

echo "install-system.sh: installing Debian's prometheus package (for promtool)"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends prometheus
# The package enables a Prometheus server on systemd hosts; the tests need only the binaries.
command -v promtool >/dev/null 2>&1 || { echo "install-system.sh: prometheus installed but promtool is not on PATH" >&2; exit 1; }
