"""A stitch's fitting corpus that is disjoint from the evaluation prompts by construction.

A stitch evaluated on prompts it was fitted on flatters every transfer number,
and "held out" has to hold for the text, not only for the record it came from:
short generated problems repeat ("Q: GCD of 5, 5?"), so a freshly drawn task
problem can contain an evaluation prompt verbatim. A candidate text is
dropped when any evaluation prompt occurs anywhere inside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def containing(texts: Sequence[str], prompts: Iterable[str]) -> list[int]:
    """Indices of the texts that contain at least one of `prompts` as a substring."""
    prompts = sorted(set(prompts), key=len)
    return [i for i, text in enumerate(texts) if any(p in text for p in prompts)]


def disjoint_texts(candidates: Sequence[str], prompts: Iterable[str], n: int) -> list[str]:
    """The first `n` candidates that contain no prompt; refuses when fewer than `n` are left."""
    prompts = list(prompts)
    dropped = set(containing(candidates, prompts))
    kept = [t for i, t in enumerate(candidates) if i not in dropped]
    if len(kept) < n:
        raise ValueError(f"only {len(kept)} of {len(candidates)} candidate texts contain none of the {len(prompts)} evaluation prompts; "
                         f"{n} are needed: draw more candidates")
    return kept[:n]


def check_disjoint(texts: Sequence[str], prompts: Iterable[str], where: str) -> None:
    """Refuse a corpus in which an evaluation prompt occurs, naming how many texts and the first one."""
    bad = containing(texts, prompts)
    if bad:
        raise ValueError(f"{where}: {len(bad)} of {len(texts)} corpus texts contain an evaluation prompt verbatim "
                         f"(first: text {bad[0]}, {texts[bad[0]][:60]!r}); the corpus must be disjoint from the evaluation pool")
