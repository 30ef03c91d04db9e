"""Prompt sets and label files on disk: jsonl or parquet rows, matched by id."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np


def load_rows(path: str | os.PathLike[str], prompt_field: str | None = "prompt") -> list[dict[str, Any]]:
    """Read jsonl or parquet rows; unless `prompt_field` is None, check each has text there."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    elif path.suffix in (".jsonl", ".json"):
        rows = []
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{lineno} is not valid JSON: {err}") from err
    else:
        raise ValueError(f"unsupported prompt file type {path.suffix!r}: use .jsonl or .parquet")
    if not rows:
        raise ValueError(f"{path} holds no prompts")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: row {i} is not a JSON object")
        if prompt_field is None:
            continue
        value = row.get(prompt_field)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{path}: row {i} has no text in field {prompt_field!r}")
    return rows


def align_labels(
    rows: list[dict[str, Any]], labels: list[dict[str, Any]], field: str, id_field: str = "id"
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the labelled prompts and their label values, matched by `id_field`.

    Labels usually cover a small subset of the pool (the paper labels at most
    10%), so they live in their own file and are joined here.
    """
    position = {}
    for i, row in enumerate(rows):
        if id_field not in row:
            raise ValueError(f"prompt row {i} has no {id_field!r} field to match labels on")
        position[row[id_field]] = i
    index, values = [], []
    for j, label in enumerate(labels):
        if id_field not in label or field not in label:
            raise ValueError(f"label row {j} needs fields {id_field!r} and {field!r}")
        if label[id_field] not in position:
            raise ValueError(f"label row {j} names unknown prompt id {label[id_field]!r}")
        index.append(position[label[id_field]])
        values.append(label[field])
    return np.asarray(index, dtype=np.int64), np.asarray(values, dtype=np.float64)
