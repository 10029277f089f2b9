"""Which training items are labelled: seeded, stratified label subsets, recorded so every result can be redone.

:func:`label_subset` draws a fraction (``fraction=0.01``) or a number (``count=50``) of a split's items, by
default stratified by class with at least ``min_per_class`` items of each class present, or exactly ``k`` items of
every class (``per_class=k``; a class with fewer items is taken whole). It uses its own
:class:`numpy.random.Generator`, seeded from ``(seed, class)``, so the draw depends on the labels and the seed
only, never on the global random state or on what ran before. Within one class the items are taken from the
front of one seeded permutation, so for the same seed a smaller subset is contained in a larger one whenever every
class's share grows (the usual case): label-efficiency curves compare nested label sets, not unrelated draws.
``per_class=k`` takes the first ``k`` items of the same permutations, so for one seed the 1-per-class subset lies
inside the 5-per-class one, which lies inside the 10-per-class one (and inside any fraction or count draw that gives
every class at least ``k`` items).

Sizes: ``count`` is exact (ValueError when ``count`` cannot hold ``min_per_class`` items of every class);
``fraction`` gives ``round(fraction * N)`` items (at least 1), raised to the per-class minimum when that is
larger, so a 1% subset of a small split still sees every class. ``fraction=1.0`` is the whole split.
``per_class`` gives ``sum(min(k, class size))`` items; it is stratified by construction (``stratified=False`` is
refused) and ``min_per_class`` does not apply.

Classes share the total in proportion to their frequency (largest-remainder rounding, ties to the lower class
index), after each class has received its minimum; a class smaller than ``min_per_class`` is taken whole.

:class:`SubsetRecord` is the JSON-serialisable account of a draw (request, seed, sorted indices, class counts)
that the protocols write beside every result; records written before ``per_class`` existed load with
``per_class=None``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["SubsetRecord", "label_subset"]


def _labels_1d(labels: Any) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"labels must be (N,) or (N, 1) class indices, got shape {arr.shape} (multi-label "
                         "subsets are not supported)")
    if arr.size == 0:
        raise ValueError("labels are empty: nothing to draw a subset from")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise ValueError(f"labels must be integer class indices, got dtype {arr.dtype}")
    if arr.min() < 0:
        raise ValueError(f"labels must be class indices >= 0, found {arr.min()}")
    return arr.astype(np.int64)


def _requested_size(n: int, fraction: float | None, count: int | None, per_class: int | None) -> int | None:
    """Total items asked for by ``fraction`` or ``count``; None for ``per_class`` (sized per class)."""
    if sum(v is not None for v in (fraction, count, per_class)) != 1:
        raise ValueError("give exactly one of fraction=, count= or per_class=")
    if per_class is not None:
        if isinstance(per_class, bool) or int(per_class) != per_class or per_class < 1:
            raise ValueError(f"per_class must be an integer >= 1 (items of every class), got {per_class!r}")
        return None
    if fraction is not None:
        if isinstance(fraction, bool) or not 0 < float(fraction) <= 1:
            raise ValueError(f"fraction must lie in (0, 1], got {fraction!r}")
        return max(1, round(float(fraction) * n))
    if isinstance(count, bool) or int(count) != count or not 1 <= int(count) <= n:
        raise ValueError(f"count must be an integer in 1..{n} (the number of items), got {count!r}")
    return int(count)


def _allocate(sizes: np.ndarray, n: int, minimum: np.ndarray) -> np.ndarray:
    """Items per class: ``minimum`` first, then proportional shares of ``n`` by largest remainder."""
    target = n * sizes / sizes.sum()
    alloc = np.clip(np.floor(target).astype(np.int64), minimum, sizes)
    while alloc.sum() > n:  # minimums pushed the floors over n: take back from the most over-served class
        room = np.where(alloc > minimum, alloc - target, -np.inf)
        alloc[int(np.argmax(room))] -= 1
    while alloc.sum() < n:  # hand out the rest to the classes furthest below their share
        need = np.where(alloc < sizes, target - alloc, -np.inf)
        alloc[int(np.argmax(need))] += 1
    return alloc


def _permutation(seed: int, stream: list[int], values: np.ndarray) -> np.ndarray:
    return np.random.default_rng([int(seed), *stream]).permutation(values)


def label_subset(labels: Any, *, fraction: float | None = None, count: int | None = None,
                 per_class: int | None = None, seed: int, stratified: bool = True,
                 min_per_class: int = 1) -> np.ndarray:
    """Sorted ``int64`` indices of the labelled items of a split (see module docstring).

    Args:
        labels: ``(N,)`` or ``(N, 1)`` integer class labels of the whole split.
        fraction: share of the split to label, in ``(0, 1]``.
        count: number of items to label (exclusive with ``fraction``).
        per_class: items to label of every class (exclusive with ``fraction`` and ``count``); a class with fewer
            items is taken whole.
        seed: the draw's seed; the same labels and seed always give the same indices.
        stratified: classes share the items in proportion to their frequency; False draws the items beyond the
            per-class minimum uniformly from the rest of the split (not with ``per_class``).
        min_per_class: every class present in ``labels`` gets at least this many items (all of its items if it
            has fewer); 0 disables the guarantee. Not used by ``per_class``.
    """
    y = _labels_1d(labels)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if isinstance(min_per_class, bool) or int(min_per_class) != min_per_class or min_per_class < 0:
        raise ValueError(f"min_per_class must be an integer >= 0, got {min_per_class!r}")
    n_total = len(y)
    n = _requested_size(n_total, fraction, count, per_class)
    classes, sizes = np.unique(y, return_counts=True)
    members = [np.flatnonzero(y == c) for c in classes]
    orders = [_permutation(seed, [0, int(c)], m) for c, m in zip(classes, members)]
    if per_class is not None:
        if not stratified:
            raise ValueError("per_class draws k items of every class, stratified by construction; "
                             "stratified=False applies to fraction= and count= only")
        return np.sort(np.concatenate([order[:int(per_class)] for order in orders])).astype(np.int64)
    minimum = np.minimum(sizes, int(min_per_class))
    if n < minimum.sum():
        if count is not None:
            raise ValueError(f"count={count} cannot hold min_per_class={min_per_class} item(s) of each of the "
                             f"{len(classes)} classes (needs {int(minimum.sum())}); raise count or lower "
                             "min_per_class")
        n = int(minimum.sum())
    if n >= n_total:
        return np.arange(n_total, dtype=np.int64)
    if stratified:
        alloc = _allocate(sizes, n, minimum)
        chosen = np.concatenate([order[:k] for order, k in zip(orders, alloc)])
    else:
        guaranteed = np.concatenate([order[:k] for order, k in zip(orders, minimum)])
        rest = np.setdiff1d(np.arange(n_total), guaranteed)
        chosen = np.concatenate([guaranteed, _permutation(seed, [1], rest)[:n - len(guaranteed)]])
    return np.sort(chosen).astype(np.int64)


@dataclass
class SubsetRecord:
    """One recorded draw: what was asked (``fraction``, ``count`` or ``per_class``, ``seed``, policy) and what was
    labelled.

    ``class_counts`` maps the class index (as a string: JSON object keys) to the number of labelled items (below
    ``per_class`` for a class that had fewer items). A ``per_class`` draw records ``stratified=True`` and
    ``min_per_class=per_class``, the policy it applied.
    """

    seed: int
    fraction: float | None = None
    count: int | None = None
    per_class: int | None = None
    stratified: bool = True
    min_per_class: int = 1
    split: str = "train"
    n_total: int = 0
    n_labelled: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)
    indices: list[int] = field(default_factory=list)

    @classmethod
    def draw(cls, labels: Any, *, seed: int, fraction: float | None = None, count: int | None = None,
             per_class: int | None = None, stratified: bool = True, min_per_class: int = 1,
             split: str = "train") -> SubsetRecord:
        """:func:`label_subset` and its record in one call."""
        y = _labels_1d(labels)
        idx = label_subset(y, fraction=fraction, count=count, per_class=per_class, seed=seed,
                           stratified=stratified, min_per_class=min_per_class)
        classes, counts = np.unique(y[idx], return_counts=True)
        if per_class is not None:
            min_per_class = per_class
        return cls(seed=int(seed), fraction=None if fraction is None else float(fraction),
                   count=None if count is None else int(count),
                   per_class=None if per_class is None else int(per_class), stratified=bool(stratified),
                   min_per_class=int(min_per_class), split=split, n_total=len(y), n_labelled=len(idx),
                   class_counts={str(int(c)): int(k) for c, k in zip(classes, counts)},
                   indices=[int(i) for i in idx])

    @property
    def size_key(self) -> tuple[str, float]:
        """``("fraction", f)``, ``("count", c)`` or ``("per_class", k)``: how the size was asked for."""
        if self.per_class is not None:
            return "per_class", float(self.per_class)
        return ("fraction", self.fraction) if self.fraction is not None else ("count", float(self.count or 0))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SubsetRecord:
        return cls(**data)
