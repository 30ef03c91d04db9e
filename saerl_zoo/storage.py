"""Atomic, pickle-free storage for the project's artifacts.

Every artifact (feature matrices, cache shards, probes, clusterings, reports) is
written to a temporary file in the destination folder and renamed into place, so
a killed job leaves either the old file or the new one, never half of one.
Sparse matrices are stored as CSR triplets in safetensors, which loads without
running code and memory-maps cheaply.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing file: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"corrupt JSON in {path}: {err}") from err


def write_tensors(path: str | os.PathLike[str], tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    with atomic_path(path) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp), metadata=metadata)


def read_tensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing file: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"corrupt safetensors file {path}: {err}") from err


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata of a safetensors file (what `write_tensors` was given), without loading its tensors."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing file: {path}")
    try:
        with safe_open(str(path), "np") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"corrupt safetensors file {path}: {err}") from err


def save_csr(path: str | os.PathLike[str], matrix: sp.csr_matrix, metadata: dict[str, str] | None = None) -> None:
    """Save a CSR matrix (rows = prompts, columns = SAE features) as safetensors."""
    matrix = sp.csr_matrix(matrix)
    write_tensors(
        path,
        {
            "indptr": matrix.indptr.astype(np.int64),
            "indices": matrix.indices.astype(np.int32),
            "values": matrix.data.astype(np.float32),
            "shape": np.asarray(matrix.shape, dtype=np.int64),
        },
        metadata,
    )


def load_csr(path: str | os.PathLike[str]) -> sp.csr_matrix:
    t = read_tensors(path)
    missing = {"indptr", "indices", "values", "shape"} - t.keys()
    if missing:
        raise ValueError(f"{path} is not a saerl-zoo feature file (missing {sorted(missing)})")
    n, d = (int(x) for x in t["shape"])
    return sp.csr_matrix((t["values"], t["indices"], t["indptr"]), shape=(n, d))
