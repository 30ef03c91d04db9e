"""Fit a probe from the files the CLI passes between commands (features, prompts, labels).

`saerl-zoo fit-probe` and `saerl-zoo prepare` both fit here, so the labels
are aligned to feature rows, and the quality probe's per-defect report is
switched on, one way only.
"""

from __future__ import annotations

import os
from typing import Any

from saerl_zoo.errors import UserError

__all__ = ["fit_probe_files"]


def fit_probe_files(
    features: str | os.PathLike[str],
    prompts: str | os.PathLike[str],
    labels: str | os.PathLike[str],
    kind: str,
    *,
    label_field: str | None = None,
    pass_rate: bool = True,
    estimator: str = "logistic",
    seed: int = 0,
) -> Any:
    """A fitted `DifficultyProbe` or `QualityProbe` on the labelled rows of `prompts` (one row per feature row).

    Difficulty targets are ``1 - pass_rate`` unless `pass_rate` is False (then
    the label field is the target as is). A quality label file with a
    `defect` field (`label --kind quality` writes one) also gets a held-out
    AUROC per defect kind.
    """
    from saerl_zoo.data import align_labels, load_rows
    from saerl_zoo.difficulty import DifficultyProbe
    from saerl_zoo.quality import QualityProbe, label_defects
    from saerl_zoo.storage import load_csr

    X = load_csr(features)
    rows = load_rows(prompts, prompt_field=None)
    if len(rows) != X.shape[0]:
        raise UserError(f"{X.shape[0]} feature rows but {len(rows)} prompts ({features}, {prompts}): featurize this prompt set first")
    field = label_field or ("pass_rate" if kind == "difficulty" else "label")
    label_rows = load_rows(labels, prompt_field=None)
    index, values = align_labels(rows, label_rows, field, bounds=(0, 1) if kind == "difficulty" and pass_rate else None,
                                 binary=kind == "quality" and estimator == "logistic")
    if kind == "difficulty":
        target = 1.0 - values if pass_rate else values
        return DifficultyProbe.fit(X[index], target, seed=seed, target="1 - pass rate" if pass_rate else field)
    if kind != "quality":
        raise UserError(f"probe kind must be difficulty or quality, got {kind!r}")
    defects = label_defects(label_rows) if estimator == "logistic" else None
    return QualityProbe.fit(X[index], values, kind=estimator, seed=seed, defects=defects)
