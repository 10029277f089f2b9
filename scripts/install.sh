#!/usr/bin/env bash
# Install medssl (+ dev extras) into the active Python environment, CPU-only torch first so pip never pulls
# multi-GB CUDA wheels on machines without a GPU. On a GPU machine, install the torch build you want first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if ! "$PY" -c "import torch" 2>/dev/null; then
    # 1) a pre-downloaded CPU wheel (pip find-links / wheelhouse), no network
    # 2) the official CPU-only index
    # 3) whatever the default index has (large CUDA build)
    "$PY" -m pip install --no-index "torch==2.13.0" 2>/dev/null \
        || "$PY" -m pip install --timeout 30 torch --index-url https://download.pytorch.org/whl/cpu \
        || "$PY" -m pip install torch
fi
"$PY" -m pip install -e ".[dev]"
