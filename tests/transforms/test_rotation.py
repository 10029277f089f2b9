"""Rotation-prediction transform: every label round-trips exactly, distinct labels give distinct images, the 3D
class table is the documented one, batches are rotated item by item, seeded draws repeat, non-cubic inputs."""
from __future__ import annotations

import pytest
import torch

from medssl.transforms.rotation import (center_crop_to_cube, inverse, inverse_batch, num_rotations, random_rotation,
                                        rotate, rotate_batch, rotation_of)


def generic(spatial_dims: int, size: int = 5) -> torch.Tensor:
    """A volume with no symmetry: all voxel values distinct."""
    return torch.randperm(size ** spatial_dims, generator=torch.Generator().manual_seed(0)).float().view(
        1, 1, *(size,) * spatial_dims)


@pytest.mark.parametrize("spatial_dims, classes", [(2, 4), (3, 10)])
def test_labels_round_trip_and_are_distinct(spatial_dims: int, classes: int) -> None:
    x = generic(spatial_dims)
    assert num_rotations(spatial_dims) == classes
    images = []
    for label in range(classes):
        r = rotate(x, label, spatial_dims)
        assert r.shape == x.shape
        assert torch.equal(inverse(r, label, spatial_dims), x)
        images.append(r)
    for i in range(classes):
        for j in range(i + 1, classes):
            assert not torch.equal(images[i], images[j]), (i, j)


def test_3d_class_table() -> None:
    x = generic(3)[0, 0]
    assert torch.equal(rotate(x, 0, 3), x)
    for label in range(1, 10):
        axis, k = (label - 1) // 3, (label - 1) % 3 + 1
        plane = [(1, 2), (2, 0), (0, 1)][axis]
        assert rotation_of(label, 3) == (plane, k)
        rotated = rotate(x, label, 3)
        assert torch.equal(rotated, torch.rot90(x, k, plane))
        # a rotation about an axis keeps every slice across that axis as a set of values
        for i in range(x.shape[axis]):
            values = x.select(axis, i).flatten().sort().values
            assert torch.equal(rotated.select(axis, i).flatten().sort().values, values)
    with pytest.raises(ValueError, match="label"):
        rotate(x, 10, 3)


def test_2d_label_is_quarter_turns() -> None:
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert torch.equal(rotate(x, 1, 2), torch.tensor([[2.0, 4.0], [1.0, 3.0]]))  # torch.rot90 convention
    assert torch.equal(rotate(rotate(x, 1, 2), 1, 2), rotate(x, 2, 2))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_random_rotation_batch_round_trips_and_is_seeded(spatial_dims: int) -> None:
    x = torch.rand(16, 2, *(6,) * spatial_dims)
    r, labels = random_rotation(x, torch.Generator().manual_seed(3))
    r2, labels2 = random_rotation(x, torch.Generator().manual_seed(3))
    assert torch.equal(r, r2) and torch.equal(labels, labels2)
    assert labels.dtype == torch.long and 0 <= labels.min() and labels.max() < num_rotations(spatial_dims)
    assert len(labels.unique()) > 1
    for i in range(len(x)):
        assert torch.equal(r[i], rotate(x[i], int(labels[i]), spatial_dims))
    assert torch.equal(inverse_batch(r, labels), x)
    assert torch.equal(rotate_batch(x, labels), r)


def test_non_cubic_inputs() -> None:
    x = torch.rand(2, 1, 8, 6, 4)
    assert torch.equal(inverse(rotate(x, 2, 3), 2, 3), x)  # half turns keep any shape
    with pytest.raises(ValueError, match="center_crop_to_cube"):
        rotate(x, 1, 3)
    cube = center_crop_to_cube(x)
    assert cube.shape == (2, 1, 4, 4, 4) and torch.equal(cube, x[:, :, 2:6, 1:5, :])
    r, labels = random_rotation(cube, torch.Generator().manual_seed(0))
    assert torch.equal(inverse_batch(r, labels), cube)
    assert center_crop_to_cube(torch.rand(1, 1, 7, 5)).shape == (1, 1, 5, 5)
