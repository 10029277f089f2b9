"""Prediction entry point (same as ``medssl predict``).

    python pipelines/predict.py --checkpoint runs/seg/best.ckpt scans/ predictions/

All logic lives in :mod:`medssl.finetune.predict`; this script only hands it the command line.
"""
import sys

from medssl.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
