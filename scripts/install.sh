#!/usr/bin/env bash
# Create .venv and install recnb with everything it needs, idempotently. Sourced by setup.sh and test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
stamp=.venv/.recnb-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ]; then "$PYTHON" -m venv .venv; fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # One resolve for the whole stack (piecemeal installs break opentelemetry pins); torch pinned by constraints.txt,
  # which takes the CPU wheel where one is provided locally and the regular (CUDA) wheel on a GPU machine.
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[dev]"
  echo "$want" > "$stamp"
fi
# Debian packages pip cannot provide: prometheus (promtool and the server) for the monitoring tests.
bash scripts/install-system.sh
# The Jupyter kernel papermill and JupyterLab use, named in settings.ini.
kernel=$(.venv/bin/python -c "from recnb.config import load_settings; print(load_settings().kernel_name)")
if [ ! -f ".venv/share/jupyter/kernels/$kernel/kernel.json" ]; then
  .venv/bin/python -m ipykernel install --sys-prefix --name "$kernel" --display-name "recnb (.venv)" >/dev/null
fi
