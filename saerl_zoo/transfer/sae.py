"""A host SAE that reads another model's residual stream through a stitch.

`StitchedSAE` is what `load_sae(name, for_model=B)` returns when the catalog
has a stitch for that pair. It quacks like the sae-lens SAE the featurizer
expects: `cfg.d_in` is B's width and `cfg.metadata.hook_name` is B's block,
so `featurize(prompts, model_B, tokenizer_B, stitched)` hooks B at the
stitch's layer; `encode` maps B's activations into A's space and runs A's
SAE on them, so codes (and every probe or clustering fitted on them) keep
their meaning. `decode` returns A-space activations.

Before any forward pass, `saerl_zoo.hooks.resolve` calls `check_model`: the
model must be the stitch's source (width, block, fingerprint), unless the
wrapper was made with `force=True`.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from saerl_zoo.transfer.check import check_stitch_model, check_stitch_preprocessing
from saerl_zoo.transfer.maps import StitchMap


class StitchedSAE(torch.nn.Module):
    """`sae.encode(stitch(x))` for activations x of the stitch's source model."""

    def __init__(self, sae: Any, stitch: StitchMap, name: str | None = None, *, force: bool = False):
        super().__init__()
        c = stitch.config
        if int(sae.cfg.d_in) != c.d_target:
            raise ValueError(
                f"the stitch maps into {c.d_target}-dim activations of {c.target_model}, but the SAE reads d_in={sae.cfg.d_in}"
            )
        host = sae.cfg.metadata.get("model_name")
        if host is not None and c.target_model != host:
            raise ValueError(f"the stitch maps into {c.target_model}'s residual stream, but this SAE reads {host}")
        check_stitch_preprocessing(c, sae)  # featurize then applies the SAE's preprocessing to B's tokens, as at fit time
        self.sae = sae
        self.stitch = stitch
        self.force = force  # skip the fingerprint check (not width or block) for a model the user knows fits
        self.cfg = copy.deepcopy(sae.cfg)
        self.cfg.d_in = c.d_source
        meta = self.cfg.metadata
        meta.hook_name = c.source_hook
        meta.hook_layer = c.source_layer
        meta.model_name = c.source_model
        meta.host_model_name = c.target_model
        meta.host_hook_name = c.target_hook
        meta.stitch = {"name": name, "method": c.method, "pairing": c.pairing, "explained_variance": c.metrics.get("explained_variance")}
        dtype, device = sae.W_enc.dtype, sae.W_enc.device
        self.register_buffer("weight", torch.as_tensor(stitch.weight, dtype=dtype, device=device))
        self.register_buffer("bias", torch.as_tensor(stitch.bias, dtype=dtype, device=device))
        # The encoder as seen from B's residual stream: featurize reads its device and dtype and hashes it for its cache key.
        self.register_buffer("W_enc", (self.weight @ sae.W_enc.detach()).contiguous())

    def __getattr__(self, name: str) -> Any:
        # The host SAE's activation (e.g. TopK), so featurize's TopK fast path swaps the one encode really uses.
        if name == "activation_fn":
            return getattr(self.sae, "activation_fn")
        return super().__getattr__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "activation_fn":
            self.sae.activation_fn = value
            return
        super().__setattr__(name, value)

    def check_model(self, model: torch.nn.Module) -> None:
        """Refuse (`StitchMismatch`) a model other than the stitch's source; `resolve` calls it before any forward pass."""
        check_stitch_model(self.stitch.config, model, "source", force=self.force)

    def map(self, x: torch.Tensor) -> torch.Tensor:
        """B's activations (... x d_source) in A's residual stream (... x d_target)."""
        if x.shape[-1] != self.cfg.d_in:
            raise ValueError(f"expected {self.cfg.d_in}-dim activations of {self.cfg.metadata.model_name}, got {x.shape[-1]}-dim")
        return x.to(self.weight.dtype) @ self.weight + self.bias

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.sae.encode(self.map(x))

    def decode(self, feature_acts: torch.Tensor) -> torch.Tensor:
        return self.sae.decode(feature_acts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
