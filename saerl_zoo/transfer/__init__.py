"""Cross-family transfer: use one SAE and its probes with another model family or size.

Two modes:

* scorer transfer (no mapping): the SAE's host scores the prompts and the
  curriculum trains another policy; `scorer_record` / `check_policy` make that
  explicit in the curriculum's provenance and at training time;
* representation transfer: a `StitchMap` (ridge, Procrustes after whitening,
  CCA, or the identity baseline) maps model B's residual stream into host A's at
  the SAE's layer, fitted on a shared text corpus with prompt-level pooled pairs
  or token pairs aligned by character offsets. `StitchedSAE` (what
  `load_sae(name, for_model=B)` returns when the catalog has a stitch) runs A's
  SAE on B inside `featurize`; `TransferEvaluation` measures what carries over.

Names are imported lazily.
"""

from __future__ import annotations

from saerl_zoo._lazy import lazy_exports

_EXPORTS = {
    "align_spans": "saerl_zoo.transfer.align",
    "TextActivations": "saerl_zoo.transfer.activations",
    "collect_activations": "saerl_zoo.transfer.activations",
    "prompt_pairs": "saerl_zoo.transfer.activations",
    "token_pairs": "saerl_zoo.transfer.activations",
    "StitchConfig": "saerl_zoo.transfer.maps",
    "StitchMap": "saerl_zoo.transfer.maps",
    "fit_affine": "saerl_zoo.transfer.maps",
    "explained_variance": "saerl_zoo.transfer.maps",
    "fit_stitch": "saerl_zoo.transfer.fit",
    "fit_stitch_on_texts": "saerl_zoo.transfer.fit",
    "select_layer": "saerl_zoo.transfer.fit",
    "StitchedSAE": "saerl_zoo.transfer.sae",
    "check_stitch_model": "saerl_zoo.transfer.check",
    "StitchMismatch": "saerl_zoo.transfer.check",
    "StitchUncheckedWarning": "saerl_zoo.transfer.check",
    "GroundTruth": "saerl_zoo.transfer.evaluate",
    "RefitLabels": "saerl_zoo.transfer.evaluate",
    "TransferEvaluation": "saerl_zoo.transfer.evaluate",
    "evaluate_stitch": "saerl_zoo.transfer.evaluate",
    "stitch_entry": "saerl_zoo.transfer.register",
    "stitch_fields": "saerl_zoo.transfer.register",
    "register_stitch": "saerl_zoo.transfer.register",
    "scorer_record": "saerl_zoo.transfer.scorer",
    "check_policy": "saerl_zoo.transfer.scorer",
    "ScorerTransferWarning": "saerl_zoo.transfer.scorer",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
