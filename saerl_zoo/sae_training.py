"""Train and measure a sae-lens SAE on any local Hugging Face causal LM, offline.

The embedded default, the reproduction's real-model study and the transfer
table all need the same three things: token rows to train on, sae-lens's own
training runner pointed at a local model and an in-memory dataset (no Hub, no
wandb), and every real token's activation at the SAE's block, for held-out
metrics (:func:`saerl_zoo.zoo.api.sae_metrics`). They live here once.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["AttentionSinks", "SINK_NORM_RATIO", "block_outputs", "find_attention_sinks", "geometric_median", "sae_sequences",
           "site_activations", "train_sae"]

# Attention sinks reach 100-1000x their text's median residual norm (the first token of a model without BOS, for
# one); ordinary tokens stay within a few times it. 10x separates the two with room on both sides.
SINK_NORM_RATIO = 10.0


def sae_sequences(tokenizer: Any, texts: list[str], context: int) -> list[list[int]]:
    """One text per row, tokenized as the tokenizer does by default (BOS when
    it adds one), cut to ``context`` and right-padded with PAD: pads and BOS are
    excluded from training, so every activation the SAE sees is a real token
    at its real position."""
    rows = []
    for ids in tokenizer(texts)["input_ids"]:
        ids = ids[:context]
        rows.append(ids + [tokenizer.pad_token_id] * (context - len(ids)))
    return rows


def train_sae(
    model_path: str | os.PathLike[str],
    rows: list[list[int]],
    *,
    layer: int | None = None,
    hook_name: str | None = None,
    model: Any = None,
    tokenizer: Any = None,
    d_in: int,
    d_sae: int,
    k: int,
    training_tokens: int,
    exclude_token_ids: list[int],
    batch_tokens: int = 1024,
    lr: float = 2e-3,
    arch: str = "topk",
    aux_loss_coefficient: float = 1.0,
    dead_feature_window: int = 50,
    store_batch_size_prompts: int = 64,
    n_batches_in_buffer: int = 128,
    dataset_label: str = "in-memory token rows",
    device: str = "cpu",
    seed: int = 0,
    skip_leading: int = 0,
    b_dec_init: torch.Tensor | None = None,
) -> Any:
    """Train a TopK (or BatchTopK) SAE on the output of decoder block ``layer``
    (or of the module ``hook_name``, a Hugging Face module path) with sae-lens's
    ``LanguageModelSAETrainingRunner``, on the model saved at ``model_path``
    (safetensors) and the pretokenized ``rows`` (all of length ``len(rows[0])``).
    An already loaded ``model`` + ``tokenizer`` (e.g. from a GGUF file) is
    wrapped as sae-lens wraps its own; ``model_path`` is then only recorded as
    the SAE's ``model_name``. ``skip_leading`` positions of every row are left
    out of training (sae-lens's ``seqpos_slice``): an attention sink at the
    first token would otherwise dominate the reconstruction loss.
    ``b_dec_init`` starts the decoder bias there (a centre of the activations:
    their mean as sparsify starts it, or their :func:`geometric_median` as
    OpenAI's TopK SAEs do): sae-lens starts it at zero, and a residual stream
    whose centre is far from zero (SmolLM2's mean is ~130 in norm) leaves a
    short run unable to reach it. Returns the trained sae-lens SAE."""
    import datasets
    from sae_lens import (BatchTopKTrainingSAEConfig, LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner,
                          LoggingConfig, TopKTrainingSAEConfig, TrainingSAE, TrainingSAEConfig)
    from sae_lens.load_model import load_model

    if arch not in ("topk", "batchtopk"):
        raise ValueError(f"arch must be 'topk' or 'batchtopk', got {arch!r}")
    if (layer is None) == (hook_name is None):
        raise ValueError("give exactly one of layer and hook_name")
    hook_name = hook_name or f"model.layers.{layer}"  # HF module name = output of decoder block L
    sae_config = {"topk": TopKTrainingSAEConfig, "batchtopk": BatchTopKTrainingSAEConfig}[arch](
        d_in=d_in, d_sae=d_sae, k=k, aux_loss_coefficient=aux_loss_coefficient,
        rescale_acts_by_decoder_norm=True, dtype="float32", device=device,
    )
    steps = training_tokens // batch_tokens
    cfg = LanguageModelSAERunnerConfig(
        sae=sae_config,
        model_name=str(model_path), model_class_name="AutoModelForCausalLM", hook_name=hook_name,
        dataset_path=dataset_label, is_dataset_tokenized=True,
        streaming=False, context_size=len(rows[0]), prepend_bos=True,
        exclude_special_tokens=exclude_token_ids, seqpos_slice=(skip_leading, None) if skip_leading else (None,),
        training_tokens=training_tokens, train_batch_size_tokens=batch_tokens,
        store_batch_size_prompts=store_batch_size_prompts, n_batches_in_buffer=n_batches_in_buffer,
        lr=lr, lr_warm_up_steps=50, lr_scheduler_name="cosineannealing", lr_decay_steps=steps // 2,
        dead_feature_window=dead_feature_window, feature_sampling_window=1000,
        device=device, seed=seed, logger=LoggingConfig(log_to_wandb=False),
        checkpoint_path=None, output_path=None, verbose=False,
    )
    if model is None:
        lm = load_model("AutoModelForCausalLM", str(model_path), device=device, hook_names=[hook_name])
    else:
        from sae_lens.load_model import HookedProxyLM

        lm = HookedProxyLM(model, tokenizer, hook_names=[hook_name])
    dataset = datasets.Dataset.from_dict({"input_ids": rows})
    torch.manual_seed(seed)
    sae = None
    if b_dec_init is not None:
        sae = TrainingSAE.from_dict(TrainingSAEConfig.from_dict(cfg.get_training_sae_cfg_dict()).to_dict())
        with torch.no_grad():
            sae.b_dec.copy_(b_dec_init.to(sae.b_dec))
    return LanguageModelSAETrainingRunner(cfg, override_model=lm, override_dataset=dataset, override_sae=sae).run()


def geometric_median(points: torch.Tensor, max_iter: int = 200, rtol: float = 1e-6) -> torch.Tensor:
    """The point with the least summed distance to `points` (rows): Weiszfeld's iteration from their mean, with
    Vardi and Zhang's step where the estimate sits on a row (plain Weiszfeld stops there, median or not).

    A robust centre for the decoder bias: the mean of a residual stream is
    pulled far by its few high-norm tokens, which OpenAI's TopK SAEs avoid by
    starting the bias here.
    """
    x = points.float()
    y = x.mean(0)
    scale = max(float(x.norm(dim=1).max()), 1e-30)
    for _ in range(max_iter):
        dist = (x - y).norm(dim=1)
        away = dist > 1e-7 * scale  # rows the estimate does not sit on
        if not away.any():  # every row is this point
            break
        weights = 1.0 / dist[away]
        pull = (weights[:, None] * x[away]).sum(0) / weights.sum()
        on_rows = int((~away).sum())
        if on_rows:  # Vardi-Zhang: move off a row only as far as the other rows' pull outweighs it
            r = float((weights[:, None] * (x[away] - y)).sum(0).norm())
            share = min(1.0, on_rows / r) if r > 0 else 1.0
            step = (1.0 - share) * pull + share * y
        else:
            step = pull
        done = (step - y).norm() <= rtol * max(float(y.norm()), 1e-30)
        y = step
        if done:
            break
    return y.to(points.dtype)


def block_outputs(model: Any, layer: int, rows: list[list[int]], pad_id: int, exclude_ids: tuple[int, ...] = (),
                  batch_size: int = 256) -> torch.Tensor:
    """Output of block ``layer`` (read the way the featurizer reads it) for
    every real token of ``rows``: pads and ``exclude_ids`` (e.g. BOS) dropped."""
    from saerl_zoo.hooks import HookSpec, bind

    point = bind(HookSpec(f"block {layer}", "resid_post", layer), model)
    return site_activations(model, point, rows, pad_id, exclude_ids, batch_size)


@torch.no_grad()
def site_activations(model: Any, point: Any, rows: list[list[int]], pad_id: int, exclude_ids: tuple[int, ...] = (),
                     batch_size: int = 256, outlier_norm_ratio: float | None = None) -> torch.Tensor:
    """The tensor at ``point`` (a :class:`saerl_zoo.hooks.HookPoint`, read as
    the featurizer reads it) for every real token of ``rows``: pads and
    ``exclude_ids`` (e.g. BOS) dropped, and with ``outlier_norm_ratio`` the
    attention sinks the featurizer drops too. Computed on the model's device
    (a GPU model is not copied back to the CPU)."""
    from saerl_zoo.featurizer import outlier_token_mask

    acts = []
    for hidden, keep in _site_batches(model, point, rows, pad_id, exclude_ids, batch_size):
        if outlier_norm_ratio is not None:
            keep &= outlier_token_mask(hidden, keep, outlier_norm_ratio).to(keep.device)
        acts.append(hidden[keep])
    return torch.cat(acts)


def _site_batches(model: Any, point: Any, rows: list[list[int]], pad_id: int, exclude_ids: tuple[int, ...],
                  batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Each batch's tensor at ``point`` and its mask of real tokens (not pad, not ``exclude_ids``)."""
    from saerl_zoo.hooks import capture

    device = next(model.parameters()).device
    for start in range(0, len(rows), batch_size):
        x = torch.tensor(rows[start : start + batch_size], device=device)
        hidden = capture(model, point, x, (x != pad_id).long())
        keep = x != pad_id
        for token in exclude_ids:
            keep &= x != token
        yield hidden, keep


@dataclasses.dataclass(frozen=True)
class AttentionSinks:
    """Where tokens far above their text's median norm sit, in a sample of training rows."""

    ratio: float  # a sink: norm > ratio x the median norm of its text's kept tokens
    rows: int
    tokens: int  # kept tokens (not pad, not excluded) in the sample
    at_first: int  # rows whose first kept token is a sink
    elsewhere: int  # sinks at any later position
    first_positions: tuple[int, ...]  # the positions the rows' first kept tokens sit at

    @property
    def found(self) -> bool:
        return bool(self.at_first or self.elsewhere)

    @property
    def skip_leading(self) -> int:
        """Leading positions to leave out of training: through the first kept token when that is where the sinks are
        (in every row at one position, as a model without BOS makes them); 0 otherwise."""
        if self.at_first and self.at_first == self.rows and len(self.first_positions) == 1:
            return self.first_positions[0] + 1
        return 0


@torch.no_grad()
def find_attention_sinks(model: Any, point: Any, rows: list[list[int]], pad_id: int, exclude_ids: tuple[int, ...],
                         ratio: float = SINK_NORM_RATIO, batch_size: int = 32) -> AttentionSinks:
    """Measure attention sinks at ``point`` on ``rows``, with the rule readers drop them by (``outlier_token_mask``)."""
    from saerl_zoo.featurizer import outlier_token_mask

    tokens = at_first = elsewhere = 0
    firsts: set[int] = set()
    for hidden, keep in _site_batches(model, point, rows, pad_id, exclude_ids, batch_size):
        keep = keep.cpu()
        sink = keep & ~outlier_token_mask(hidden, keep, ratio)
        first = keep.int().argmax(dim=1)  # the first kept position of each row
        rows_with = keep.any(dim=1)
        is_first_sink = sink[torch.arange(len(keep)), first] & rows_with
        tokens += int(keep.sum())
        at_first += int(is_first_sink.sum())
        elsewhere += int(sink.sum()) - int(is_first_sink.sum())
        firsts |= {int(p) for p, r in zip(first, rows_with) if r}
    return AttentionSinks(ratio, len(rows), tokens, at_first, elsewhere, tuple(sorted(firsts)))
