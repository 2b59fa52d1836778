#!/usr/bin/env bash
# One command: install what is missing, then run the whole test suite (notebooks and pytest).
#   bash scripts/test.sh            everything, as CI runs it
#   bash scripts/test.sh --fast     pytest without the `integration` tier (no notebooks, papermill, servers, DDP): for editing
# Further arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
fast=0
if [ "${1:-}" = "--fast" ]; then fast=1; shift; fi
bash scripts/install.sh
export HF_HUB_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false
# Temporary folders (trained models of the notebook examples and tests, ~100 MB each) go in one place, removed when
# the suite passes and kept, with their path printed, when it fails.
export TMPDIR="$(mktemp -d "${TMPDIR:-/tmp}/recnb-tests.XXXXXX")"
trap 'status=$?; if [ $status -eq 0 ]; then rm -rf "$TMPDIR"; else echo "temporary files kept in $TMPDIR"; fi' EXIT
source .venv/bin/activate
if [ $fast -eq 1 ]; then
  echo "== pytest, fast tier (not integration; the notebooks and the integration tier run in the full suite)"
  pytest -m "not gpu and not integration" "$@"
  exit
fi
echo "== nbdev-test (notebooks)"
nbdev-test --n-workers 2
echo "== pytest"
pytest "$@"
