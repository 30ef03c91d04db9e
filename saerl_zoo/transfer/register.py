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

from saerl_zoo.transfer.maps import StitchMap
from saerl_zoo.zoo.hub import hash_folder
from saerl_zoo.zoo.registry import Artifact, upsert_entry, validate_entry


def stitch_entry(stitch: StitchMap, folder: str | os.PathLike[str], catalog_path: str | os.PathLike[str], *, name: str, sae_name: str,
                 model_id: str | None = None, license: str = "unspecified", context_length: int = 512,
                 command: str | None = None) -> Artifact:
    """The catalog entry of the stitch saved in `folder` (which must lie inside the catalog file's folder)."""
    c = stitch.config
    root = Path(catalog_path).resolve().parent
    folder = Path(folder).resolve()
    if not folder.is_relative_to(root):
        raise ValueError(f"a local catalog entry's files must sit next to its catalog: {folder} is not inside {root}")
    raw: dict[str, Any] = {
        "name": name,
        "kind": "stitch",
        "description": (f"{c.method} map from block {c.source_layer} of {c.source_model} into block {c.target_layer} of "
                        f"{c.target_model}, so that {sae_name} and its probes read {c.source_model}."),
        "model": {"id": model_id or c.source_model},
        "hook": {"module": c.source_hook, "site": "resid_out", "layer": c.source_layer},
        "source": {"type": "local", "format": "stitch", "path": folder.relative_to(root).as_posix()},
        "files": hash_folder(folder),
        "license": license,
        "metrics": {
            "explained_variance": round(float(c.metrics["explained_variance"]), 4),
            "identity_explained_variance": round(float(c.metrics["identity_explained_variance"]), 4),
            "identity": c.metrics["identity"],
            "eval_set": f"{c.metrics['n_test_texts']} held-out texts of the fitting corpus ({c.pairing} pairs)",
        },
        "preprocessing": {"context_length": context_length, "special_tokens": "drop"},
        "features": sae_name,
        "training": {"method": c.method, "pairing": c.pairing, "hyperparameters": c.hyperparameters, "corpus": c.corpus,
                     "seed": c.seed, **({"command": command} if command else {})},
        "limitations": [
            f"Only valid on the output of {c.source_hook} of {c.source_model}; any other model or layer makes the codes meaningless.",
            f"Fitted on {c.corpus.get('n_texts')} texts; held-out explained variance of the host's activations is "
            f"{c.metrics['explained_variance']:.3f} (identity baseline {c.metrics['identity_explained_variance']:.3f}).",
        ],
        "tags": ["saerl-zoo", "stitch"],
    }
    return validate_entry(raw, str(catalog_path))


def register_stitch(stitch: StitchMap, folder: str | os.PathLike[str], catalog_path: str | os.PathLike[str], **kwargs: Any) -> Artifact:
    """Add (or replace) the stitch's entry in the catalog file `catalog_path` (created if missing)."""
    entry = stitch_entry(stitch, folder, catalog_path, **kwargs)
    upsert_entry(catalog_path, entry)
    return entry
