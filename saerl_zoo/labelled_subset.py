"""Which prompts get labelled: a seeded random subset, at most 10% of the pool unless asked otherwise.

Labels are the costly input (rollouts, or people), so the paper labels at
most 10% of the pool and lets the probes carry the labels to the rest. The
subset is drawn once from a seed, so a rerun, a resumed run and another
labeller given the same seed label the same prompts. A subset too small for
the probe the labels are for is refused before any work, saying what to give.
"""

from __future__ import annotations

import math

import numpy as np

from saerl_zoo.errors import UserError

DEFAULT_FRACTION = 0.10  # the paper labels at most 10% of the pool


def subset_size(n: int, *, fraction: float | None, count: int | None, source: str, allow_zero: bool = False) -> int:
    """``count``, else ``fraction`` of ``n`` rounded down (default 10%: at most the share asked for).

    ``allow_zero`` admits ``count=0`` (quality labels from people alone).
    """
    if fraction is not None and count is not None:
        raise UserError("give --fraction or --count, not both")
    if count is not None:
        if not (0 if allow_zero else 1) <= count <= n:
            raise UserError(f"--count {count} is not between {0 if allow_zero else 1} and the {n} prompts of {source}")
        return count
    fraction = DEFAULT_FRACTION if fraction is None else fraction
    if not 0 < fraction <= 1:
        raise UserError(f"--fraction {fraction} is not in (0, 1]")
    return math.floor(fraction * n + 1e-9)  # the epsilon absorbs 0.1 * 30 = 2.9999...


def choose_subset(n: int, *, fraction: float | None, count: int | None, seed: int, minimum: int, source: str,
                  purpose: str) -> list[int]:
    """Sorted indices of the prompts to label, out of ``n``.

    ``count`` prompts, else ``fraction`` of them rounded down (default 10%),
    drawn by ``numpy.random.default_rng(seed)``. Refused in one line: both
    given, a count or fraction out of range, or fewer than ``minimum`` labels
    (what ``purpose``, e.g. "a difficulty probe", needs); ``source`` names
    the prompt set in the message.
    """
    size = subset_size(n, fraction=fraction, count=count, source=source)
    fraction = DEFAULT_FRACTION if fraction is None else fraction
    if size < minimum:
        if n < minimum:
            raise UserError(f"{source} has {n} prompts, fewer than the {minimum} labels {purpose} needs: label a larger prompt set")
        given = f"--count {count} is" if count is not None else f"{fraction:.0%} of its {n} prompts is {size},"
        raise UserError(f"{source}: {given} fewer than the {minimum} labels {purpose} needs: give --count {minimum} "
                        f"(or --fraction {math.ceil(100 * minimum / n) / 100:g}), or label a larger prompt set")
    return sorted(np.random.default_rng(seed).choice(n, size=size, replace=False).tolist())
