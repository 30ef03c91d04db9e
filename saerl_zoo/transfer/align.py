"""Pair tokens of two tokenizers through the text they cover, not their positions.

Tokenizers of different families cut the same text differently ("▁naïve" is one
Gemma token and three byte-level BPE tokens), so token i of model A and token i
of model B are unrelated. What both share is the text: at a character position
where both tokenizations have a token boundary, both causal models have read
exactly the same prefix, so their residual streams at the tokens ending there
describe the same thing. Those are the pairs.

A token ends at a boundary when the next token starts at or after its end:
byte-level pieces of one multi-byte character share their character span and
only the last piece completes it. Special tokens (BOS, ...) and zero-width
tokens cover no text and are never paired.
"""

from __future__ import annotations

from collections.abc import Sequence


def boundary_tokens(spans: Sequence[tuple[int, int]], complete: bool = True) -> dict[int, int]:
    """Character position -> index of the token that completes the text up to it.

    `spans` are the (start, end) character offsets of the tokens actually fed to
    the model, in order (special tokens included or not). The last token counts
    only for a `complete` tokenization: after truncation it may stop inside a
    character whose remaining bytes were cut.
    """
    out: dict[int, int] = {}
    for i, (start, end) in enumerate(spans):
        if end <= start:
            continue
        following = next((s for s, e in spans[i + 1 :] if e > s), None)
        if following is None and complete or following is not None and following >= end:
            out[end] = i
    return out


def align_spans(spans_a: Sequence[tuple[int, int]], spans_b: Sequence[tuple[int, int]], *, complete_a: bool = True,
                complete_b: bool = True) -> list[tuple[int, int]]:
    """(token index in A, token index in B) for every character boundary both tokenizations share, in text order.

    `complete_*` is False for a tokenization cut by truncation.
    """
    ends_a = boundary_tokens(spans_a, complete_a)
    ends_b = boundary_tokens(spans_b, complete_b)
    return [(ends_a[e], ends_b[e]) for e in sorted(ends_a.keys() & ends_b.keys())]
