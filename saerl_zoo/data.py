"""Prompt sets and label files on disk: jsonl or parquet rows, matched by id.

Every message about one input row names it as `file:line` (lines counted from
1, as editors and compilers do; the row number in a parquet file), whichever
check finds the fault, so the user can jump straight to it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


class Rows(list):
    """Rows read from a file, each remembering its 1-based line: a later check can point at the line it came from."""

    def __init__(self, rows: Iterable[dict[str, Any]], path: str | os.PathLike[str], lines: Iterable[int]):
        super().__init__(rows)
        self.path = Path(path)
        self.lines = list(lines)

    def subset(self, indices: Iterable[int]) -> Rows:
        """The rows at `indices`, still naming their own lines."""
        indices = list(indices)
        return Rows([self[i] for i in indices], self.path, [self.lines[i] for i in indices])


def where(rows: Sequence[Any], i: int, what: str = "row") -> str:
    """`file:line` of row `i` when `rows` came from `load_rows`, else `<what> N` counted from 1 like a line."""
    if isinstance(rows, Rows) and len(rows.lines) == len(rows):
        return f"{rows.path}:{rows.lines[i]}"
    return f"{what} {i + 1}"


def load_rows(path: str | os.PathLike[str], prompt_field: str | None = "prompt") -> Rows:
    """Read jsonl or parquet rows; unless `prompt_field` is None, check each has text there."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path).to_pylist()
        rows = Rows(table, path, range(1, len(table) + 1))
    elif path.suffix in (".jsonl", ".json"):
        rows = Rows([], path, [])
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{lineno} is not valid JSON: {err}") from err
                rows.lines.append(lineno)
    else:
        raise ValueError(f"unsupported prompt file type {path.suffix!r}: use .jsonl or .parquet")
    if not rows:
        raise ValueError(f"{path} holds no prompts")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{where(rows, i)} is not a JSON object")
        if prompt_field is None:
            continue
        value = row.get(prompt_field)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{where(rows, i)} has no text in field {prompt_field!r}")
    return rows


def read_texts(path: str | os.PathLike[str], field: str = "text") -> list[str]:
    """Texts of a jsonl/parquet file (`field` of each row) or of a .txt file (one text per non-empty line)."""
    path = Path(path)
    if path.suffix.lower() == ".txt":
        if not path.is_file():
            raise FileNotFoundError(f"corpus file not found: {path}")
        texts = [line for line in path.read_text().splitlines() if line.strip()]
        if not texts:
            raise ValueError(f"{path} holds no text")
        return texts
    return [row[field] for row in load_rows(path, field)]


def index_by_id(rows: Sequence[dict[str, Any]], id_field: str, what: str) -> dict[Any, int]:
    """Map each row's id to its index; refuse a missing, non-scalar or repeated id (a label must match one prompt)."""
    position: dict[Any, int] = {}
    repeated: dict[Any, list[int]] = {}
    for i, row in enumerate(rows):
        if id_field not in row:
            raise ValueError(f"{where(rows, i, what)} has no {id_field!r} field to match labels on")
        key = row[id_field]
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            raise ValueError(f"{where(rows, i, what)}: {id_field!r} is {key!r}; ids must be strings or integers")
        if key in position:
            repeated.setdefault(key, [position[key]]).append(i)
        else:
            position[key] = i
    if repeated:
        key, at = next(iter(repeated.items()))
        others = f" ({len(repeated)} ids repeat)" if len(repeated) > 1 else ""
        raise ValueError(
            f"{what} id {key!r} appears {len(at)} times: {', '.join(where(rows, i, what) for i in at)}{others}; "
            f"{what} ids must be unique"
        )
    return position


def align_labels(
    rows: list[dict[str, Any]], labels: list[dict[str, Any]], field: str, id_field: str = "id", *,
    bounds: tuple[float, float] | None = None, binary: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the labelled prompts and their label values, matched by `id_field`.

    Labels usually cover a small subset of the pool (the paper labels at most
    10%), so they live in their own file and are joined here. Ids must be
    unique on both sides and every value a finite number: a repeated id would
    count one prompt twice (or match the wrong one), and a NaN would only
    surface later, without its line. `bounds` (a pass rate's `(0, 1)`) and
    `binary` (0/1 quality labels) refuse other values here, with the line,
    rather than as a wrong target or a bare error inside a probe's fit.
    """
    position = index_by_id(rows, id_field, "prompt")
    index_by_id(labels, id_field, "label")
    index, values = [], []
    for j, label in enumerate(labels):
        if field not in label:
            raise ValueError(f"{where(labels, j, 'label')} has no {field!r} field")
        if label[id_field] not in position:
            raise ValueError(f"{where(labels, j, 'label')} names unknown prompt id {label[id_field]!r}")
        value = label[field]
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{where(labels, j, 'label')}: {field!r} is {value!r}, not a finite number")
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            raise ValueError(f"{where(labels, j, 'label')}: {field!r} is {value!r}, outside [{bounds[0]:g}, {bounds[1]:g}]")
        if binary and value not in (0, 1):
            raise ValueError(f"{where(labels, j, 'label')}: {field!r} is {value!r}; expected 0 or 1")
        index.append(position[label[id_field]])
        values.append(float(value))
    return np.asarray(index, dtype=np.int64), np.asarray(values, dtype=np.float64)
