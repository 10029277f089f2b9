#!/usr/bin/env bash
# Install medssl (+ dev extras) into the active Python environment, CPU-only torch first so pip never pulls
# multi-GB CUDA wheels on machines without a GPU. On a GPU machine, install the torch build you want first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if ! "$PY" -c "import torch" 2>/dev/null; then
    wheels=$(mktemp -d)
    if "$PY" -m pip download --quiet --no-deps --no-index -d "$wheels" torch 2>/dev/null; then
        # a pre-downloaded (CPU) wheel in pip's find-links / wheelhouse: pin its version so pip takes it
        version=$(ls "$wheels" | sed -n 's/^torch-\([0-9.]*\).*/\1/p' | head -n 1)
        "$PY" -m pip install "torch==${version}"
    else
        # the official CPU-only index (PyPI still serves the dependencies); last resort: the default index
        "$PY" -m pip install torch --index-url https://download.pytorch.org/whl/cpu \
            --extra-index-url https://pypi.org/simple || "$PY" -m pip install torch
    fi
    rm -rf "$wheels"
fi
"$PY" -m pip install -e ".[dev]"
