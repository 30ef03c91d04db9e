"""Residual-stream activations of texts at several layers, each token with its character span.

One forward pass per batch captures every requested block (stopping after the
deepest), so choosing B's layer by held-out fit costs one pass over the corpus,
not one per candidate. Tokens are the featurizer's: truncated to `max_length`,
special tokens (BOS, typed '<|im_start|>', ...) dropped by id. Each text's tokens are stored contiguously,
like CSR rows (`text_ptr`), so they can be pooled per text (prompt-level pairs)
or matched by character offsets (token-level pairs).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from saerl_zoo.errors import numbered_prompts
from saerl_zoo.featurizer import _check_prompts, _pad, decoder_layers, model_context, outlier_token_mask, padding_id
from saerl_zoo.preprocessing import SaePreprocessing
from saerl_zoo.models import special_token_mask
from saerl_zoo.storage import read_tensors, write_tensors
from saerl_zoo.transfer.align import align_spans


class _StopForward(Exception):
    """Raised by the capture hook of the deepest requested block: nothing after it is needed."""


def block_hook_name(model: torch.nn.Module, layer: int) -> str:
    """The module name of decoder block `layer` (`model.layers.6`, `model.language_model.layers.6`, ...)."""
    block = decoder_layers(model)[layer]
    return next(name for name, module in model.named_modules() if module is block)


@dataclasses.dataclass
class TextActivations:
    """Every real token's activation at each captured layer, grouped by text."""

    layers: dict[int, np.ndarray]  # layer -> (n_tokens, d) float32
    text_ptr: np.ndarray  # (n_texts + 1,): the tokens of text i are rows text_ptr[i]:text_ptr[i + 1]
    spans: np.ndarray  # (n_tokens, 2) character (start, end) of each token in its text
    text_lengths: np.ndarray  # (n_texts,) characters per text
    truncated: np.ndarray  # (n_texts,) bool: cut at max_length (its last token may end inside a character)
    hook_names: dict[int, str]
    model: str  # the model's name_or_path

    @property
    def n_texts(self) -> int:
        return len(self.text_ptr) - 1

    @property
    def width(self) -> int:
        return next(iter(self.layers.values())).shape[1]

    def layer(self, layer: int) -> np.ndarray:
        if layer not in self.layers:
            raise ValueError(f"layer {layer} was not captured for {self.model}; captured: {sorted(self.layers)}")
        return self.layers[layer]

    def pooled(self, layer: int) -> np.ndarray:
        """Mean activation of each text's tokens (n_texts x d): the pooling the featurizer applies to codes."""
        acts = self.layer(layer)
        counts = np.diff(self.text_ptr)
        return (np.add.reduceat(acts.astype(np.float64), self.text_ptr[:-1], axis=0) / counts[:, None]).astype(np.float32)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """One safetensors file (atomic), so a long transfer run can resume from cached activations."""
        tensors = {f"layer_{k}": v for k, v in self.layers.items()}
        tensors.update(text_ptr=self.text_ptr, spans=self.spans, text_lengths=self.text_lengths, truncated=self.truncated.astype(np.uint8))
        write_tensors(path, tensors, {"hook_names": json.dumps({str(k): v for k, v in self.hook_names.items()}), "model": self.model})
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TextActivations:
        from safetensors import safe_open

        t = read_tensors(path)
        with safe_open(str(path), "np") as f:
            meta = f.metadata() or {}
        if "hook_names" not in meta or "text_ptr" not in t:
            raise ValueError(f"{path} is not a saved TextActivations")
        layers = {int(k.removeprefix("layer_")): v for k, v in t.items() if k.startswith("layer_")}
        hooks = {int(k): v for k, v in json.loads(meta["hook_names"]).items()}
        return cls(layers, t["text_ptr"], t["spans"], t["text_lengths"], t["truncated"].astype(bool), hooks, meta.get("model", ""))

    def subset(self, texts: Sequence[int]) -> TextActivations:
        """The activations of some texts only (in the given order)."""
        texts = list(texts)
        rows = np.concatenate([np.arange(self.text_ptr[i], self.text_ptr[i + 1]) for i in texts])
        ptr = np.concatenate([[0], np.cumsum(np.diff(self.text_ptr)[texts])]).astype(np.int64)
        return TextActivations({k: v[rows] for k, v in self.layers.items()}, ptr, self.spans[rows], self.text_lengths[texts],
                               self.truncated[texts], dict(self.hook_names), self.model)


def collect_activations(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    layers: Sequence[int],
    *,
    max_length: int = 512,
    batch_size: int = 32,
    preprocessing: SaePreprocessing | None = None,
    progress: bool = True,
) -> TextActivations:
    """Capture the output of each decoder block in `layers` for every real token of `texts`.

    Needs a fast tokenizer (character offsets); texts with no token besides
    special ones are refused, as the featurizer refuses them. `preprocessing`
    (the SAE's, `saerl_zoo.preprocessing.sae_preprocessing`) is applied as
    `featurize` applies it: its token limit, BOS, special-token policy, and
    attention-sink tokens dropped (a token is kept when its norm is within the
    ratio of its text's median at every captured layer).
    """
    preprocessing = preprocessing or SaePreprocessing()
    texts = _check_prompts(texts)
    n_blocks = len(decoder_layers(model))
    for layer in layers:
        if not 0 <= layer < n_blocks:
            raise ValueError(f"layer {layer} is out of range: the model has {n_blocks} decoder blocks (0..{n_blocks - 1})")
    layers = sorted({int(layer) for layer in layers})
    if not layers:
        raise ValueError("no layers to capture")
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("token spans need a fast (Rust) tokenizer with character offsets")
    max_length = preprocessing.token_limit(max_length, model_context(model, tokenizer))  # as featurize cuts them
    enc = tokenizer(texts, truncation=True, max_length=max_length, return_offsets_mapping=True,
                    return_attention_mask=False, add_special_tokens=preprocessing.prepend_bos)
    if preprocessing.special_tokens == "keep":
        special = [[0] * len(x) for x in enc["input_ids"]]
    else:
        special = special_token_mask(tokenizer, enc["input_ids"])  # decided as featurize decides it
    empty = [i for i, mask in enumerate(special) if all(mask)]
    if empty:
        raise ValueError(f"{len(empty)} texts have no tokens besides special tokens: {numbered_prompts(empty, texts)}")
    pad_id = padding_id(tokenizer)
    blocks = decoder_layers(model)
    acts: list[dict[int, np.ndarray]] = [{} for _ in texts]
    kept: list[np.ndarray] = [np.zeros(0, dtype=bool)] * len(texts)
    order = np.argsort([len(x) for x in enc["input_ids"]], kind="stable")[::-1]
    captured: dict[int, torch.Tensor] = {}

    def hook_for(layer: int):
        def hook(_module: Any, _inputs: Any, output: Any) -> None:
            captured[layer] = output[0] if isinstance(output, tuple) else output
            if layer == layers[-1]:
                raise _StopForward
        return hook

    device = next(model.parameters()).device
    handles = [blocks[layer].register_forward_hook(hook_for(layer)) for layer in layers]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), tqdm(total=len(texts), desc="activations", unit="text", disable=not progress) as bar:
            for start in range(0, len(texts), batch_size):
                idx = order[start : start + batch_size]
                ids = [enc["input_ids"][i] for i in idx]
                mask = _pad([[1] * len(x) for x in ids], 0)
                real = mask.bool() & ~_pad([special[i] for i in idx], 1).bool()
                captured.clear()
                try:
                    model(input_ids=_pad(ids, pad_id).to(device), attention_mask=mask.to(device), use_cache=False)
                except _StopForward:
                    pass
                keep = real.clone()
                if preprocessing.outlier_norm_ratio is not None:
                    for layer in layers:
                        keep &= outlier_token_mask(captured[layer], real, preprocessing.outlier_norm_ratio)
                for row, i in enumerate(idx):
                    kept[i] = keep[row, : len(ids[row])].numpy()
                    for layer in layers:
                        acts[i][layer] = captured[layer][row, : len(ids[row])][torch.from_numpy(kept[i])].float().cpu().numpy()
                bar.update(len(idx))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    spans = np.concatenate([np.asarray(enc["offset_mapping"][i], dtype=np.int64).reshape(-1, 2)[kept[i]] for i in range(len(texts))])
    return TextActivations(
        layers={layer: np.concatenate([a[layer] for a in acts]) for layer in layers},
        text_ptr=np.concatenate([[0], np.cumsum([k.sum() for k in kept])]).astype(np.int64),
        spans=spans,
        text_lengths=np.array([len(t) for t in texts], dtype=np.int64),
        truncated=np.array([len(ids) >= max_length for ids in enc["input_ids"]]),
        hook_names={layer: block_hook_name(model, layer) for layer in layers},
        model=str(getattr(model, "name_or_path", "")),
    )


@dataclasses.dataclass
class Pairs:
    """Paired source (B) and target (A) activations, with the text each pair comes from (for splits by text)."""

    X: np.ndarray
    Y: np.ndarray
    groups: np.ndarray


def _check_same_texts(source: TextActivations, target: TextActivations) -> None:
    if source.n_texts != target.n_texts or not np.array_equal(source.text_lengths, target.text_lengths):
        raise ValueError(
            f"source ({source.model}) and target ({target.model}) activations come from different texts "
            f"({source.n_texts} vs {target.n_texts} texts): collect both on the same corpus"
        )


def prompt_pairs(source: TextActivations, target: TextActivations, source_layer: int, target_layer: int) -> Pairs:
    """(a) One pair per text: mean-pooled activations of each model over the text's tokens."""
    _check_same_texts(source, target)
    return Pairs(source.pooled(source_layer), target.pooled(target_layer), np.arange(source.n_texts))


def token_index_pairs(source: TextActivations, target: TextActivations) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices (source, target) of tokens ending at a shared character boundary, and their text index."""
    _check_same_texts(source, target)
    src_rows, tgt_rows, groups = [], [], []
    for i in range(source.n_texts):
        s0, s1 = source.text_ptr[i], source.text_ptr[i + 1]
        t0, t1 = target.text_ptr[i], target.text_ptr[i + 1]
        for a, b in align_spans([tuple(x) for x in source.spans[s0:s1]], [tuple(x) for x in target.spans[t0:t1]],
                                complete_a=not source.truncated[i], complete_b=not target.truncated[i]):
            src_rows.append(s0 + a)
            tgt_rows.append(t0 + b)
            groups.append(i)
    return np.array(src_rows, dtype=np.int64), np.array(tgt_rows, dtype=np.int64), np.array(groups, dtype=np.int64)


def token_pairs(source: TextActivations, target: TextActivations, source_layer: int, target_layer: int) -> Pairs:
    """(b) One pair per shared character boundary: the two tokens that complete the same text prefix."""
    src, tgt, groups = token_index_pairs(source, target)
    if len(src) == 0:
        raise ValueError("the two tokenizations share no character boundary on these texts")
    return Pairs(source.layer(source_layer)[src], target.layer(target_layer)[tgt], groups)


def make_pairs(pairing: str, source: TextActivations, target: TextActivations, source_layer: int, target_layer: int) -> Pairs:
    if pairing == "prompt":
        return prompt_pairs(source, target, source_layer, target_layer)
    if pairing == "token":
        return token_pairs(source, target, source_layer, target_layer)
    raise ValueError(f"unknown pairing {pairing!r}; choose 'prompt' or 'token'")
