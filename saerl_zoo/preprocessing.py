"""How text must be prepared before an SAE reads it, read from the SAE in one place.

An SAE is only meaningful on the tokens it was trained on: the first
`context_length` positions, with or without special tokens such as BOS, and
without attention-sink tokens whose norm is many times the prompt's median
(`outlier_norm_ratio`). These choices live in the SAE's own config
(`cfg.json`'s `metadata.zoo_preprocessing`, and sae-lens's `context_size` /
`seqpos_slice` / `prepend_bos`), so they travel with its folder, and
`sae_preprocessing` is the one function that reads them. featurize, the
transfer collector (`transfer fit` / `transfer eval`), `zoo verify` and publish
all go through it; a stitch records what it returned at fit time and is refused
with an SAE that says otherwise (`saerl_zoo.transfer.check`).

A choice set on an SAE in memory and never saved is the fault this guards
against: a script that sets it in memory gets published numbers the saved
folder does not reproduce. `record_preprocessing` writes the choices where
`save_sae` saves them, so they are set before the folder is written.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from saerl_zoo.errors import UserError

SPECIAL_TOKEN_POLICIES = ("drop", "keep")
METADATA_KEY = "zoo_preprocessing"  # in sae.cfg.metadata, saved in cfg.json by sae-lens's save_model


@dataclasses.dataclass(frozen=True)
class SaePreprocessing:
    """What every reader of an SAE applies: token limit, special tokens, BOS and attention sinks."""

    context_length: int | None = None  # at most this many tokens (the artifact's context, cut by sae-lens's training context)
    special_tokens: Literal["drop", "keep"] = "drop"  # BOS / pad / chat-template tokens skipped (by id) or pooled
    outlier_norm_ratio: float | None = None  # drop tokens whose norm > ratio x their prompt's median (attention sinks)
    prepend_bos: bool = True  # False: the SAE was trained on sequences without the tokenizer's added special tokens

    def token_limit(self, requested: int, model_limit: int | None = None) -> int:
        """The tokens read per text: the fewest of what the caller asked, the SAE's context and the model's."""
        return min(int(v) for v in (requested, self.context_length, model_limit) if v)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def sae_preprocessing(sae: Any) -> SaePreprocessing:
    """The preprocessing `sae` records (its zoo entry's, else sae-lens's own fields); refuses values it cannot apply."""
    meta = sae.cfg.metadata
    zoo = meta.get(METADATA_KEY) or {}
    if not isinstance(zoo, dict):
        raise UserError(f"the SAE's metadata {METADATA_KEY}={zoo!r} is not a mapping")
    special = zoo.get("special_tokens") or "drop"
    if special not in SPECIAL_TOKEN_POLICIES:
        raise UserError(f"the SAE's {METADATA_KEY}.special_tokens={special!r}: expected one of {SPECIAL_TOKEN_POLICIES}")
    ratio = zoo.get("outlier_norm_ratio")
    if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0):
        raise UserError(f"the SAE's {METADATA_KEY}.outlier_norm_ratio={ratio!r} is not a positive number")
    length = zoo.get("context_length")
    if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
        raise UserError(f"the SAE's {METADATA_KEY}.context_length={length!r} is not a positive token count")
    contexts = [c for c in (length, sae_context(sae)) if c]
    return SaePreprocessing(
        context_length=min(contexts) if contexts else None,
        special_tokens=special,
        outlier_norm_ratio=None if ratio is None else float(ratio),
        prepend_bos=meta.get("prepend_bos") is not False,
    )


def record_preprocessing(sae: Any, *, context_length: int | None = None, special_tokens: str = "drop",
                         outlier_norm_ratio: float | None = None, prepend_bos: bool | None = None) -> SaePreprocessing:
    """Write the choices into `sae.cfg.metadata` (saved in cfg.json by `save_sae`) and return them as read back.

    Call it before saving the folder: the folder, not the object in memory, is
    what the CLI and every later run read. `prepend_bos` is sae-lens's own
    field; None leaves it as the SAE has it. `record_preprocessing(b,
    **sae_preprocessing(a).to_dict())` makes `b` read text exactly as `a` does.
    """
    meta = sae.cfg.metadata
    if prepend_bos is not None:
        meta.prepend_bos = bool(prepend_bos)
    setattr(meta, METADATA_KEY, {**(meta.get(METADATA_KEY) or {}), "context_length": context_length,
                                 "special_tokens": special_tokens, "outlier_norm_ratio": outlier_norm_ratio})
    return sae_preprocessing(sae)


def sae_context(sae: Any) -> int | None:
    """How many leading token positions the SAE was trained on: sae-lens's `context_size`, narrowed by its
    `seqpos_slice`; None when the SAE records neither.

    sae-lens builds an SAE's training and evaluation activations from windows of
    exactly `context_size` tokens and keeps the positions `seqpos_slice` selects
    (`ActivationsStore.get_activations`), so a code at a later position comes from
    an activation the SAE never saw. featurize cuts prompts here, and counts the
    cut ones, as it cuts at the model's context. A slice that skips leading
    positions or strides cannot be read by cutting the end: refused, naming it.
    """
    meta = sae.cfg.metadata
    context = meta.get("context_size")
    if context is not None and (isinstance(context, bool) or not isinstance(context, int)):
        raise UserError(f"the SAE's metadata context_size={context!r} is not a token count")
    context = context if context and context > 0 else None  # sae-lens writes -1 for "taken from the dataset"
    seqpos = tuple(meta.get("seqpos_slice") or ())
    if not any(v is not None for v in seqpos):
        return context
    try:
        window = slice(*seqpos)
    except TypeError:
        raise UserError(f"the SAE's metadata seqpos_slice={list(seqpos)} is not a (start, stop, step) slice") from None
    if window.start not in (None, 0) or window.step not in (None, 1):
        raise UserError(f"the SAE's metadata seqpos_slice={list(seqpos)}: it was trained only on the token positions that slice keeps, "
                        "and featurize pools every position from the first, so it cannot read what the SAE was trained on")
    if window.stop is None:
        return context
    if context is None and window.stop < 0:
        raise UserError(f"the SAE's metadata seqpos_slice={list(seqpos)} counts from the end of a window, but it records no context_size")
    kept = len(range(context)[window]) if context is not None else window.stop
    if kept < 1:
        raise UserError(f"the SAE's metadata seqpos_slice={list(seqpos)} keeps no token position of its context_size={context}")
    return kept
