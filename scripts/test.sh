#!/usr/bin/env bash
# One command: install what is missing, then run the whole test suite (notebooks and pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false
source .venv/bin/activate
echo "== nbdev-test (notebooks)"
nbdev-test --n-workers 2
echo "== pytest"
pytest "$@"
