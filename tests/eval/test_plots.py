"""Plots: reconstruction grids (2D and 3D) and training curves from a Lightning-style metrics.csv."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from medssl.eval.plots import display_slice, reconstruction_grid, training_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Lightning's CSVLogger: train and val metrics on separate rows, empty cells elsewhere
METRICS = """epoch,step,train_loss,val_loss,lr
0,9,2.50,,0.001
0,19,1.10,,0.001
0,19,,1.30,
1,29,0.40,,0.001
1,39,0.08,,0.001
1,39,,0.20,
"""


def is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("shape", [(3, 1, 16, 12), (10, 2, 6, 8, 10)], ids=["2d", "3d"])
def test_reconstruction_grid_writes_png(tmp_path, shape):
    x = torch.rand(shape)
    masked = x.clone()
    masked[:, :, :4] = 0
    out = reconstruction_grid({"input": x, "masked": masked, "reconstruction": x + 0.1 * torch.randn(shape)},
                              tmp_path / "sub" / "grid.png", title="epoch 3", max_rows=4)
    assert out == tmp_path / "sub" / "grid.png" and is_png(out)
    assert plt.get_fignums() == []  # no pyplot state left behind


def test_display_slice_is_middle_of_last_axis():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(display_slice(x), x[0, :, :, 2].numpy())
    np.testing.assert_array_equal(display_slice(x[:, 0]), x[0, 0].numpy())


def test_reconstruction_grid_rejects_mismatched_batches(tmp_path):
    with pytest.raises(ValueError, match="batch"):
        reconstruction_grid({"a": torch.rand(2, 1, 4, 4), "b": torch.rand(3, 1, 4, 4)}, tmp_path / "g.png")


def test_training_curves_from_interleaved_rows(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text(METRICS)
    out = training_curves(csv, tmp_path / "curves.png")
    assert is_png(out)
    assert is_png(training_curves(csv, tmp_path / "lr.png", keys=["lr"]))
    assert plt.get_fignums() == []


def test_training_curves_errors(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text("epoch,step,acc\n0,1,0.5\n")
    with pytest.raises(ValueError, match="loss"):
        training_curves(csv, tmp_path / "c.png")
    with pytest.raises(ValueError, match="missing_key"):
        training_curves(csv, tmp_path / "c.png", keys=["missing_key"])
    assert not (tmp_path / "c.png").exists()
