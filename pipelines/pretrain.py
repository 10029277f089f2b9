"""Self-supervised pretraining entry point (same as ``medssl pretrain``).

    python pipelines/pretrain.py --config configs/pretrain/mae3d_tiny.yaml --trainer.max_epochs=1

All logic lives in :mod:`medssl.training.cli`; this script only hands it the command line.
"""
import sys

from medssl.training.cli import main

if __name__ == "__main__":
    main(sys.argv[1:])
