"""Prompts → one sparse SAE code per prompt.

The SAE's own hook point (`saerl_zoo.hooks`: a module, its input or output) is
read with a hook, and the forward pass is stopped right there by raising from
the hook: later modules and the LM head would only cost time, and for a 1.5B
model read at a middle layer they are half the compute. Each token's activation is encoded by the SAE and the
codes are pooled over the prompt's real tokens (padding and special tokens such
as BOS are skipped, by id, typed ones included: their outlier norms would dominate a mean).

Work is done in shards of the prompt list; with a `cache_dir`, every finished
shard is written atomically into a subfolder named for the inputs (model, SAE,
prompts, settings), so a killed run resumes where it stopped and other inputs
get a subfolder of their own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from saerl_zoo.errors import numbered_prompts
from saerl_zoo.hooks import HookPoint, HookSpec, bind, block_output_layer, capture, decoder_layers, resolve, sae_input, text_config
from saerl_zoo.models import special_token_mask
from saerl_zoo.preprocessing import SaePreprocessing, record_preprocessing, sae_preprocessing
from saerl_zoo.storage import load_csr, read_json, read_metadata, save_csr, write_json

Pooling = Literal["mean", "max"]
POOLINGS: tuple[str, ...] = ("mean", "max")
# 3: keyed by the resolved hook point, not a block number; max_length is capped at the model's context,
# and each shard records how many prompts it cut; 4: special tokens are skipped by id, typed ones included
CACHE_VERSION = 4
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length", "max_sequence_length")
_NO_LIMIT = 10**7  # transformers writes 1e30 as a tokenizer's model_max_length when it knows none
_ENCODE_CHUNK_ELEMENTS = 1 << 24  # tokens × d_sae per SAE encode call: 64 MB of float32 codes


def resolve_layer(model: torch.nn.Module, sae: Any, layer: int | None) -> int:
    """The decoder block whose output the SAE reads (its hook decides; `layer` may only repeat it); refuses any other tensor."""
    return block_output_layer(resolve(model, sae, layer))


def _check_prompts(prompts: Sequence[Any]) -> list[str]:
    if isinstance(prompts, str):
        raise TypeError("prompts must be a sequence of strings, not one string")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts given")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(f"prompt {i} is a {type(p).__name__}, not text")
        if not p.strip():
            raise ValueError(f"prompt {i} is empty")
    return prompts


def model_context(model: torch.nn.Module, tokenizer: Any) -> int | None:
    """How many token positions the model supports: its (text) config's position count, else the tokenizer's
    `model_max_length` when that is a real number, else None.

    Past it, learned position embeddings index out of range and rotary ones
    read positions the model never saw, so every reader caps prompts here.
    """
    config = text_config(model)
    for key in _CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < _NO_LIMIT else None


def padding_id(tokenizer: Any) -> int:
    """The id to right-pad with: the tokenizer's pad, else its eos, else 0.

    Padding is masked from attention (and causal attention never looks right)
    and from pooling, so any id in the vocabulary gives the same codes; the
    caller's tokenizer is left as it was.
    """
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    return 0


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def residual_stream(model: torch.nn.Module, layer: int, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The output of decoder block `layer` (== hidden_states[layer + 1]), computing nothing after it."""
    return capture(model, bind(HookSpec(f"block {layer}", "resid_post", layer), model), input_ids, attention_mask)


def pool_token_codes(codes: torch.Tensor, rows: torch.Tensor, n_rows: int, pooling: Pooling, out: torch.Tensor | None = None) -> torch.Tensor:
    """Accumulate per-token SAE codes (tokens × d_sae) into per-prompt rows.

    Sum for "mean" (the caller divides by token counts) and running max for
    "max"; `out` carries the accumulator across token chunks. SAE codes are
    non-negative, so a zero start is the identity for both.
    """
    if out is None:
        out = codes.new_zeros(n_rows, codes.shape[1])
    if pooling == "mean":
        return out.index_add_(0, rows, codes)
    if pooling == "max":
        return out.scatter_reduce_(0, rows[:, None].expand_as(codes), codes, reduce="amax")
    raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")


class _CapturePreActivations(torch.nn.Module):
    """Stands in for a TopK activation during `sae.encode`: returns its input (the final pre-activations) untouched."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _topk_module(sae: Any) -> Any | None:
    """The SAE's TopK activation module when its encode ends in one (sae-lens TopK-family SAEs), else None."""
    act = getattr(sae, "activation_fn", None)
    k = getattr(act, "k", None)
    if isinstance(act, torch.nn.Module) and type(act).__name__ == "TopK" and isinstance(k, int) and 0 < k < int(sae.cfg.d_sae):
        return act
    return None


def _topk_groups(d: int, k: int) -> int | None:
    """Number of column groups for `_topk_candidates`: a divisor of d near sqrt(k·d), more than k, at least 2 columns each."""
    divisors = [b for b in range(k + 1, d // 2 + 1) if d % b == 0]
    if not divisors:
        return None
    target = math.sqrt(k * d)
    return min(divisors, key=lambda b: abs(math.log(b / target)))


def _topk_indices(x: torch.Tensor, k: int) -> torch.Tensor:
    """Column indices of each row's k largest entries, unordered (NaN counts as largest).

    On CPU numpy's introselect (`argpartition`) is 2-3× faster than
    `torch.topk` for these row lengths; elsewhere (GPU, bf16) it is `torch.topk`.
    """
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and x.is_contiguous():
        width = x.shape[1]
        return torch.from_numpy(np.argpartition(x.numpy(), width - k, axis=1)[:, width - k :])
    return x.topk(k, dim=1, sorted=False).indices


def _topk_candidates(pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Exact per-row top-k of `pre` as (row, column, value) triplets, with two small top-k's instead of one wide one.

    Columns are dealt into B strided groups (column c in group c mod B). Every
    top-k entry lies in one of the k groups with the largest maxima (an entry
    outside them would be below k group maxima, hence below k entries), so a
    top-k over the B group maxima, then a top-k over the k·d/B entries of the
    chosen groups, gives the exact top k. With B ≈ sqrt(k·d) that is ~2·sqrt(k·d)
    entries through a top-k instead of d (with numpy's argpartition on CPU:
    3-5× faster than `torch.topk` over d_sae from 1k to 16k), fixed shapes (no
    host sync on GPU), and no dense tokens × d_sae code matrix.
    Returns None (use the plain path) if d has no suitable divisor.
    """
    n, d = pre.shape
    groups = _topk_groups(d, k)
    if groups is None or n == 0:
        return None
    strided = pre.view(n, d // groups, groups)  # [row, c // B, c % B]
    # NaN/inf need no check here (a host sync on GPU): topk ranks NaN first and
    # relu keeps NaN and inf, so they reach the pooled codes, which are checked.
    chosen = _topk_indices(strided.amax(1), k)  # [row, k] group ids
    candidates = strided.gather(2, chosen[:, None, :].expand(n, d // groups, k)).reshape(n, -1)
    at = _topk_indices(candidates, k)
    top = candidates.gather(1, at)
    columns = chosen.gather(1, at % k) + (at // k) * groups
    return torch.arange(n, device=pre.device).repeat_interleave(k), columns.flatten(), top.relu().flatten()


def _encode_pool_topk(sae: Any, topk: Any, tokens: torch.Tensor, rows: torch.Tensor, pooling: Pooling, out: torch.Tensor) -> bool:
    """Encode tokens with a TopK SAE and pool their k codes each straight into `out`; False if not applicable.

    `sae.encode` runs with its TopK module swapped for a pass-through, so every
    step of the SAE's own encode (input normalisation, b_dec, rescaling by the
    decoder norm, hooks) still applies; only the top-k selection and the dense
    scatter of its result are replaced.
    """
    sae.activation_fn = _CapturePreActivations()
    try:
        pre = sae.encode(tokens)
    finally:
        sae.activation_fn = topk
    found = _topk_candidates(pre, int(topk.k))
    if found is None:
        return False
    token, column, value = found
    flat = rows[token] * out.shape[1] + column
    if pooling == "mean":
        out.view(-1).index_add_(0, flat, value.to(out.dtype))
    else:
        out.view(-1).scatter_reduce_(0, flat, value.to(out.dtype), reduce="amax")
    return True


def _pad(sequences: list[list[int]], pad_value: int) -> torch.Tensor:
    out = np.full((len(sequences), max(map(len, sequences))), pad_value, dtype=np.int64)
    for i, seq in enumerate(sequences):
        out[i, : len(seq)] = seq
    return torch.from_numpy(out)


def _encode_batch(
    texts: list[str],
    ids: list[list[int]],
    special: list[list[int]],
    model: torch.nn.Module,
    point: HookPoint,
    pad_id: int,
    sae: Any,
    pooling: Pooling,
    outlier_norm_ratio: float | None = None,
) -> np.ndarray:
    """Pooled SAE codes of one batch of tokenised prompts (right-padded here, no re-tokenisation)."""
    device = _model_device(model)
    input_ids = _pad(ids, pad_id)
    attention_mask = _pad([[1] * len(x) for x in ids], 0)
    token_mask = attention_mask.bool() & ~_pad(special, 1).bool()  # real, non-special tokens (built on the host)
    acts = capture(model, point, input_ids.to(device), attention_mask.to(device), int(sae.cfg.d_in))
    if outlier_norm_ratio is not None:
        token_mask &= outlier_token_mask(acts, token_mask, outlier_norm_ratio)
    counts = token_mask.sum(1)
    where = token_mask.flatten().nonzero()[:, 0]  # host-side indices: no device sync to size the selection
    sae_device = sae.W_enc.device
    rows = (where // token_mask.shape[1]).to(sae_device)
    # Encode only real tokens, in chunks: a dense batch × tokens × d_sae tensor
    # would take gigabytes for a 16k-feature SAE, and padding needs no encoding.
    tokens = acts.reshape(-1, acts.shape[-1]).index_select(0, where.to(acts.device)).to(sae_device, sae.W_enc.dtype)
    chunk = max(1, _ENCODE_CHUNK_ELEMENTS // int(sae.cfg.d_sae))
    topk = _topk_module(sae)
    pooled = tokens.new_zeros(len(texts), int(sae.cfg.d_sae))
    for start in range(0, tokens.shape[0], chunk):
        part, part_rows = tokens[start : start + chunk], rows[start : start + chunk]
        part = sae_input(sae, point, part)
        if topk is not None and _encode_pool_topk(sae, topk, part, part_rows, pooling, pooled):
            continue
        pool_token_codes(sae.encode(part), part_rows, len(texts), pooling, pooled)
    pooled = pooled.float()
    if pooling == "mean":
        pooled /= counts.clamp_min(1)[:, None].to(pooled)
    return pooled.cpu().numpy()


def outlier_token_mask(acts: torch.Tensor, token_mask: torch.Tensor, ratio: float) -> torch.Tensor:
    """Tokens whose residual norm is at most `ratio` × the median norm of their prompt's kept tokens.

    Attention-sink tokens (Qwen's first tokens, for one) reach 100–1000× the
    median norm and would dominate a pooled code; a zoo entry that names a
    ratio is featurized with them dropped, as it was trained. Per prompt, so a
    prompt's features do not depend on its batch-mates.
    """
    norms = acts.float().norm(dim=-1).cpu()
    median = norms.masked_fill(~token_mask, float("nan")).nanmedian(dim=1).values
    return norms <= ratio * median[:, None]


def _featurize_shard(
    texts: list[str],
    model: torch.nn.Module,
    tokenizer: Any,
    sae: Any,
    point: HookPoint,
    pooling: Pooling,
    batch_size: int,
    max_length: int,
    bar: tqdm,
    preprocessing: SaePreprocessing,
    first: int = 0,
) -> tuple[sp.csr_matrix, int]:
    """Featurize one shard, batching prompts of similar length so padding is small; also count the prompts cut.

    The shard is tokenised once (lengths for the sort and the ids of every
    batch come from the same call); batches are padded from those ids.
    `first` is the index of the shard's first prompt in the whole set, for messages.
    """
    # An SAE trained with sae-lens's prepend_bos=False saw sequences without BOS (which every later token attends to).
    add_special = preprocessing.prepend_bos
    ids = tokenizer(texts, truncation=True, max_length=max_length, return_attention_mask=False,
                    add_special_tokens=add_special)["input_ids"]
    n_truncated = _count_truncated(tokenizer, [t for t, x in zip(texts, ids) if len(x) == max_length], max_length, add_special)
    if preprocessing.special_tokens == "keep":  # the artifact was trained with BOS & co. included
        special = [[0] * len(x) for x in ids]
    else:
        special = special_token_mask(tokenizer, ids)
    empty = [i for i, mask in enumerate(special) if all(mask)]
    if empty:
        raise ValueError(f"{len(empty)} prompts have no tokens besides special tokens: {numbered_prompts(empty, texts, first=first)}")
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    order = np.argsort(lengths, kind="stable")[::-1]
    pad_id = padding_id(tokenizer)
    batches: list[sp.csr_matrix] = []
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        pooled = _encode_batch(
            [texts[i] for i in idx], [ids[i] for i in idx], [special[i] for i in idx], model, point, pad_id, sae, pooling,
            preprocessing.outlier_norm_ratio,
        )
        batches.append(sp.csr_matrix(pooled))
        bar.update(len(idx))
    shard = sp.vstack(batches, format="csr")[np.argsort(order)].astype(np.float32)
    coo = shard.tocoo()
    bad = np.unique(coo.row[~np.isfinite(coo.data)])
    if len(bad):
        raise ValueError(f"NaN/inf in the SAE features of {len(bad)} prompts: {numbered_prompts(bad, texts, first=first)}")
    return shard, n_truncated


def _count_truncated(tokenizer: Any, at_limit: list[str], max_length: int, add_special_tokens: bool) -> int:
    """How many of the texts that filled all `max_length` tokens had more: one token more of room tells.

    (Special tokens the tokenizer appends are kept by truncation, so dropping
    the last of max_length + 1 ids would not do; only texts at the limit are
    tokenised again.)
    """
    if not at_limit:
        return 0
    longer = tokenizer(at_limit, truncation=True, max_length=max_length + 1, return_attention_mask=False,
                       add_special_tokens=add_special_tokens)["input_ids"]
    return sum(len(x) > max_length for x in longer)


def _fingerprint(
    prompts: list[str], model: torch.nn.Module, tokenizer: Any, sae: Any, point: HookPoint, pooling: str, max_length: int, shard_size: int
) -> dict[str, Any]:
    """What a cache was computed from; a mismatch means its shards are not reusable."""
    prompts_hash = hashlib.sha256()
    for p in prompts:
        prompts_hash.update(hashlib.sha256(p.encode()).digest())
    sae_hash = hashlib.sha256(sae.W_enc.detach().float().cpu().numpy().tobytes()).hexdigest()[:16]
    model_hash = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    first_weight = next(point.module.parameters(), None)
    if first_weight is None:  # a parameter-free module (a norm-less block input): the block's own weights
        first_weight = next(decoder_layers(model)[point.layer or 0].parameters())
    model_hash.update(first_weight.detach().float().flatten()[:65536].cpu().numpy().tobytes())
    return {
        "version": CACHE_VERSION,
        "n_prompts": len(prompts),
        "prompts_sha256": prompts_hash.hexdigest(),
        "model": str(getattr(model, "name_or_path", "")),
        "model_sha256": model_hash.hexdigest()[:16],
        "tokenizer_vocab": len(tokenizer),
        "sae_sha256": sae_hash,
        "d_sae": int(sae.cfg.d_sae),
        "hook": point.describe(),
        "pooling": pooling,
        "max_length": max_length,
        "shard_size": shard_size,
    }


def _open_cache(cache_root: Path, fingerprint: dict[str, Any]) -> Path:
    """The cache folder of these inputs: `cache_root/<hash of the fingerprint>`, created with its manifest.

    Keying the folder by the inputs lets one cache root serve any number of
    prompt sets, models and settings side by side: a run with other inputs
    gets a folder of its own instead of an error, and a rerun finds its shards.
    """
    key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]
    cache_dir = cache_root / key
    manifest = cache_dir / "manifest.json"
    if not manifest.exists():
        write_json(manifest, fingerprint)
    elif read_json(manifest) != fingerprint:  # only a hand-edited or foreign manifest gets here
        raise ValueError(f"{manifest} does not describe the inputs its folder name was made from; delete {cache_dir}")
    return cache_dir


def shard_path(cache_dir: str | os.PathLike[str], shard: int) -> Path:
    """Where shard `shard` of a featurize cache lives (shards cover `shard_size` prompts each, in order)."""
    return Path(cache_dir) / f"shard-{shard:05d}.safetensors"


@dataclasses.dataclass
class FeaturizeJob:
    """Checked inputs of one featurization, cut into shards; shared by `featurize` and its data-parallel twin."""

    prompts: list[str]
    model: torch.nn.Module
    tokenizer: Any
    sae: Any
    point: HookPoint
    pooling: Pooling
    batch_size: int
    max_length: int
    shard_size: int
    cache: Path | None  # this input set's folder inside the caller's cache_dir
    preprocessing: SaePreprocessing

    @classmethod
    def prepare(cls, prompts, model, tokenizer, sae, layer, pooling, batch_size, max_length, shard_size, cache_dir) -> FeaturizeJob:
        """Validate everything before any work, load the SAE, and open (or check) the cache."""
        prompts = _check_prompts(prompts)
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
        if batch_size < 1 or shard_size < 1 or max_length < 1:
            raise ValueError("batch_size, shard_size and max_length must be positive")
        from saerl_zoo.zoo.api import load_sae

        sae = load_sae(sae, device=str(_model_device(model)))
        # The SAE states how it must be fed (context length, special and outlier tokens, BOS); honour it.
        # The tokens read are the fewest of: what the caller asked, the SAE's context (zoo entry, sae-lens's
        # context_size / seqpos_slice) and the model's context; prompts cut are counted.
        preprocessing = sae_preprocessing(sae)
        max_length = preprocessing.token_limit(max_length, model_context(model, tokenizer))
        point = resolve(model, sae, layer)
        job = cls(prompts, model, tokenizer, sae, point, pooling, batch_size, max_length, shard_size,
                  Path(cache_dir) if cache_dir is not None else None, preprocessing)
        if job.cache is not None:
            fingerprint = _fingerprint(prompts, model, tokenizer, sae, point, pooling, max_length, shard_size)
            fingerprint["preprocessing"] = {k: v for k, v in preprocessing.to_dict().items() if k != "context_length"}
            job.cache = _open_cache(job.cache, fingerprint)
        return job

    @property
    def n_shards(self) -> int:
        return math.ceil(len(self.prompts) / self.shard_size)

    def shard_texts(self, s: int) -> list[str]:
        return self.prompts[s * self.shard_size : (s + 1) * self.shard_size]

    def shard_path(self, s: int) -> Path | None:
        return shard_path(self.cache, s) if self.cache is not None else None

    @contextlib.contextmanager
    def running(self):
        """Eval mode and inference mode for the duration; the model's mode is restored after."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                yield
        finally:
            self.model.train(was_training)

    def compute_shard(self, s: int, bar: tqdm) -> tuple[sp.csr_matrix, int]:
        """Featurize shard `s` and, with a cache, write it atomically; also return how many of its prompts were cut."""
        texts = self.shard_texts(s)
        shard, n_truncated = _featurize_shard(
            texts, self.model, self.tokenizer, self.sae, self.point, self.pooling, self.batch_size, self.max_length, bar, self.preprocessing,
            first=s * self.shard_size,
        )
        path = self.shard_path(s)
        if path is not None:
            start = s * self.shard_size
            save_csr(path, shard, {"shard": str(s), "rows": json.dumps([start, start + len(texts)]), "truncated": str(n_truncated)})
        return shard, n_truncated

    def load_shard(self, s: int) -> tuple[sp.csr_matrix, int]:
        """A cached shard and the number of its prompts that were cut, as `compute_shard` wrote them."""
        path = self.shard_path(s)
        truncated = read_metadata(path).get("truncated")
        if truncated is None:
            raise ValueError(f"{path} does not record how many prompts were truncated; delete the cache folder {self.cache}")
        return load_csr(path), int(truncated)


@dataclasses.dataclass(frozen=True)
class FeaturizeInfo:
    """What featurize did that the matrix cannot show: the tokens it read per prompt and how many prompts had more."""

    n_prompts: int
    max_length: int  # the smallest of the requested max_length, the SAE entry's context, the SAE's training context and the model's context
    n_truncated: int

    def truncation_note(self) -> str | None:
        """One line when prompts were cut, else None."""
        if not self.n_truncated:
            return None
        return f"{self.n_truncated} of {self.n_prompts} prompts were longer than {self.max_length} tokens and were truncated to it"


def featurize(
    prompts: Sequence[str],
    model: torch.nn.Module,
    tokenizer: Any,
    sae: Any,
    *,
    layer: int | None = None,
    pooling: Pooling = "mean",
    batch_size: int = 32,
    max_length: int = 512,
    cache_dir: str | os.PathLike[str] | None = None,
    shard_size: int = 4096,
    progress: bool = True,
    return_info: bool = False,
) -> sp.csr_matrix | tuple[sp.csr_matrix, FeaturizeInfo]:
    """One pooled SAE code per prompt: a CSR matrix of shape (len(prompts), d_sae).

    The SAE's recorded hook decides what is read (`saerl_zoo.hooks`); `layer`
    (decoder blocks from 0) may only repeat its block, and for an SAE that
    records no hook it reads that block's output (`hidden_states[layer + 1]`).
    `sae` is a sae-lens `SAE` or its saved folder.
    With `cache_dir`, finished shards go to `cache_dir/<hash of the inputs>/`
    and a rerun with the same inputs loads them instead of computing.
    Prompts are cut at `max_length` tokens, or earlier at the context the SAE
    was trained on (`sae_context`) or the model's own (`model_context`); with `return_info` the result is
    `(matrix, FeaturizeInfo)`, which says how many prompts were cut.
    """
    job = FeaturizeJob.prepare(prompts, model, tokenizer, sae, layer, pooling, batch_size, max_length, shard_size, cache_dir)
    shards: list[sp.csr_matrix] = []
    n_truncated = 0
    with job.running(), tqdm(total=len(job.prompts), desc="featurize", unit="prompt", disable=not progress) as bar:
        for s in range(job.n_shards):
            path = job.shard_path(s)
            if path is not None and path.exists():
                shard, cut = job.load_shard(s)
                bar.update(len(job.shard_texts(s)))
            else:
                shard, cut = job.compute_shard(s, bar)
            shards.append(shard)
            n_truncated += cut
    X = sp.vstack(shards, format="csr")
    return (X, FeaturizeInfo(len(job.prompts), job.max_length, n_truncated)) if return_info else X


def raw_activation_sae(d_in: int, layer: int, like: Any | None = None) -> Any:
    """A lossless stand-in SAE whose codes are the raw residual stream itself.

    Published work finds SAE probes do not always beat probes on the raw
    activations, so every SaeRL number deserves that baseline, run through the
    very same featurize → probes → clusters → sampler path. A real sae-lens
    ``StandardSAE`` with encoder ``[I, -I]`` and ReLU splits each activation
    into its positive and negative parts (d_sae = 2·d_in); decoding with
    ``[I; -I]`` gives the input back exactly, and pooled codes hold the pooled
    activation (``mean(x) = mean(relu(x)) - mean(relu(-x))``).

    Pass the SAE it stands in for as `like`: the baseline then reads the same
    tokens (context, special tokens, attention sinks, BOS), so a gap between
    the two arms comes from the features, not from a different token window.
    """
    from sae_lens import StandardSAE, StandardSAEConfig

    cfg = StandardSAEConfig(d_in=d_in, d_sae=2 * d_in, dtype="float32", device="cpu", apply_b_dec_to_input=False)
    cfg.metadata.hook_name = f"model.layers.{layer}"
    sae = StandardSAE(cfg)
    eye = torch.eye(d_in)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    if like is not None:
        record_preprocessing(sae, **sae_preprocessing(like).to_dict())
    return sae.requires_grad_(False)
