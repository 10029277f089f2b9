"""One fine-tuning run entry point (same as ``medssl finetune``).

    python pipelines/finetune.py --config configs/finetune/hippocampus_finetune.yaml --encoder runs/x/encoder.json

All logic lives in :mod:`medssl.finetune.run`; this script only hands it the command line.
"""
import sys

from medssl.cli import main

if __name__ == "__main__":
    sys.exit(main(["finetune", *sys.argv[1:]]))
