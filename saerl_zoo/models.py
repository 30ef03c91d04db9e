"""Loading a Hugging Face causal LM and its tokenizer: the one place every command gets a model from.

featurize, the zoo's `verify`, transfer and the reproduction all take models from
here, so a bad path or a broken folder is reported the same way everywhere: one
`ModelLoadError` line naming the path and what is wrong with it. A local folder
is checked before transformers sees it, because transformers' own messages
mislead for the commonest mistakes (a missing folder is reported as a bad Hub
repo id, a folder without config.json as a missing sentencepiece).

It also says which tokens are the tokenizer's special ones (`special_token_mask`),
so featurize, the transfer collector and `verify` all skip the same tokens.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from saerl_zoo.errors import UserError, one_line

# Files that carry a tokenizer's vocabulary; a folder with none of them has no tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "vocab.json", "vocab.txt", "tokenizer_config.json")


class ModelLoadError(UserError):
    """A model path or Hub id that does not give a loadable causal LM and tokenizer."""


def _is_hub_id(name: str) -> bool:
    """Whether `name` could be a Hub repo id (`gpt2`, `org/name`) rather than only a local path."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _check_folder(folder: Path, *, gguf_file: str | None, trust_remote_code: bool) -> None:
    """Refuse a local model folder transformers cannot load, saying what it lacks."""
    if not folder.is_dir():
        raise ModelLoadError(f"model {folder} is a file, not a model folder (for a GGUF file give its folder and --gguf-file)")
    if gguf_file is not None:  # a GGUF file carries config, tokenizer and weights
        if not (folder / gguf_file).is_file():
            raise ModelLoadError(f"model folder {folder} has no GGUF file {gguf_file}")
        return
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelLoadError(f"model folder {folder} has no config.json: not a Hugging Face model folder")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelLoadError(f"{config_path} is not valid JSON: {err}") from err
    if not isinstance(config, dict):
        raise ModelLoadError(f"{config_path} is not a JSON object")
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ModelLoadError(f"{config_path} names no model_type")
    from transformers import __version__ as transformers_version
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING and not (trust_remote_code and "auto_map" in config):
        raise ModelLoadError(
            f"{config_path}: model_type {model_type!r} is unknown to transformers {transformers_version} "
            "(a newer transformers may know it; a repo with its own code needs --trust-remote-code)"
        )
    if not any((folder / name).is_file() for name in TOKENIZER_FILES) and not any(folder.glob("*.tiktoken")):
        raise ModelLoadError(f"model folder {folder} has no tokenizer files (none of {', '.join(TOKENIZER_FILES)})")
    if not any(folder.glob("*.safetensors")):
        pickled = sorted(p.name for p in folder.glob("*.bin"))
        reason = f"only pickled weights ({', '.join(pickled)}), which are never loaded" if pickled else "no weights"
        raise ModelLoadError(f"model folder {folder} has {reason}: saerl-zoo loads *.safetensors")


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

    `name_or_path` is a local folder or a Hub id. Weights come from safetensors
    (or a GGUF file when `gguf_file` is given); remote code runs only when the
    caller asks for it. Raises `ModelLoadError` (one line naming the path) for
    anything that is not a loadable model.
    """
    name = str(name_or_path)
    folder = Path(name).expanduser()
    if folder.exists():
        _check_folder(folder, gguf_file=gguf_file, trust_remote_code=trust_remote_code)
        source, where = str(folder), f"model folder {folder}"
    elif _is_hub_id(name):
        source, where = name, f"model {name} (no such local folder, so read as a Hub id)"
    else:
        raise ModelLoadError(f"model folder {name} does not exist")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    else:
        kwargs["use_safetensors"] = True
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError, KeyError, ImportError) as err:
        raise ModelLoadError(f"{where}: its tokenizer does not load: {one_line(err)}") from err
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    except (OSError, ValueError, KeyError, ImportError, RuntimeError, SafetensorError) as err:
        raise ModelLoadError(f"{where}: it does not load as a causal LM: {one_line(err)}") from err
    model.to(device).eval()
    return model, tokenizer


def special_token_mask(tokenizer: Any, ids: Sequence[Sequence[int]]) -> list[list[int]]:
    """1 for each token whose id is one of the tokenizer's special tokens, 0 otherwise (one list per sequence).

    Decided by id because `return_special_tokens_mask` flags only the tokens the
    tokenizer adds itself (BOS, ...): a '<|im_start|>' or '<bos>' typed inside a
    prompt becomes the same special id but is flagged 0, and would be pooled like
    a word. The unknown token is not counted: it stands for text the vocabulary
    lacks, not for a marker.
    """
    special = special_token_ids(tokenizer)
    return [[int(i in special) for i in seq] for seq in ids]


def special_token_ids(tokenizer: Any) -> set[int]:
    """The ids `special_token_mask` flags: the tokenizer's special tokens and added special tokens, not the unknown token."""
    special = set(tokenizer.all_special_ids)
    special.update(i for i, tok in getattr(tokenizer, "added_tokens_decoder", {}).items() if getattr(tok, "special", False))
    special.discard(tokenizer.unk_token_id)
    return special
