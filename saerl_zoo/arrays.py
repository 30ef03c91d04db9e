"""Validated 1-D numeric inputs: lists, numpy arrays and (possibly GPU) tensors alike.

Why a module of its own: the sampler (order) and the quality filter
(properties) both take per-prompt arrays from users, and the filter must not
import the sampler (imports follow the data flow; tests/test_import_graph.py).
"""

from __future__ import annotations

from typing import Any, Union

import numpy as np
import numpy.typing as npt
import torch

__all__ = ["ArrayLike", "check_finite", "check_int", "to_vector"]

ArrayLike = Union[npt.ArrayLike, torch.Tensor]


def to_vector(values: ArrayLike, name: str, n: int | None = None) -> np.ndarray:
    """One 1-D numpy view of lists, arrays and (possibly GPU) tensors alike."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if n is not None and len(array) != n:
        raise ValueError(f"{name} has length {len(array)}, expected n={n}")
    return array


def check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_finite(array: np.ndarray, name: str) -> np.ndarray:
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{name} must be real numbers, got dtype {array.dtype}")
    array = array.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(array))
    if len(bad):
        raise ValueError(f"{name} has {len(bad)} NaN/inf values (first at index {bad[0]})")
    return array
