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
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from saerl_zoo.errors import UserError, bounded_list

CACHE_ENV = "SAERL_ZOO_CACHE"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only on success.

    The file gets mode 0666 less the user's umask, as `open` would give `path`
    itself: `tempfile.mkstemp` makes 0600 files, and some writers (safetensors)
    recreate the file they are given, so the mode is set again before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path)
    mode = tmp.stat().st_mode & 0o777  # 0666 & ~umask, applied by the kernel: no umask() call, no race
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a new empty folder next to `path`; on success it replaces `path` (and any old one), else it is removed.

    For artifacts of several files (checkpoints, converted models): a reader
    sees the old folder or the finished new one. Modes follow the umask, as
    for `atomic_path` (`tempfile.mkdtemp` would make the folder 0700).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path, folder=True)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _create_temporary(path: Path, folder: bool = False) -> Path:
    """A new `.<name>.<random>.tmp` file (or folder) next to `path`, created exclusively with the umask's mode."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            if folder:
                os.mkdir(tmp, 0o777)
            else:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:  # 48 random bits: a clash is vanishingly rare, but never clobber a file
            continue
        return tmp


def cache_root() -> Path:
    """saerl-zoo's own cache folder (converted packaged models, feature shards): $SAERL_ZOO_CACHE, else ~/.cache/saerl_zoo."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "saerl_zoo")


class OutputExistsError(UserError):
    """An output that already holds results and was not declared replaceable (`--overwrite`)."""


def check_output(path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Refuse an existing file or non-empty folder as an output unless `overwrite`.

    Called before any work, so a refused command writes nothing: a finished
    result is never replaced by accident. With `overwrite` the command replaces
    the files it writes; other files in the folder stay.
    """
    path = Path(path)
    if overwrite or not path.exists():
        return path
    if not path.is_dir():
        raise OutputExistsError(f"{path} already exists: give --overwrite to replace it, or another --out")
    held = sorted(p.name for p in path.iterdir())
    if held:
        raise OutputExistsError(
            f"{path} is not empty (it holds {bounded_list(held, 3)}): give --overwrite to replace its files, or another --out"
        )
    return path


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> None:
    """One JSON object per line, written atomically (labels, pools: what `data.load_rows` reads back)."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))


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
