"""Few-label evaluation entry point (same as ``medssl evaluate``).

    python pipelines/evaluate.py --protocol configs/finetune/pneumoniamnist_protocol.yaml --encoder runs/x/encoder.json

All logic lives in :mod:`medssl.finetune.protocol`; this script only hands it the command line.
"""
import sys

from medssl.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
