#!/usr/bin/env bash
# Install the system tools the tests need that pip cannot provide, idempotently: Debian's `prometheus` package
# brings `promtool` (rule checks and rule unit tests in tests/test_monitoring_rules.py) and the `prometheus` server;
# `prometheus-alertmanager` brings `amtool` (config checks) and the Alertmanager that tests/test_watch.py runs.
set -euo pipefail

declare -A PACKAGE_OF=([promtool]=prometheus [amtool]=prometheus-alertmanager)
missing=()
for tool in "${!PACKAGE_OF[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${PACKAGE_OF[$tool]}")
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  echo "install-system.sh: ${missing[*]} missing and this user can neither install Debian packages (not root) nor" >&2
  echo "use sudo without a password. Install them yourself: apt-get install ${missing[*]} (Debian/Ubuntu), or put" >&2
  echo "promtool and amtool binaries from https://prometheus.io/download/ on PATH." >&2
  exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system.sh: ${missing[*]} missing and there is no apt-get on this system; put promtool and amtool" >&2
  echo "binaries from https://prometheus.io/download/ on PATH." >&2
  exit 1
fi

echo "install-system.sh: installing Debian's ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
# The packages enable servers on systemd hosts; the tests need only the binaries.
for tool in "${!PACKAGE_OF[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "install-system.sh: ${PACKAGE_OF[$tool]} installed but $tool is not on PATH" >&2; exit 1; }
done
