"""Quality labels without a human: broken prompts made from the user's own prompts.

Why: the quality probe needs good and bad examples *of the user's distribution*
(their wording, their template, their topics), and most users have no labels.
A seeded sample of their prompts is split in two: one half is written as it is
(label 1, good), the other half is broken by the defects of `saerl_zoo.defects`
(truncation, off-topic text, near-duplicates, corrupted numbers; label 0), each
kind an equal share. The probe then learns what a broken prompt of this set
looks like. The sampled prompts themselves may hold real defects; they are
labelled good all the same, the price of needing no labels.

Human labels (jsonl of ``id`` and ``label``, 1 good and 0 bad, optionally a
``defect`` kind) are added to the synthetic ones; with ``count=0`` they are
used instead of them. Prompts a human labelled are never sampled.

The output is one jsonl that is both a prompt set and a label file, so
``featurize --prompts OUT`` and ``fit-probe --kind quality --prompts OUT
--labels OUT`` read it as it is; its ``defect`` field gives the fitted probe a
held-out AUROC per defect kind.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

from saerl_zoo.data import Rows, align_labels, index_by_id, load_rows, where
from saerl_zoo.defects import TEXT_DEFECTS, Template, shared_template
from saerl_zoo.errors import UserError
from saerl_zoo.labelled_subset import DEFAULT_FRACTION, subset_size
from saerl_zoo.probe import labels_needed
from saerl_zoo.quality import HELDOUT_FRACTION, label_defects
from saerl_zoo.storage import atomic_path, check_output

# Draws of one defect on one prompt before it counts as not applying: a draw can
# repeat a prompt of the set (a cut that leaves another prompt's text).
TRIES = 10


def label_quality(prompts: Path, out: Path, *, fraction: float | None, count: int | None, seed: int,
                  prompt_field: str, human_labels: Path | None, overwrite: bool) -> dict[str, Any]:
    """Write self-supervised quality labels for `prompts` to the jsonl `out`; return what was written.

    `count` prompts, or `fraction` of the set (default `DEFAULT_FRACTION`), are
    sampled with `seed`: half stay good, half are broken. Each row carries
    ``id``, the text under `prompt_field`, ``label``, ``defect`` (kind or
    null) and ``source_id`` (the prompt it was made from). The summary counts
    rows per label and defect kind, the defects that could not apply
    (``skipped``), and the template the defects left intact.
    """
    out = Path(out)
    if out.suffix != ".jsonl":
        raise UserError(f"{out}: quality labels are written as jsonl; give an --out ending in .jsonl")
    check_output(out, overwrite=overwrite)
    rows = load_rows(prompts, prompt_field)
    index_by_id(rows, "id", "prompt")
    human = _human_rows(rows, human_labels, prompt_field) if human_labels is not None else []
    labelled = {r["id"] for r in human}
    free = [i for i, r in enumerate(rows) if r["id"] not in labelled]
    n = _sample_size(len(rows), len(free), fraction, count)

    rng = random.Random(seed)
    sample = rng.sample(free, n)
    n_bad = n // 2
    texts = [r[prompt_field] for r in rows]
    template = shared_template(texts)
    good = [_row(rows[i]["id"], texts[i], 1, None, rows[i]["id"], prompt_field) for i in sample[: n - n_bad]]
    bad, skipped = _broken_rows(rows, sample[n - n_bad:], prompt_field, template, rng)
    labels = good + bad + human
    _check_enough(labels, n, len(rows), fraction, count)
    rng.shuffle(labels)
    with atomic_path(out) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in labels))
    kinds = Counter(r["defect"] for r in labels if r["defect"] is not None)
    return {
        "out": str(out), "prompts": len(rows), "rows": len(labels),
        "good": sum(r["label"] == 1 for r in labels), "bad": sum(r["label"] == 0 for r in labels), "human": len(human),
        "defects": dict(sorted(kinds.items())), "skipped": skipped,
        "template": {"prefix": template.prefix, "suffix": template.suffix},
        "note": _note(skipped, kinds, n_bad),
    }


def _row(row_id: Any, text: str, label: int, defect: str | None, source_id: Any, prompt_field: str) -> dict[str, Any]:
    return {"id": row_id, prompt_field: text, "label": label, "defect": defect, "source_id": source_id}


def _sample_size(n_rows: int, available: int, fraction: float | None, count: int | None) -> int:
    """How many prompts to sample (`labelled_subset.subset_size` of the whole set), within the unlabelled ones."""
    n = subset_size(n_rows, fraction=fraction, count=count, source="the prompt set", allow_zero=True)
    if n > available:
        raise UserError(f"cannot sample {n} prompts: the set has {available} without a human label")
    return n


def _human_rows(rows: Rows, path: Path, prompt_field: str) -> list[dict[str, Any]]:
    """Output rows for a human label file: each label 0 or 1, a defect kind only on a 0, named by `file:line`."""
    labels = load_rows(path, prompt_field=None)
    index, values = align_labels(rows, labels, "label")
    kinds = label_defects(labels) or [None] * len(labels)
    out = []
    for j, (i, value, kind) in enumerate(zip(index, values, kinds)):
        if value not in (0.0, 1.0):
            raise UserError(f"{where(labels, j, 'label')}: 'label' is {value:g}; quality labels are 1 (good) or 0 (bad)")
        if kind is not None and value == 1:
            raise UserError(f"{where(labels, j, 'label')}: label 1 (good) with defect {kind!r}; a defect belongs to a bad (0) prompt")
        out.append(_row(rows[i]["id"], rows[i][prompt_field], int(value), kind, rows[i]["id"], prompt_field))
    return out


def _broken_rows(rows: Rows, sources: list[int], prompt_field: str, template: Template,
                 rng: random.Random) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """One broken row per source prompt, the kinds taken in turn; a kind that cannot apply to a
    prompt (`skipped`) hands it to the next kind, so every source still gives a broken row if any kind can."""
    kinds = list(TEXT_DEFECTS)
    taken = {r[prompt_field] for r in rows}  # a broken row never repeats a prompt of the set, nor another broken row
    used_ids = {r["id"] for r in rows}
    skipped = dict.fromkeys(kinds, 0)
    out = []
    for j, i in enumerate(sources):
        statement = template.statement(rows[i][prompt_field])
        for kind in kinds[j % len(kinds):] + kinds[: j % len(kinds)]:
            text = _draw(kind, statement, template, taken, rng)
            if text is not None:
                row_id = _new_id(f"{rows[i]['id']}~{kind}", used_ids)
                out.append(_row(row_id, text, 0, kind, rows[i]["id"], prompt_field))
                break
            skipped[kind] += 1
    return out, skipped


def _draw(kind: str, statement: str, template: Template, taken: set[str], rng: random.Random) -> str | None:
    """`kind` applied to `statement`, wrapped in the template: a text not in `taken` (then added), or None."""
    for _ in range(TRIES):
        broken = TEXT_DEFECTS[kind](statement, rng)
        if broken is None:
            return None
        text = template.wrap(broken)
        if text not in taken:
            taken.add(text)
            return text
    return None


def _new_id(wanted: str, used: set[Any]) -> str:
    """`wanted`, or `wanted~2`, `wanted~3`... if a prompt of the set already has that id."""
    row_id, k = wanted, 1
    while row_id in used:
        k += 1
        row_id = f"{wanted}~{k}"
    used.add(row_id)
    return row_id


def _check_enough(labels: list[dict[str, Any]], n: int, n_rows: int, fraction: float | None, count: int | None) -> None:
    """Refuse, before writing, labels too few to fit and score a quality probe."""
    need = labels_needed(HELDOUT_FRACTION, classes=True)
    good, bad = sum(r["label"] == 1 for r in labels), sum(r["label"] == 0 for r in labels)
    if min(good, bad) >= need:
        return
    asked = f"--count {count}" if count is not None else f"{fraction if fraction is not None else DEFAULT_FRACTION:.0%} of {n_rows} prompts"
    raise UserError(
        f"{good} good and {bad} bad labels ({asked}: {n} sampled) are too few for a quality probe, which needs "
        f"{need} of each; sample at least {2 * need} prompts (--count) or bring a larger prompt set"
    )


def _note(skipped: dict[str, int], kinds: Counter, n_bad: int) -> str | None:
    """One line when a defect kind could not apply to some sampled prompts (and others took its share)."""
    missed = {k: n for k, n in skipped.items() if n}
    if not missed:
        return None
    parts = ", ".join(f"{k} on {n} ({kinds.get(k, 0)} made)" for k, n in missed.items())
    return f"some defects could not apply to their prompts (too short, or no numbers): {parts}; the other kinds took their share of the {n_bad} broken prompts"
