"""GRPO in one file, on plain transformers + torch (nanoGPT / nano-aha-moment style).

One training step, in the order the functions below appear:

1. take ``prompts_per_step`` prompt indices from the sampler   (:class:`PromptStream`)
2. sample a group of ``group_size`` completions per prompt     (:func:`sample_completions`)
3. score every completion with a verifier                      (:func:`score_completions`)
4. group-normalised advantages, ``(r - mean) / (std + eps)``    (:func:`group_advantages`)
   (optionally drop groups whose rewards are all equal: DAPO dynamic sampling, :func:`informative_groups`)
5. log-probs of the completion tokens under the policy         (:func:`completion_logprobs`)
6. clipped policy-ratio loss (+ k3 KL to a frozen reference)   (:func:`grpo_loss`)
7. gradient accumulation, clipping, AdamW step                 (:func:`train_step`)

:func:`train` runs the steps, evaluates greedy accuracy on a held-out set every
``eval_every`` steps (per level too, when the rows carry a ``"level"``), logs to ``out_dir/log.jsonl`` and writes atomic
checkpoints (weights, optimiser, sampler position and every RNG state) from
which a killed run continues at the same step with the same next batch.

The prompt order is whatever ``torch.utils.data.Sampler`` is passed in, so
vanilla GRPO (``RandomSampler`` with a seeded generator, or
``SaeRLSampler(mixing=1)``) and SaeRL differ by that one argument.

Conventions: rows are dicts with a ``"prompt"`` string; the reward function
is ``reward_fn(completion: str, row: dict) -> float``. Dropout is not used
(the model stays in eval mode, as TRL's ``disable_dropout`` does), so the
policy ratio is exactly 1 on the first pass over a batch.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from saerl_zoo.storage import atomic_folder, atomic_path

__all__ = [
    "GRPOConfig",
    "PromptStream",
    "Rollout",
    "completion_logprobs",
    "eval_record",
    "evaluate",
    "evaluate_rows",
    "group_advantages",
    "grpo_loss",
    "informative_groups",
    "latest_checkpoint",
    "sample_completions",
    "score_completions",
    "train",
    "train_step",
]

RewardFn = Callable[[str, dict], float]
CHECKPOINT_PREFIX = "checkpoint-"
LOG_NAME = "log.jsonl"


@dataclasses.dataclass
class GRPOConfig:
    """Every knob of the loop; the defaults suit a small model on a verifiable task."""

    prompts_per_step: int = 8  # prompts per optimiser step (each gets a group of completions)
    group_size: int = 8  # G: completions sampled per prompt
    max_new_tokens: int = 32
    temperature: float = 1.0  # sampling temperature; log-probs use the same temperature
    lr: float = 1e-5
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # gradient clipping (0 = off)
    clip_eps: float = 0.2  # PPO clip range: ratio in [1 - clip_eps, 1 + clip_eps_high]
    clip_eps_high: float | None = None  # None = clip_eps; DAPO "clip-higher" uses e.g. 0.28
    kl_coef: float = 0.0  # weight of the k3 KL to a frozen reference model (0 = no reference)
    num_iterations: int = 1  # optimisation passes per sampled batch (PPO epochs, "mu")
    grad_accum_steps: int = 1  # micro-batches per pass (same result, less memory)
    num_steps: int = 100
    eval_every: int = 0  # evaluate every N steps, and before the first and after the last (0 = never)
    eval_batch: int = 64  # prompts per greedy generation call during evaluation
    dr_grpo: bool = False  # Dr. GRPO: no std normalisation, token sum / max_new_tokens
    dynamic_sampling: bool = False  # DAPO: drop groups whose rewards are all equal
    oversample: int = 1  # DAPO: sample groups for prompts_per_step * oversample prompts, train on the first
    #                      prompts_per_step informative ones (an online pass-rate filter; costs rollouts)
    seed: int = 0  # seeds python, numpy and torch at the start of a fresh run
    checkpoint_every: int = 0  # write a checkpoint every N steps, and after the last (0 = only after the last)
    keep_checkpoints: int = 1  # how many recent checkpoints to keep on disk
    out_dir: str | None = None  # log.jsonl and checkpoints; None = nothing written, no resume
    resume: bool = True  # continue from the latest checkpoint in out_dir if there is one
    log: bool = True  # print one progress line per step

    def __post_init__(self) -> None:
        for name in ("prompts_per_step", "group_size", "max_new_tokens", "num_iterations", "grad_accum_steps",
                     "eval_batch", "keep_checkpoints", "oversample"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_steps", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 for sampling, got {self.temperature}")
        if self.clip_eps < 0 or (self.clip_eps_high is not None and self.clip_eps_high < 0):
            raise ValueError("clip_eps and clip_eps_high must be >= 0")
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {self.kl_coef}")
        if self.oversample > 1 and not self.dynamic_sampling:
            raise ValueError("oversample > 1 needs dynamic_sampling=True: it refills the groups dynamic sampling drops")


# ----------------------------------------------------------------------------
# 1. prompts: an endless, resumable stream of indices from any sampler


class PromptStream:
    """Prompt indices from a sampler, epoch after epoch, resumable at any index.

    Each epoch calls ``sampler.set_epoch(epoch)`` when the sampler has it.
    ``consumed`` counts indices handed to the loop in the current epoch, i.e.
    prompts actually trained on. For exact resume a sampler with
    ``state_dict``/``load_state_dict`` (like :class:`~saerl_zoo.sampler.SaeRLSampler`)
    saves its own position; for any other sampler the stream snapshots the RNG
    states the sampler draws from (its ``generator`` attribute and the global
    python / numpy / torch RNGs) when an epoch starts, and on resume replays
    the epoch up to ``consumed``.
    """

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self.epoch = 0
        self.consumed = 0
        self._iterator: Iterator[int] | None = None
        self._epoch_start_rng: dict[str, Any] | None = None
        self._stateful = hasattr(sampler, "state_dict") and hasattr(sampler, "load_state_dict")

    def _start_epoch(self) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(self.epoch)
        if not self._stateful:
            self._epoch_start_rng = {"global": get_rng_state(), "generator": self._generator_state()}
        self._iterator = iter(self.sampler)

    def _generator_state(self) -> torch.Tensor | None:
        generator = getattr(self.sampler, "generator", None)
        return generator.get_state() if isinstance(generator, torch.Generator) else None

    def take(self, k: int) -> list[int]:
        """The next ``k`` indices, starting a new epoch when the sampler runs out."""
        out: list[int] = []
        while len(out) < k:
            if self._iterator is None:
                self._start_epoch()
            try:
                out.append(int(next(self._iterator)))
                self.consumed += 1
            except StopIteration:
                if self.consumed == 0:
                    raise ValueError(f"the sampler yielded no indices in epoch {self.epoch}") from None
                self.epoch, self.consumed, self._iterator = self.epoch + 1, 0, None
        return out

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"epoch": self.epoch, "consumed": self.consumed}
        if self._stateful:
            state["sampler"] = self.sampler.state_dict()
        else:
            state["epoch_start_rng"] = self._epoch_start_rng if self._iterator is not None else None
            state["generator"] = self._generator_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.consumed, self._iterator = int(state["epoch"]), int(state["consumed"]), None
        if self._stateful:
            self.sampler.load_state_dict(state["sampler"])
            return
        generator = getattr(self.sampler, "generator", None)
        if state["generator"] is not None and isinstance(generator, torch.Generator):
            generator.set_state(state["generator"])
        start = state["epoch_start_rng"]
        if start is None:  # the epoch had not started: the next take() starts it as the original run did
            return
        # Replay the epoch from its starting RNG states up to the saved position.
        current = get_rng_state()
        set_rng_state(start["global"])
        if start["generator"] is not None and isinstance(generator, torch.Generator):
            generator.set_state(start["generator"])
        consumed, self.consumed = self.consumed, 0
        self._start_epoch()
        self._epoch_start_rng = start
        for _ in range(consumed):
            next(self._iterator)
        self.consumed = consumed
        set_rng_state(current)


# ----------------------------------------------------------------------------
# 2. sample a group of completions per prompt


@dataclasses.dataclass
class Rollout:
    """Prompts (left-padded) and their sampled completions (right-padded after EOS)."""

    prompt_ids: torch.Tensor  # [B, P]
    prompt_mask: torch.Tensor  # [B, P], 0 on left padding
    completion_ids: torch.Tensor  # [B, L]
    completion_mask: torch.Tensor  # [B, L], 1 up to and including the first EOS
    texts: list[str]  # decoded completions, special tokens removed
    ended: torch.Tensor  # [B] bool: stopped at EOS; False: cut at max_new_tokens, its answer possibly still to come

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    def select(self, rows: torch.Tensor | slice) -> Rollout:
        pick = [self.texts[i] for i in torch.arange(len(self))[rows].tolist()]
        return Rollout(self.prompt_ids[rows], self.prompt_mask[rows], self.completion_ids[rows],
                       self.completion_mask[rows], pick, self.ended[rows])


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer and the model's generation config have no EOS token")
    return [int(e) for e in eos] if isinstance(eos, (list, tuple)) else [int(eos)]


def _pad_id(tokenizer: Any, eos_ids: list[int]) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]


def _left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> left-padded ids and attention mask (works without a tokenizer pad token)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids, mask


@contextlib.contextmanager
def _plain_generation_config(model: Any) -> Iterator[None]:
    """Hide the model's saved generation defaults (top_k, repetition penalty, ...)
    so sampling is exactly softmax(logits / temperature), the distribution the
    loss computes log-probs under."""
    from transformers import GenerationConfig

    saved = getattr(model, "generation_config", None)
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = saved


@torch.no_grad()
def sample_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    *,
    group_size: int,
    max_new_tokens: int,
    temperature: float | None,
) -> Rollout:
    """``group_size`` completions per prompt, rows grouped prompt by prompt.

    A prompt is text, tokenized here with the tokenizer's special tokens, or a
    list of token ids used as they are (a chat-templated prompt already holds
    its special tokens; tokenizing its text again would double its BOS).
    Prompts are left-padded with an attention mask (``generate`` derives the
    positions from it); ``temperature=None`` decodes greedily.
    """
    eos_ids = _eos_ids(model, tokenizer)
    pad_id = _pad_id(tokenizer, eos_ids)
    device = next(model.parameters()).device
    encoded = tokenizer(list(prompts))["input_ids"] if all(isinstance(p, str) for p in prompts) else [list(p) for p in prompts]
    prompt_ids, prompt_mask = _left_pad([ids for ids in encoded for _ in range(group_size)], pad_id)
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    sampling = temperature is not None
    with _plain_generation_config(model):
        out = model.generate(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            max_new_tokens=max_new_tokens,
            do_sample=sampling,
            temperature=temperature if sampling else 1.0,
            top_k=0,
            top_p=1.0,
            pad_token_id=pad_id,
            eos_token_id=eos_ids,
            bos_token_id=tokenizer.bos_token_id,
        )
    completion = out[:, prompt_ids.shape[1]:]
    is_eos = torch.isin(completion, torch.tensor(eos_ids, device=device))
    # 1 up to and including the first EOS; everything after it is padding from generate
    after_eos = (is_eos.cumsum(-1) - is_eos.long()) > 0
    mask = (~after_eos).long()
    completion = completion.masked_fill(after_eos, pad_id)
    texts = tokenizer.batch_decode(completion.masked_fill(mask == 0, pad_id), skip_special_tokens=True)
    return Rollout(prompt_ids, prompt_mask, completion, mask, texts, is_eos.any(-1))


# ----------------------------------------------------------------------------
# 3. score


def score_completions(texts: Sequence[str], rows: Sequence[dict], reward_fn: RewardFn, group_size: int) -> torch.Tensor:
    """Rewards as a ``[n_prompts, group_size]`` float tensor (completion ``i`` belongs to row ``i // G``)."""
    rewards = [float(reward_fn(text, rows[i // group_size])) for i, text in enumerate(texts)]
    bad = [r for r in rewards if not math.isfinite(r)]
    if bad:
        raise ValueError(f"reward_fn returned non-finite rewards: {bad[:3]}")
    return torch.tensor(rewards, dtype=torch.float32).view(len(rows), group_size)


# ----------------------------------------------------------------------------
# 4. advantages


def group_advantages(rewards: torch.Tensor, *, dr_grpo: bool = False, eps: float = 1e-4) -> torch.Tensor:
    """Per-group advantages of a ``[n_prompts, G]`` reward tensor.

    GRPO: ``(r - mean) / (std + eps)`` with the unbiased group std (as TRL).
    Dr. GRPO: ``r - mean``, no std normalisation (it up-weights groups that
    are almost all right or all wrong, a difficulty bias).
    """
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if dr_grpo:
        return centred
    std = rewards.std(dim=1, keepdim=True) if rewards.shape[1] > 1 else torch.zeros_like(centred)
    return centred / (std + eps)


def informative_groups(rewards: torch.Tensor) -> torch.Tensor:
    """DAPO dynamic sampling: a bool mask of the groups whose rewards are not all equal.

    A group with identical rewards has zero advantage everywhere, so it adds
    no policy gradient, only noise to the token normalisation (and KL).
    """
    return rewards.max(dim=1).values > rewards.min(dim=1).values


# ----------------------------------------------------------------------------
# 5. log-probs of the completion tokens


def completion_logprobs(
    model: Any,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """``log p(token | prefix)`` of each completion token, ``[B, L]`` (0 where masked).

    One forward over ``prompt + completion`` with an explicit attention mask
    and ``position_ids = cumsum(mask) - 1``, so a left-padded row gets the
    same positions (and log-probs) as the same text without padding. Logits
    are divided by the sampling temperature: the log-probs are those of the
    distribution the completions were drawn from.
    """
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    logits = out.logits
    length = completion_ids.shape[1]
    logits = logits[:, -length - 1 : -1].float() / temperature  # the logits that predict each completion token
    token_logits = logits.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    logp = token_logits - torch.logsumexp(logits, dim=-1)
    return logp * completion_mask


# ----------------------------------------------------------------------------
# 6. loss


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    ref_logp: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    dr_grpo: bool = False,
    max_len: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-sequence GRPO loss ``[B]`` (average it over the batch) and statistics.

    Per token: ``-min(ratio * A, clip(ratio, 1 - eps, 1 + eps_high) * A)``
    with ``ratio = exp(logp - old_logp)``, plus ``kl_coef * k3`` where
    ``k3 = exp(ref - logp) - (ref - logp) - 1`` (an unbiased, non-negative
    KL(policy || ref) estimator). Tokens are averaged per sequence (GRPO), or
    summed and divided by the constant ``max_len`` (Dr. GRPO, no length bias).
    """
    mask = mask.to(logp.dtype)
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    adv = advantages.unsqueeze(-1)  # one advantage for every token of a sequence
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + eps_high) * adv
    per_token = -torch.min(unclipped, clipped)
    kl = torch.zeros_like(per_token)
    if ref_logp is not None and kl_coef > 0:
        delta = ref_logp - logp
        kl = torch.exp(delta) - delta - 1
        per_token = per_token + kl_coef * kl
    if dr_grpo:
        if max_len is None:
            raise ValueError("dr_grpo needs max_len (the constant length normaliser)")
        per_seq = (per_token * mask).sum(-1) / max_len
    else:
        per_seq = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    n_tokens = mask.sum().clamp(min=1)
    stats = {
        "clip_frac": float(((clipped < unclipped).to(mask.dtype) * mask).sum() / n_tokens),
        "kl": float((kl.detach() * mask).sum() / n_tokens),
    }
    return per_seq, stats


# ----------------------------------------------------------------------------
# 7. one training step


def train_step(
    model: Any,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    rows: Sequence[dict],
    reward_fn: RewardFn,
    config: GRPOConfig,
    ref_model: Any | None = None,
) -> dict[str, Any]:
    """Sample, score, compute advantages and update the policy on one batch of prompts."""
    G = config.group_size
    rollout = sample_completions(model, tokenizer, [r["prompt"] for r in rows], group_size=G,
                                 max_new_tokens=config.max_new_tokens, temperature=config.temperature)
    rewards = score_completions(rollout.texts, rows, reward_fn, G)
    advantages = group_advantages(rewards, dr_grpo=config.dr_grpo)
    keep = informative_groups(rewards) if config.dynamic_sampling else torch.ones(len(rows), dtype=torch.bool)
    keep &= keep.cumsum(0) <= config.prompts_per_step  # with oversampling, the first informative groups fill the batch
    stats: dict[str, Any] = {
        "reward": float(rewards.mean()),
        "reward_std": float(rewards.std(dim=1).mean()) if G > 1 else 0.0,
        "solved_all": float((rewards.min(dim=1).values > 0).float().mean()),  # meaningful for 0/1 rewards
        "solved_none": float((rewards.max(dim=1).values <= 0).float().mean()),
        "completion_len": float(rollout.completion_mask.sum(-1).float().mean()),
        "groups_kept": int(keep.sum()),
        "rollouts": len(rows) * G,  # generation cost of the step
        "sample": rollout.texts[0],
        "group_rewards": rewards.tolist(),  # [prompt][completion], for logs and online feedback
    }
    if not keep.any():  # every group had equal rewards: nothing to learn from this batch
        stats.update(loss=None, kl=None, clip_frac=None, grad_norm=None)
        return stats

    seq_keep = keep.repeat_interleave(G)
    batch = rollout.select(seq_keep)
    device = batch.prompt_ids.device
    adv = advantages[keep].reshape(-1).to(device)
    n_seq = len(batch)
    micro = list(torch.arange(n_seq).chunk(min(config.grad_accum_steps, n_seq)))  # sequence indices per micro-batch

    def logprobs(m: Any, idx: torch.Tensor) -> torch.Tensor:
        return completion_logprobs(m, batch.prompt_ids[idx], batch.prompt_mask[idx], batch.completion_ids[idx],
                                   batch.completion_mask[idx], config.temperature)

    with torch.no_grad():
        # Old log-probs are needed separately only when a batch is reused; on the
        # first pass they equal the current log-probs (ratio = 1).
        old = [logprobs(model, idx) for idx in micro] if config.num_iterations > 1 else None
        ref = [logprobs(ref_model, idx) for idx in micro] if ref_model is not None and config.kl_coef > 0 else None

    losses, kls, clips, norms = [], [], [], []
    for _ in range(config.num_iterations):
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for j, idx in enumerate(micro):
            logp = logprobs(model, idx)
            per_seq, s = grpo_loss(
                logp, logp.detach() if old is None else old[j], adv[idx], batch.completion_mask[idx],
                clip_eps=config.clip_eps, clip_eps_high=config.clip_eps_high,
                ref_logp=None if ref is None else ref[j], kl_coef=config.kl_coef,
                dr_grpo=config.dr_grpo, max_len=config.max_new_tokens,
            )
            loss = per_seq.sum() / n_seq  # micro-batch share of the batch mean
            loss.backward()
            total += float(loss.detach())
            kls.append(s["kl"] * len(idx) / n_seq)
            clips.append(s["clip_frac"] * len(idx) / n_seq)
        if config.max_grad_norm > 0:
            norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)))
        optimizer.step()
        losses.append(total)
    optimizer.zero_grad(set_to_none=True)
    stats.update(
        loss=losses[0],  # the loss of the first pass, before any update on this batch
        kl=sum(kls) / config.num_iterations,
        clip_frac=sum(clips) / config.num_iterations,
        grad_norm=norms[0] if norms else None,
    )
    return stats


# ----------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def evaluate_rows(
    model: Any, tokenizer: Any, rows: Sequence[dict], reward_fn: RewardFn, *, max_new_tokens: int, batch_size: int = 64
) -> list[float]:
    """The reward of one greedy completion per row, in row order."""
    scores: list[float] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        rollout = sample_completions(model, tokenizer, [r["prompt"] for r in chunk], group_size=1,
                                     max_new_tokens=max_new_tokens, temperature=None)
        scores += [float(reward_fn(text, row)) for text, row in zip(rollout.texts, chunk)]
    return scores


def evaluate(
    model: Any, tokenizer: Any, rows: Sequence[dict], reward_fn: RewardFn, *, max_new_tokens: int, batch_size: int = 64
) -> float:
    """Mean reward of greedy completions (accuracy for a 0/1 verifier)."""
    scores = evaluate_rows(model, tokenizer, rows, reward_fn, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return float(np.mean(scores)) if scores else float("nan")


def eval_record(scores: Sequence[float], rows: Sequence[dict]) -> dict[str, Any]:
    """Accuracy of per-row scores, and per level (``by_level``) when every row has a ``"level"``.

    Why per level: a mean over levels hides where a curriculum helps (easy
    levels saturate, hard ones start at zero); the per-level curve shows it.
    """
    record: dict[str, Any] = {"accuracy": float(np.mean(scores)) if len(scores) else float("nan"), "n": len(scores)}
    if rows and all(row.get("level") is not None for row in rows):
        levels = sorted({row["level"] for row in rows})
        record["by_level"] = {str(level): float(np.mean([s for s, row in zip(scores, rows) if row["level"] == level]))
                              for level in levels}
    return record


# ----------------------------------------------------------------------------
# checkpoints: RNG states, atomic save, resume


def get_rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU + CUDA) RNG states as tensors and plain numbers."""
    version, mt, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(("MT19937", npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def latest_checkpoint(out_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint folder in ``out_dir`` (folders appear only complete)."""
    out = Path(out_dir)
    if not out.is_dir():
        return None
    steps = [(int(p.name[len(CHECKPOINT_PREFIX):]), p) for p in out.iterdir()
             if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and p.name[len(CHECKPOINT_PREFIX):].isdigit()]
    return max(steps)[1] if steps else None


def _frozen_digest(model: Any) -> str | None:
    """sha256 of a peft model's frozen weights (None for any other model).

    Why: a peft checkpoint holds only the adapters, so its frozen base is
    whatever model the resuming call passes in; on other base weights the
    "resumed" run would silently be another run. Computed once per
    :func:`train` call (the base does not change while training).
    """
    if not getattr(model, "peft_config", None):
        return None
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            digest.update(name.encode())
            digest.update(param.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(out_dir: Path, step: int, model: Any, tokenizer: Any, optimizer: torch.optim.Optimizer,
                    stream: PromptStream, config: GRPOConfig, *, frozen: str | None = None) -> Path:
    """Write ``out_dir/checkpoint-<step>`` atomically: build it in a temp folder, then rename.

    ``frozen`` is :func:`_frozen_digest` of the model, which :func:`load_checkpoint` checks.
    """
    final = out_dir / f"{CHECKPOINT_PREFIX}{step:07d}"
    with atomic_folder(final) as tmp:  # a re-run of the same step replaces it
        model.save_pretrained(tmp / "model", safe_serialization=True)
        if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
            tokenizer.save_pretrained(tmp / "model")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save({"step": step, "stream": stream.state_dict(), "rng": get_rng_state(), "frozen": frozen},
                   tmp / "trainer_state.pt")
        (tmp / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
    old = sorted(p for p in out_dir.glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir() and p != final)
    for path in old[: max(0, len(old) + 1 - config.keep_checkpoints)]:
        shutil.rmtree(path, ignore_errors=True)
    return final


def _read_safetensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor in ``folder``'s own ``*.safetensors`` files (not its subfolders)."""
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors weights in {folder}")
    weights: dict[str, torch.Tensor] = {}
    for file in files:
        weights.update(load_file(str(file)))
    return weights


def _refuse_mismatch(folder: Path, missing: list[str], unexpected: list[str]) -> None:
    if missing or unexpected:
        raise ValueError(f"checkpoint {folder} does not match the model: missing {missing}, unexpected {unexpected}")


def _load_weights(model: Any, folder: Path) -> None:
    """Load ``save_pretrained`` safetensors into ``model``; tied weights may be absent from the file."""
    if getattr(model, "peft_config", None):
        _load_adapters(model, folder)
        return
    weights = _read_safetensors(folder)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    # a key missing from the file is fine only if it shares storage with a loaded one (tied embeddings)
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded_ptrs = {params[k].data_ptr() for k in weights if k in params}
    untied = [k for k in missing if k not in params or params[k].data_ptr() not in loaded_ptrs]
    _refuse_mismatch(folder, untied, unexpected)


def _load_adapters(model: Any, folder: Path) -> None:
    """Load a peft model's adapters as its ``save_pretrained`` wrote them.

    Why not ``load_state_dict``: peft saves only the adapters (the frozen base
    is the model passed in, as on the first run), the ``"default"`` one in
    ``folder`` and any other in ``folder/<name>``, under names without the
    adapter's name (``lora_A.weight`` for ``lora_A.default.weight``). peft's
    own mapping translates them back; every key it expects must be there and
    no other, so a checkpoint of another adapter is refused, not half loaded.
    """
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    for name in model.peft_config:
        where = folder if name == "default" else folder / name
        weights = _read_safetensors(where)
        expected = get_peft_model_state_dict(model, adapter_name=name)
        _refuse_mismatch(where, sorted(expected.keys() - weights.keys()), sorted(weights.keys() - expected.keys()))
        set_peft_model_state_dict(model, weights, adapter_name=name)


def load_checkpoint(path: Path, model: Any, optimizer: torch.optim.Optimizer, stream: PromptStream, *,
                    frozen: str | None = None) -> int:
    """Restore a checkpoint written by this loop; returns its step.

    Only files this loop wrote are read, and with ``weights_only=True`` (no
    arbitrary pickles are executed). ``frozen`` (:func:`_frozen_digest` of
    ``model``) must be the one the checkpoint was saved with.
    """
    state = torch.load(path / "trainer_state.pt", weights_only=True)
    if state.get("frozen") != frozen:
        raise ValueError(f"checkpoint {path} was trained on other frozen base weights than the model passed in; "
                         "pass the run's initial model, or use another out_dir or resume=False")
    _load_weights(model, path / "model")
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    stream.load_state_dict(state["stream"])
    set_rng_state(state["rng"])  # last: replaying the sampler above borrows the global RNGs
    return int(state["step"])


# Settings that may change between a run and its resumption; any other change would
# silently give a different run than the one being continued.
RESUMABLE_CHANGES = {"num_steps", "eval_every", "eval_batch", "checkpoint_every", "keep_checkpoints", "out_dir",
                     "resume", "log"}


def _check_resumable(checkpoint: Path, config: GRPOConfig) -> None:
    saved = json.loads((checkpoint / "config.json").read_text())
    now = dataclasses.asdict(config)
    differ = sorted(k for k in now.keys() | saved.keys() if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k))
    if differ:
        changes = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in differ)
        raise ValueError(f"cannot resume {checkpoint} with a different config ({changes}); "
                         "use another out_dir or resume=False")


def _read_log(out_dir: Path, step: int) -> list[dict[str, Any]]:
    """Log records up to ``step`` (a killed run may have logged steps past its last checkpoint)."""
    path = out_dir / LOG_NAME
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r["step"] <= step]


def _write_log(out_dir: Path, records: list[dict[str, Any]]) -> None:
    with atomic_path(out_dir / LOG_NAME) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))


# ----------------------------------------------------------------------------
# the loop


def _progress(record: dict[str, Any], num_steps: int) -> str:
    if record["type"] == "eval":
        return f"eval step {record['step']:>5}/{num_steps} | accuracy {record['accuracy']:.3f} (n={record['n']})"
    loss = "skipped (no informative group)" if record["loss"] is None else f"loss {record['loss']:+.4f}"
    kl = "" if record["kl"] is None else f" | kl {record['kl']:.4f} | clip {record['clip_frac']:.2f}"
    return (f"step {record['step']:>5}/{num_steps} | reward {record['reward']:.3f} | {loss}{kl} | "
            f"len {record['completion_len']:.1f} | groups {record['groups_kept']}/{len(record['indices'])} | "
            f"{record['seconds']:.2f}s")


def train(
    model: Any,
    tokenizer: Any,
    train_rows: Sequence[dict],
    sampler: Sampler,
    reward_fn: RewardFn,
    config: GRPOConfig,
    eval_rows: Sequence[dict] | None = None,
    ref_model: Any | None = None,
    *,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Train ``model`` with GRPO on prompts drawn from ``sampler`` (indices into ``train_rows``).

    Returns the history ``{"train": [...], "eval": [...]}`` of per-step and
    per-evaluation records (also appended to ``out_dir/log.jsonl``). With
    ``out_dir`` set and ``resume=True``, a run continues from the latest
    checkpoint there: pass the same initial model, sampler and config (only
    ``num_steps`` may grow), and it loads the saved weights, optimiser state,
    sampler position and RNG states (for a peft model, the adapters: its frozen
    base is the model passed in). With ``kl_coef > 0`` and no
    ``ref_model``, a frozen copy of ``model`` as passed in is the reference,
    so on resume pass the *initial* model. ``callback(record)`` is called
    after every step and evaluation (raise from it to stop).
    """
    out_dir = Path(config.out_dir) if config.out_dir is not None else None
    if ref_model is None and config.kl_coef > 0:
        ref_model = copy.deepcopy(model)
    if ref_model is not None:
        ref_model.eval().requires_grad_(False)
    model.eval()  # no dropout: the policy ratio is exactly 1 on the first pass
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    stream = PromptStream(sampler)
    frozen = _frozen_digest(model)

    step, records = 0, []
    checkpoint = latest_checkpoint(out_dir) if out_dir is not None and config.resume else None
    if checkpoint is not None:
        _check_resumable(checkpoint, config)
        step = load_checkpoint(checkpoint, model, optimizer, stream, frozen=frozen)
        records = _read_log(out_dir, step)
        if config.log:
            print(f"resumed from {checkpoint} at step {step}", flush=True)
    else:
        seed_everything(config.seed)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_log(out_dir, records)
        (out_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")

    def emit(record: dict[str, Any]) -> None:
        records.append(record)
        if out_dir is not None:
            with open(out_dir / LOG_NAME, "a") as f:
                f.write(json.dumps(record) + "\n")
        if config.log:
            print(_progress(record, config.num_steps), flush=True)
        if callback is not None:
            callback(record)

    def run_eval() -> None:
        scores = evaluate_rows(model, tokenizer, eval_rows, reward_fn, max_new_tokens=config.max_new_tokens,
                               batch_size=config.eval_batch)
        emit({"type": "eval", "step": step, **eval_record(scores, eval_rows)})

    evaluating = bool(eval_rows) and config.eval_every > 0
    if evaluating and step == 0:
        run_eval()
    while step < config.num_steps:
        start = time.perf_counter()
        indices = stream.take(config.prompts_per_step * config.oversample)
        stats = train_step(model, tokenizer, optimizer, [train_rows[i] for i in indices], reward_fn, config, ref_model)
        if hasattr(sampler, "update"):  # online feedback; a no-op unless the sampler was built with it
            sampler.update(np.repeat(indices, config.group_size), np.asarray(stats["group_rewards"]).ravel())
        step += 1
        emit({"type": "train", "step": step, "indices": indices, **stats, "seconds": time.perf_counter() - start})
        if evaluating and (step % config.eval_every == 0 or step == config.num_steps):
            run_eval()
        due = step == config.num_steps or (config.checkpoint_every > 0 and step % config.checkpoint_every == 0)
        if out_dir is not None and due:
            save_checkpoint(out_dir, step, model, tokenizer, optimizer, stream, config, frozen=frozen)
    return {
        "train": [r for r in records if r["type"] == "train"],
        "eval": [r for r in records if r["type"] == "eval"],
    }
