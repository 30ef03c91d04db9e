"""Register a saved stitch in a user catalog, so `load_sae(sae, for_model=B)` finds it.

The entry is of kind `stitch`: its `model` / `hook` are model B's (the
activations it reads), `features` names the host SAE it feeds, and its
files (with their sha256) sit in a folder next to the catalog file
(`source.type: local`), checked on every load like any zoo artifact.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from saerl_zoo.transfer.maps import StitchConfig, StitchMap
from saerl_zoo.zoo.hub import hash_folder
from saerl_zoo.zoo.registry import Artifact, upsert_entry, validate_entry


def stitch_fields(config: StitchConfig, *, sae_name: str | None = None, model_id: str | None = None, context_length: int = 512,
                  command: str | None = None) -> dict[str, Any]:
    """The catalog fields a stitch's config determines (all but name, source, files and license).

    One function for both ways a stitch enters a catalog, `stitch_entry` (a local
    folder next to a user catalog) and `zoo.publish` (a Hub repo), so that a
    registered and a published stitch describe themselves identically.
    `sae_name` defaults to the host SAE recorded in the config.
    """
    c = config
    sae_name = sae_name or c.sae
    return {
        "kind": "stitch",
        "description": (f"{c.method} map from block {c.source_layer} of {c.source_model} into block {c.target_layer} of "
                        f"{c.target_model}, so that {sae_name} and its probes read {c.source_model}."),
        "model": {"id": model_id or c.source_model},
        "hook": {"module": c.source_hook, "site": "resid_out", "layer": c.source_layer},
        "metrics": {
            "explained_variance": round(float(c.metrics["explained_variance"]), 4),
            "identity_explained_variance": round(float(c.metrics["identity_explained_variance"]), 4),
            "identity": c.metrics["identity"],
            "eval_set": f"{c.metrics['n_test_texts']} held-out texts of the fitting corpus ({c.pairing} pairs)",
        },
        "preprocessing": {"context_length": context_length, "special_tokens": "drop"},
        "features": sae_name,
        # the host side (model A) is not in the entry's model/hook (those are B's): the card needs it
        "training": {"method": c.method, "pairing": c.pairing, "pooling": c.pooling, "hyperparameters": c.hyperparameters,
                     "corpus": c.corpus, "seed": c.seed,
                     "host": {"model": c.target_model, "hook": c.target_hook, "layer": c.target_layer},
                     "widths": {"source": c.d_source, "target": c.d_target},
                     **({"command": command} if command else {})},
        "limitations": [
            f"Only valid on the output of {c.source_hook} of {c.source_model}; any other model or layer makes the codes meaningless.",
            f"Fitted on {c.corpus.get('n_texts')} texts; held-out explained variance of the host's activations is "
            f"{c.metrics['explained_variance']:.3f} (identity baseline {c.metrics['identity_explained_variance']:.3f}).",
        ],
        "tags": ["saerl-zoo", "stitch"],
    }


def stitch_entry(stitch: StitchMap, folder: str | os.PathLike[str], catalog_path: str | os.PathLike[str], *, name: str, sae_name: str,
                 model_id: str | None = None, license: str = "unspecified", context_length: int = 512,
                 command: str | None = None) -> Artifact:
    """The catalog entry of the stitch saved in `folder` (which must lie inside the catalog file's folder)."""
    root = Path(catalog_path).resolve().parent
    folder = Path(folder).resolve()
    if not folder.is_relative_to(root):
        raise ValueError(f"a local catalog entry's files must sit next to its catalog: {folder} is not inside {root}")
    raw: dict[str, Any] = {
        "name": name,
        **stitch_fields(stitch.config, sae_name=sae_name, model_id=model_id, context_length=context_length, command=command),
        "source": {"type": "local", "format": "stitch", "path": folder.relative_to(root).as_posix()},
        "files": hash_folder(folder),
        "license": license,
    }
    return validate_entry(raw, str(catalog_path))


def register_stitch(stitch: StitchMap, folder: str | os.PathLike[str], catalog_path: str | os.PathLike[str], **kwargs: Any) -> Artifact:
    """Add (or replace) the stitch's entry in the catalog file `catalog_path` (created if missing)."""
    entry = stitch_entry(stitch, folder, catalog_path, **kwargs)
    upsert_entry(catalog_path, entry)
    return entry
