"""Refuse a stitch on a model other than the one it was fitted on, before that model runs.

A stitch is an affine map between two particular residual streams: on another
model of the same width, or another block of the right one, it still produces
numbers, only wrong ones (codes that correlate 0.2 with the native ones where
the right model gives 0.98). So every route that applies a stitch (featurize
through a `StitchedSAE`, `load_sae(..., for_model=)`, `evaluate_stitch`) calls
`check_stitch_model` with the model first: width, block and the model
fingerprint recorded at fit time (`model_fingerprint`: config + first block's
weights) must agree, or it raises `StitchMismatch` naming the difference.

A stitch that records no fingerprint (fitted before fingerprints were kept, or
by `fit_stitch` from saved activations, where no model is at hand) is checked
for width and block and applied with a `StitchUncheckedWarning`: refusing it
would leave `force=True` as the only way to use any such stitch, and a habit of
forcing would switch off the checks that can run.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch

from saerl_zoo.hooks import decoder_layers, text_config
from saerl_zoo.preprocessing import SaePreprocessing, sae_preprocessing
from saerl_zoo.transfer.maps import StitchConfig
from saerl_zoo.transfer.scorer import model_fingerprint

Side = Literal["source", "target"]


class StitchMismatch(ValueError):
    """A stitch is about to read (or write into) a model other than the one it was fitted on."""


class StitchUncheckedWarning(UserWarning):
    """A stitch records no model fingerprint, so only the model's width and block count could be checked."""


def check_stitch_model(config: StitchConfig, model: torch.nn.Module, side: Side = "source", *, force: bool = False) -> None:
    """Raise `StitchMismatch` unless `model` is the stitch's `side` model (B for "source", host A for "target").

    Width and block always count (a wrong width cannot run at all); the
    fingerprint check is skipped with `force=True`, for the same weights under
    another dtype or a fine-tune the user knows to be close enough.
    """
    name = getattr(config, f"{side}_model") or "(unnamed model)"
    layer, width = getattr(config, f"{side}_layer"), getattr(config, f"d_{side}")
    role = "reads" if side == "source" else "maps into"
    hidden = int(text_config(model).hidden_size)
    if hidden != width:
        raise StitchMismatch(f"the stitch {role} {width}-dim activations of {name}, but this model ({_label(model)}) is {hidden} wide")
    n_blocks = len(decoder_layers(model))
    if not 0 <= layer < n_blocks:
        raise StitchMismatch(f"the stitch {role} block {layer} of {name}, but this model ({_label(model)}) has {n_blocks} decoder blocks")
    recorded = getattr(config, f"{side}_fingerprint")
    if force:
        return
    if recorded is None:
        warnings.warn(f"the stitch records no fingerprint of {name}: only its width and block count were checked "
                      "(refit it to record one)", StitchUncheckedWarning, stacklevel=3)
        return
    found = model_fingerprint(model)
    if found != recorded:
        raise StitchMismatch(f"the stitch {role} {name} (fingerprint {recorded}), but this model ({_label(model)}) has fingerprint "
                             f"{found}: another model of the same width, or the same one in another dtype; pass force=True "
                             "(--force) if you know it fits")


def check_stitch_preprocessing(config: StitchConfig, sae: Any) -> SaePreprocessing:
    """The SAE's preprocessing, once it agrees with the one the stitch was fitted with; `StitchMismatch` otherwise.

    A stitch fitted on tokens prepared one way (say, attention sinks dropped) and
    applied to tokens prepared another gives codes that are wrong without any error,
    so a difference is refused, naming each field; a stitch that records none
    (fitted before it was kept) is applied with a `StitchUncheckedWarning`.
    """
    found = sae_preprocessing(sae)
    recorded = config.preprocessing
    if recorded is None:
        warnings.warn("the stitch records no preprocessing: the SAE's own is applied unchecked (refit it to record one)",
                      StitchUncheckedWarning, stacklevel=3)
        return found
    diffs = [f"{k} {recorded.get(k)!r} (stitch) vs {v!r} (SAE)" for k, v in found.to_dict().items() if recorded.get(k) != v]
    if diffs:
        raise StitchMismatch(f"the stitch was fitted with other preprocessing than the SAE {config.sae} records: {'; '.join(diffs)}; "
                             "refit the stitch, or fix the SAE folder's cfg.json (metadata.zoo_preprocessing)")
    return found


def _label(model: Any) -> str:
    return str(getattr(model, "name_or_path", "") or type(model).__name__)
