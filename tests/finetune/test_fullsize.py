"""Full-size volumes: ``medssl predict`` on a synthetic 240 x 240 x 155, 2-channel case (BraTS size) with a tiny
region segmenter, in a fresh process whose peak RSS is measured (``resource.getrusage``: the high-water mark).

The bound: sliding-window inference keeps one case on the plan's grid at a time. For V = the bytes of the
2-channel float32 image (240 * 240 * 155 * 2 * 4 = 71 MB), reading (nibabel's arrays, the stacked channels),
preprocessing (a reoriented copy), the region logits and their weight map (2 V) and the label maps on both grids
stay under 12 V (~860 MB) above the process's RSS once torch and MONAI are imported; a pipeline that kept
per-window outputs, or float64 copies of every stage, would not. The measured value is printed (``-s``).
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from medssl.data.nifti import write_nifti

SHAPE = (240, 240, 155)
V_BYTES = SHAPE[0] * SHAPE[1] * SHAPE[2] * 2 * 4
BOUND_V = 12

SCRIPT = textwrap.dedent('''
    import json, resource, sys
    from pathlib import Path
    import lightning, nibabel as nib, numpy as np, torch
    from medssl.finetune.predict import run_predict
    from medssl.finetune.segmentation import SegmentationFinetuner
    torch.set_num_threads(2)
    tmp = Path(sys.argv[1])
    shape = tuple(json.loads(sys.argv[2]))
    arch = {"name": "basicunet", "kwargs": {"in_channels": 2, "spatial_dims": 3, "features": [4, 4, 8, 8, 16, 4]}}
    module = SegmentationFinetuner(num_classes=5, init="scratch", architecture=arch, roi_size=(64, 64, 64),
                                   plan={"orientation": "RAS"}, regions={"WT": [1, 2, 3, 4], "TC": [1, 3, 4],
                                   "ET": [4]}, sw_overlap=0.25, sw_batch_size=4)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": lightning.__version__}, tmp / "seg.ckpt")
    del module
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    summary = run_predict(tmp / "seg.ckpt", tmp / "in", tmp / "out", progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    seg = nib.load(tmp / "out" / "big_seg.nii.gz")
    print(json.dumps({"base": base, "peak": peak, "shape": list(seg.shape), "written": summary["counts"]["written"],
                      "labels": sorted(int(v) for v in np.unique(np.asarray(seg.dataobj))), "wall_s": summary["wall_s"]}))
''')


@pytest.mark.slow
def test_fullsize_two_channel_prediction_has_bounded_memory(tmp_path):
    rng = np.random.default_rng(0)  # the inputs are written here, so the measured process only predicts
    for ch in range(2):
        img = rng.normal(0, 1, SHAPE).astype(np.float32)
        img[100:140, 90:150, 60:100] += 3.0
        write_nifti(img, tmp_path / "in" / f"big_{ch:04d}.nii", np.diag([-1.0, -1.0, 1.0, 1.0]))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), json.dumps(SHAPE)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    grown = out["peak"] - out["base"]
    print(f"\nfull-size predict: base RSS {out['base'] / 2**20:.0f} MiB, peak {out['peak'] / 2**20:.0f} MiB, "
          f"grown {grown / 2**20:.0f} MiB = {grown / V_BYTES:.1f} V (V = {V_BYTES / 2**20:.0f} MiB), "
          f"{out['wall_s']} s")
    assert out["shape"] == list(SHAPE) and out["written"] == 1 and set(out["labels"]) <= {0, 1, 2, 4}
    assert grown < BOUND_V * V_BYTES
