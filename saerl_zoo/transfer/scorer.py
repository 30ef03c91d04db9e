"""Scorer transfer: a curriculum scored by one model (the host of the SAE and probes) trains another.

Nothing is mapped: the host reads the prompts, and the curriculum (difficulty
order, quality filter, clusters) is just a data order any policy can follow.
What matters is that it is explicit. `scorer_record` is what a curriculum's
provenance should say about who scored it; `check_policy` compares it with
the policy about to be trained and returns what to log, warning when they
differ (the difficulty is then the host's difficulty, not the policy's).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from saerl_zoo.hooks import decoder_layers


class ScorerTransferWarning(UserWarning):
    """A curriculum is used to train a policy other than the model that scored it."""


# Config fields that say where the model came from or how it runs, not what it is: hashed at a fixed value, so
# TRL turning `use_cache` off for gradient checkpointing, or loading the same weights from another folder or Hub id
# (`_name_or_path`), does not make the model look like another one.
RUNTIME_CONFIG = {"use_cache": True, "_name_or_path": ""}


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's config and first block's weights: the same model under any path or name."""
    config = model.config
    runtime = {key: getattr(config, key) for key in RUNTIME_CONFIG if hasattr(config, key)}
    try:
        for key in runtime:
            setattr(config, key, RUNTIME_CONFIG[key])
        digest = hashlib.sha256(config.to_json_string(use_diff=False).encode())
    finally:
        for key, value in runtime.items():
            setattr(config, key, value)
    first = next(decoder_layers(model)[0].parameters())
    digest.update(first.detach().float().flatten()[:65536].cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _name(model: Any) -> str:
    """A model's id, or its absolute folder when it was loaded from one (so two spellings of a path compare equal)."""
    text = str(getattr(model, "name_or_path", "") or type(model).__name__) if isinstance(model, torch.nn.Module) else str(model)
    return str(Path(text).resolve()) if os.path.isdir(text) else text


def scorer_record(model: torch.nn.Module, sae: Any, *, difficulty_probe: Any = None, quality_probe: Any = None) -> dict[str, Any]:
    """Who scored a curriculum: host model (name + fingerprint), SAE (name, hook, width, stitch if any) and probes.

    Put it in the curriculum's provenance as `scorer`
    (`build_curriculum(..., provenance={"scorer": scorer_record(...)})`).
    """
    meta = sae.cfg.metadata
    record: dict[str, Any] = {
        "host_model": _name(model),
        "host_model_sha256": model_fingerprint(model),
        "sae": meta.get("zoo_name") or meta.get("hook_name"),
        "sae_hook": meta.get("hook_name"),
        "d_sae": int(sae.cfg.d_sae),
    }
    if meta.get("stitch") is not None:  # representation transfer: B read through A's SAE
        record["stitch"] = dict(meta.get("stitch"), host_model=meta.get("host_model_name"), host_hook=meta.get("host_hook_name"))
    for key, probe in (("difficulty_probe", difficulty_probe), ("quality_probe", quality_probe)):
        if probe is not None:
            record[key] = {"estimator": probe.config.estimator, "d_in": probe.config.d_in, "heldout": probe.metrics}
    return record


def check_policy(curriculum: Any, policy: Any, *, on_mismatch: str = "warn") -> dict[str, Any]:
    """Compare the model that scored `curriculum` with the `policy` (a model, or its name / folder) about to train on it.

    Returns {"scorer", "policy", "transfer"} for the run's metadata. When they
    differ: warn (`ScorerTransferWarning`), raise ValueError (`on_mismatch="error"`)
    or say nothing (`"ignore"`); a curriculum that records no scorer counts as a mismatch.
    """
    if on_mismatch not in ("warn", "error", "ignore"):
        raise ValueError(f"on_mismatch must be 'warn', 'error' or 'ignore', not {on_mismatch!r}")
    provenance = getattr(curriculum, "provenance", None) or {}
    scorer = provenance.get("scorer") or ({"host_model": provenance["model"]} if provenance.get("model") else None)
    policy_name = _name(policy)
    if scorer is None:
        same = False
        reason = "the curriculum records no scoring model"
    elif isinstance(policy, torch.nn.Module) and scorer.get("host_model_sha256"):
        same = model_fingerprint(policy) == scorer["host_model_sha256"]
        reason = f"it was scored by {scorer['host_model']} (fingerprint {scorer['host_model_sha256']})"
    else:
        same = _name(scorer["host_model"]) == policy_name
        reason = f"it was scored by {scorer['host_model']}"
    result = {"scorer": scorer, "policy": policy_name, "transfer": not same}
    if not same and on_mismatch != "ignore":
        message = (f"scorer transfer: this curriculum is used to train {policy_name}, but {reason}; its difficulty order, "
                   "quality filter and clusters are the scorer's view of the prompts, not the policy's")
        if on_mismatch == "error":
            raise ValueError(message)
        warnings.warn(message, ScorerTransferWarning, stacklevel=2)
    return result
