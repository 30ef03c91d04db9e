"""Loading a Hugging Face causal LM and its tokenizer: the one place every command gets a model from.

featurize, the zoo's `verify`, transfer and the reproduction all take models from
here, so a bad path or a broken folder is reported the same way everywhere.
"""

from __future__ import annotations

import os
from typing import Any

import torch


def load_model(
    name_or_path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    gguf_file: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[torch.nn.Module, Any]:
    """Load a Hugging Face causal LM and its tokenizer for featurization.

    Weights come from safetensors (or a GGUF file when `gguf_file` is given);
    remote code runs only when the caller asks for it.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    else:
        kwargs["use_safetensors"] = True
    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), **kwargs)
    model = AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=dtype, **kwargs)
    model.to(device).eval()
    return model, tokenizer
