"""EleutherAI's sparsify as the reference for sparsify layouts: its own save, load and encode.

Why: a hand-written copy of sparsify's encode only checks the zoo's reader
against our reading of sparsify's source. These helpers make the folder with
sparsify's `Sae(...)` + `save_to_disk` (and its run `config.json` with its
`RunConfig`), and compute the reference codes with sparsify's
`Sae.load_from_disk` / `Sae.load_many` + `Sae.encode`. A test that calls them is
skipped, with the reason, where sparsify (`eai-sparsify`, in the test extra) is
not installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

SKIP_REASON = "EleutherAI's sparsify is the reference for sparsify layouts: pip install eai-sparsify (in the test extra)"


def sparsify() -> Any:
    """The `sparsify` package, or skip the calling test with the reason."""
    return pytest.importorskip("sparsify", reason=SKIP_REASON)


def save_sparsify_run(root: Path, hookpoints: tuple[str, ...] = ("layers.1",), *, d_in: int = 32, seed: int = 0, model: str = "tiny",
                      ctx_len: int = 64, dtype: torch.dtype = torch.float32, **sae_cfg: Any) -> dict[str, Path]:
    """A sparsify run folder as its trainer saves one (one `Sae.save_to_disk` per hookpoint, `RunConfig.save_json`); hookpoint -> folder.

    `sae_cfg` are `SaeConfig` fields (default 40 latents, k=6). The biases are randomised: a fresh
    `Sae` has zero `b_dec` and encoder bias, which would hide a reader that drops either. No training.
    """
    sparsify()
    from sparsify import Sae, SaeConfig
    from sparsify.__main__ import RunConfig

    torch.manual_seed(seed)
    cfg = SaeConfig(**{"num_latents": 40, "k": 6, **sae_cfg})
    root.mkdir(parents=True, exist_ok=True)
    RunConfig(sae=cfg, model=model, dataset="toy", ctx_len=ctx_len, hookpoints=list(hookpoints), log_to_wandb=False).save_json(root / "config.json")
    folders = {}
    for hookpoint in hookpoints:
        sae = Sae(d_in, cfg, dtype=dtype)
        with torch.no_grad():
            sae.encoder.bias.normal_(0, 0.1)
            sae.b_dec.normal_(0, 0.1)
        sae.save_to_disk(root / hookpoint)
        folders[hookpoint] = root / hookpoint
    return folders


def sparsify_codes(sae: Any, acts: torch.Tensor) -> torch.Tensor:
    """sparsify's own `encode` (top-k values and indices), scattered into the dense code sae-lens's `encode` returns."""
    with torch.no_grad():
        top = sae.encode(acts.to(sae.dtype))
        return torch.zeros(*acts.shape[:-1], sae.num_latents, dtype=top.top_acts.dtype).scatter_(-1, top.top_indices, top.top_acts)


def load_sparsify(folder: Path) -> Any:
    """sparsify's own loader for one hookpoint folder."""
    from sparsify import Sae

    return Sae.load_from_disk(folder)
