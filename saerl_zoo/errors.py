"""The project's user-error type and the wording helpers its messages share.

A `UserError` is bad input the user can fix (a missing file, a broken model
folder, a corrupt artifact): the CLI prints its message as one line and exits 1.
It is a ValueError, the project's convention for bad input, so callers that
catch ValueError keep working. Anything else reaching the CLI is a bug and is
reported as one, with the traceback a `--debug` away.
"""

from __future__ import annotations

from collections.abc import Sequence


class UserError(ValueError):
    """Input the user can fix; the message names the thing and what is wrong with it."""


def one_line(text: object, limit: int | None = 400) -> str:
    """`text` with its whitespace runs (newlines included) collapsed, cut to `limit` characters.

    Third-party messages (transformers, safetensors) span many lines; a
    terminal error must stay one line.
    """
    flat = " ".join(str(text).split())
    return flat if limit is None or len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def bounded_list(items: Sequence[str], shown: int = 5) -> str:
    """`a, b, c, d, e and 27 more`: a listing of bad inputs that stays readable when there are hundreds."""
    head = ", ".join(items[:shown])
    return head if len(items) <= shown else f"{head} and {len(items) - shown} more"


def numbered_prompts(positions: Sequence[int], texts: Sequence[str], *, first: int = 0) -> str:
    """Bad prompts for a message: `#4 'What is…', #9 '' and 27 more`, numbered from 1.

    `positions` index `texts`, whose first element is prompt number `first + 1`
    of the whole set (a shard starts mid-set); each shows its first 30 characters.
    """
    return bounded_list([f"#{first + i + 1} {texts[i][:30]!r}" for i in positions])
