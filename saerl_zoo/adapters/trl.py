"""TRL adapter: ``GRPOTrainer`` that draws its prompts in SaeRL order.

Usage::

    from saerl_zoo.adapters.trl import SaeRLGRPOTrainer

    trainer = SaeRLGRPOTrainer(model=..., reward_funcs=..., args=GRPOConfig(...),
                               train_dataset=dataset, curriculum="runs/curriculum")
    trainer.train()

How it plugs in. TRL's ``GRPOTrainer`` gets its training order from
``_get_train_sampler``, which returns a ``RepeatSampler``: the dataset's
(shuffled) indices cut into *chunks* of ``generation_batch_size //
num_generations`` unique prompts, each index emitted ``num_generations`` times
in a row, each chunk repeated ``steps_per_generation * num_iterations`` times
(once per micro-batch that trains on the chunk's one generation), and a short
trailing chunk dropped. :class:`SaeRLGRPOTrainer` overrides only that method
and returns a :class:`SaeRLRepeatSampler`: the very same layout, with the
unique prompts in SaeRL's order. One SaeRL global batch is one TRL chunk: the
curriculum's sampler is rebuilt with ``batch_size = generation_batch_size //
num_generations`` and ``num_replicas=1``. The sampler yields the *global*
sequence on every rank; TRL's dataloader batches (``per_device_train_batch_size
* steps_per_generation`` items) are dealt round-robin to the ranks by
accelerate, so the ranks together generate for exactly one chunk at a time,
as with TRL's own sampler.

Multi-rank identity. Every rank builds its own sampler, and the order only
depends on the curriculum, its seed and the epoch, so all ranks yield the same
sequence. The sampler deliberately has no ``generator`` attribute: accelerate's
``prepare_data_loader`` replaces a ``None`` ``generator`` with a randomly
seeded one and re-broadcasts rank 0's state each epoch; with none, accelerate
leaves the sampler alone (it only swaps ``RandomSampler`` instances for its
``SeedableRandomSampler``).

Prefetch. The sampler is drawn ahead of training: the trainer collects
``gradient_accumulation_steps`` batches per optimiser step and accelerate looks
one batch further ahead, so with the default ``steps_per_generation ==
gradient_accumulation_steps`` the next chunk's indices are drawn before the
current chunk's completions and rewards exist; ``dataloader_num_workers > 0``
draws ``prefetch_factor * num_workers`` batches further still. The static
SaeRL order does not mind; online feedback does (next section).

Online feedback (off by default). With ``feedback=``
:class:`~saerl_zoo.feedback.OnlineFeedback` the rewards TRL computes for each
chunk go back to the SaeRL sampler (``SaeRLSampler.update``), which re-plans
what it has not handed out yet (see :mod:`saerl_zoo.feedback`):

* *Lazy chunks.* :class:`SaeRLRepeatSampler` reads each chunk from the SaeRL
  sampler's live plan only when the loader asks for the chunk's first index,
  and advances the SaeRL cursor past it then; so an update re-plans exactly
  the chunks not drawn yet and never one being trained. (How much an update
  moves them is up to :mod:`saerl_zoo.feedback`: within an epoch it re-sorts
  prompts observed unequally often; the full effect comes with the next
  epoch's plan.)
* *Which rewards, which prompts.* ``_calculate_rewards`` returns the rewards
  of the whole chunk, already gathered across ranks by TRL, in rank order,
  which is the chunk's layout: each of its prompts ``num_generations`` times
  in a row. The trainer counts the per-rank loader batches it trains on
  (``_prepare_inputs``; after a resume starting from the batches TRL skipped),
  so it knows the chunk (``batch // (steps_per_generation *
  num_iterations)``) that TRL generates for and takes its indices from the
  sampler's record of drawn chunks. The reward fed back is the
  ``reward_weights``-weighted sum of the reward functions' raw outputs (before
  TRL's group normalisation), mapped to pass values by the feedback's
  ``reward_range``; completions no reward function scored (all ``None``) are
  left out.
* *Ranks.* Every rank gets the same gathered rewards and draws the same
  global sequence (accelerate's batch sharding draws a whole group of ranks'
  batches before any rank yields), so every rank applies the same update at
  the same cursor; the trainer therefore switches the feedback's own
  ``gather`` off, which would count each rollout once per rank.
* *Horizon.* Write ``R = steps_per_generation * num_iterations`` (per-rank
  batches per chunk) and ``GA = gradient_accumulation_steps``. TRL generates
  for chunk ``k`` at its first batch ``kR`` of the epoch; by then the trainer
  has fetched the optimiser step's batches up to ``(floor(kR / GA) + 1) * GA
  - 1`` and accelerate one more, so the chunks up to ``B = floor((floor(kR /
  GA) + 1) * GA / R)`` are drawn (at most the epoch's last) and chunk ``k``'s
  rewards first change chunk ``B + 1``: chunk ``k + 2`` with the default
  ``steps_per_generation == gradient_accumulation_steps``
  (``num_iterations=1``), chunk ``k + 1`` when ``R`` is a larger multiple of
  ``GA``. The last chunks' rewards of an epoch act on the next epoch's plan,
  which is made when its first chunk is drawn. (A resume mid-chunk shifts
  TRL's generation to the batch training resumes at, later in the chunk.)
  Worker processes would draw further ahead, on copies of the sampler that
  feedback never reaches, so ``dataloader_num_workers`` must be 0; and
  ``dispatch_batches=True`` draws on rank 0 only, so it is refused too.

Checkpoints. ``_save_checkpoint`` writes ``saerl_sampler_state.json`` into each
checkpoint: the SaeRL epoch, the cursor of the last fully trained chunk
(counted in unique prompts of that epoch's order, computed from
``global_step``, not from the prefetched live position) and the layout. On
``train(resume_from_checkpoint=...)`` TRL's ``skip_first_batches`` re-iterates
the sampler from the start of the epoch and drops the trained batches, so the
sampler does *not* also start from the saved cursor (that would skip twice);
instead the saved state sets the epoch (accelerate does not forward
``set_epoch`` through its skipping wrapper on several ranks) and must agree
with the position TRL's skip lands on, else resuming raises. That position is
computed from the ``global_step`` in the checkpoint's own ``trainer_state.json``
(what ``Trainer.train`` restores), not from ``self.state``: the adapter hooks
``_load_optimizer_and_scheduler``, which transformers 4.x runs before it restores
the trainer state and 5.x after. With
``ignore_data_skip=True`` TRL restarts the epoch from its first chunk and the
SaeRL order does the same. With online feedback the state also carries the
feedback's estimates and the epoch's current plan (whose drawn chunks are
frozen), so replaying the epoch yields the chunks trained before the
checkpoint and continues exactly as the uninterrupted run would. A checkpoint
inside a chunk (see the warning) has TRL generate that chunk again, and its
rewards are then fed back a second time.

``args.shuffle_dataset`` and ``args.seed`` do not affect the training order:
the curriculum's own seed does. Iterable datasets are refused, because TRL
streams them without calling ``_get_train_sampler``.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset as TorchIterableDataset
from torch.utils.data import Sampler
from transformers import TrainerState
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from saerl_zoo.curriculum import Curriculum
from saerl_zoo.extras import require
from saerl_zoo.feedback import OnlineFeedback
from saerl_zoo.sampler import SaeRLSampler
from saerl_zoo.storage import read_json, write_json
from saerl_zoo.transfer.scorer import check_policy

require("trl", "saerl_zoo.adapters.trl")  # one line naming the extra, not a bare ModuleNotFoundError
from trl import GRPOTrainer  # noqa: E402

__all__ = ["STATE_NAME", "SaeRLGRPOTrainer", "SaeRLRepeatSampler", "make_trl_trainer", "repeat_layout"]

logger = logging.getLogger(__name__)

STATE_NAME = "saerl_sampler_state.json"
_STATE_FORMAT = 1
# The adapter sets these itself: the SaeRL global batch is one TRL chunk and
# the order is built once, globally (accelerate shards it across ranks).
_RESERVED = frozenset({"batch_size", "num_replicas", "rank", "drop_last"})


def _check_count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def repeat_layout(
    order: Sequence[int], *, mini_repeat_count: int, batch_size: int, repeat_count: int = 1
) -> list[int]:
    """TRL's ``RepeatSampler`` layout over a given order of unique prompt indices.

    ``order`` is cut into chunks of ``batch_size``; a short trailing chunk is
    dropped; each chunk is emitted ``repeat_count`` times, each index
    ``mini_repeat_count`` times in a row.
    """
    _check_count(mini_repeat_count, "mini_repeat_count")
    _check_count(batch_size, "batch_size")
    _check_count(repeat_count, "repeat_count")
    order = [int(i) for i in order]
    out: list[int] = []
    for start in range(0, len(order) - batch_size + 1, batch_size):
        chunk = order[start : start + batch_size]
        for _ in range(repeat_count):
            for index in chunk:
                out.extend([index] * mini_repeat_count)
    return out


class SaeRLRepeatSampler(Sampler[int]):
    """``RepeatSampler``'s layout with the unique prompts in SaeRL order.

    ``saerl`` must be a one-replica :class:`SaeRLSampler` whose batch size is
    the chunk size ``batch_size``: each SaeRL global batch becomes one chunk.
    The epoch follows :meth:`set_epoch` (the trainer and accelerate call it)
    and each iteration yields the whole epoch. Chunks are read from the SaeRL
    plan one at a time, when their first index is requested, and the SaeRL
    cursor is moved past each chunk as it is drawn: with online feedback an
    update then re-plans only chunks not drawn yet (without feedback the plan
    is fixed and this changes nothing). ``drawn_chunks`` records the chunks
    of the current pass in drawing order and ``position`` counts the indices
    handed out, prefetching included (diagnostics, not resume points).
    """

    def __init__(self, saerl: SaeRLSampler, *, mini_repeat_count: int, batch_size: int, repeat_count: int = 1) -> None:
        self.mini_repeat_count = _check_count(mini_repeat_count, "mini_repeat_count")
        self.batch_size = _check_count(batch_size, "batch_size")
        self.repeat_count = _check_count(repeat_count, "repeat_count")
        if saerl.num_replicas != 1:
            raise ValueError(
                f"build the SaeRL order with num_replicas=1 (got {saerl.num_replicas}): the sampler yields the "
                "global sequence on every rank and accelerate shards TRL's batches"
            )
        if saerl.batch_size != batch_size:
            raise ValueError(
                f"the SaeRL batch size ({saerl.batch_size}) must equal the TRL chunk size ({batch_size}) so that "
                "one SaeRL global batch is one generation chunk"
            )
        self.saerl = saerl
        self.position = 0
        self.drawn_chunks: list[list[int]] = []

    @classmethod
    def from_curriculum(
        cls,
        curriculum: Curriculum,
        *,
        num_generations: int,
        generation_batch_size: int,
        steps_per_generation: int,
        num_iterations: int = 1,
        **overrides: Any,
    ) -> SaeRLRepeatSampler:
        """The sampler ``GRPOTrainer`` needs, from its config values and the curriculum.

        ``overrides`` go to :meth:`Curriculum.sampler` (e.g. ``mixing``,
        ``seed``, ``feedback``); the batch size, replicas and ``drop_last``
        are set here.
        """
        _check_count(num_generations, "num_generations")
        _check_count(generation_batch_size, "generation_batch_size")
        _check_count(steps_per_generation, "steps_per_generation")
        _check_count(num_iterations, "num_iterations")
        reserved = _RESERVED & overrides.keys()
        if reserved:
            raise ValueError(f"the TRL adapter sets {sorted(reserved)} itself; do not override them")
        if generation_batch_size % num_generations:
            raise ValueError(
                f"generation_batch_size ({generation_batch_size}) must be divisible by num_generations ({num_generations})"
            )
        chunk = generation_batch_size // num_generations
        kept = int(curriculum.keep.sum())
        if kept < chunk:
            raise ValueError(
                f"the curriculum keeps {kept} prompts, fewer than one TRL generation chunk of {chunk} unique prompts "
                f"(generation_batch_size {generation_batch_size} / num_generations {num_generations})"
            )
        planned = curriculum.sampler_kwargs.get("batch_size")
        if planned is not None and planned != chunk:
            logger.info("SaeRL batches rebuilt at the TRL chunk size %d (the curriculum was saved with %s)", chunk, planned)
        saerl = curriculum.sampler(num_replicas=1, rank=0, **{**overrides, "batch_size": chunk, "drop_last": True})
        return cls(
            saerl,
            mini_repeat_count=num_generations,
            batch_size=chunk,
            repeat_count=steps_per_generation * num_iterations,
        )

    @property
    def epoch(self) -> int:
        return self.saerl.epoch

    def set_epoch(self, epoch: int) -> None:
        self.saerl.set_epoch(epoch)

    @property
    def chunks_per_epoch(self) -> int:
        return len(self.saerl) // self.batch_size

    def chunks(self) -> list[list[int]]:
        """This epoch's chunks of unique prompts, in training order (short chunk dropped).

        With online feedback this is the plan as it stands: chunks not drawn yet may still change.
        """
        return [batch for batch in self.saerl.global_batches() if len(batch) == self.batch_size]

    def order(self) -> list[int]:
        """This epoch's unique prompts in the order they reach generation."""
        return [index for chunk in self.chunks() for index in chunk]

    def layout(self) -> dict[str, int]:
        return {
            "chunk_size": self.batch_size,
            "mini_repeat_count": self.mini_repeat_count,
            "repeat_count": self.repeat_count,
            "chunks_per_epoch": self.chunks_per_epoch,
        }

    def _feedback_version(self) -> int | None:
        feedback = self.saerl.feedback
        return None if feedback is None else feedback.version

    def __iter__(self) -> Iterator[int]:
        self.position = 0
        self.drawn_chunks = []
        chunks, version = self.chunks(), self._feedback_version()
        for k in range(self.chunks_per_epoch):
            if self._feedback_version() != version:  # feedback re-planned the chunks not drawn yet
                chunks, version = self.chunks(), self._feedback_version()
            chunk = chunks[k]
            # Chunk k is handed out from here on: the SaeRL cursor tells feedback to leave it (and all
            # before it) alone, as SaeRLSampler's own __iter__ does index by index.
            self.saerl.cursor = (k + 1) * self.batch_size
            self.drawn_chunks.append(chunk)
            for _ in range(self.repeat_count):
                for index in chunk:
                    for _ in range(self.mini_repeat_count):
                        self.position += 1
                        yield index

    def __len__(self) -> int:
        return self.chunks_per_epoch * self.batch_size * self.mini_repeat_count * self.repeat_count


def _checkpoint_step(checkpoint: str | os.PathLike[str]) -> int:
    """The ``global_step`` that ``Trainer.train`` resumes ``checkpoint`` at, read from the checkpoint itself.

    The optimizer is loaded (``_load_optimizer_and_scheduler``, where the
    SaeRL state is restored) before the trainer state on transformers 4.x and
    after it on 5.x, so ``self.state`` cannot be trusted there; every version
    takes the step from the checkpoint's ``trainer_state.json`` and starts at
    step 0 (no data skipped) when that file is absent, and so does this.
    """
    path = Path(checkpoint) / TRAINER_STATE_NAME
    return TrainerState.load_from_json(str(path)).global_step if path.is_file() else 0


def _as_curriculum(curriculum: Curriculum | str | os.PathLike[str]) -> Curriculum:
    if isinstance(curriculum, Curriculum):
        return curriculum
    if isinstance(curriculum, (str, os.PathLike)):
        return Curriculum.load(curriculum)
    raise TypeError(f"curriculum must be a Curriculum or the directory of a saved one, got {type(curriculum).__name__}")


def _check_dataset(dataset: Any, curriculum: Curriculum) -> None:
    if dataset is None:
        return
    iterable = isinstance(dataset, TorchIterableDataset)
    try:
        import datasets

        iterable = iterable or isinstance(dataset, datasets.IterableDataset)
    except ImportError:  # pragma: no cover - trl depends on datasets
        pass
    if iterable or not hasattr(dataset, "__len__"):
        raise TypeError(
            "SaeRL orders a map-style dataset; TRL streams an IterableDataset without calling _get_train_sampler, "
            "so the curriculum would be silently ignored (convert it with datasets.Dataset.from_list or similar)"
        )
    if len(dataset) != len(curriculum):
        raise ValueError(
            f"train_dataset has {len(dataset)} rows but the curriculum scores {len(curriculum)} prompts: "
            "the curriculum must be built from exactly this dataset, in this row order"
        )


def _check_feedback_loader(args: Any) -> None:
    """Online feedback needs the sampler drawn in the training process, on every rank."""
    workers = getattr(args, "dataloader_num_workers", 0) if args is not None else 0
    if workers:
        raise ValueError(
            f"online feedback needs dataloader_num_workers=0 (got {workers}): worker processes draw the SaeRL order "
            "ahead on their own copies of the sampler, which the rewards never reach, so feedback would be lost"
        )
    config = getattr(args, "accelerator_config", None)
    if getattr(config, "dispatch_batches", None):
        raise ValueError(
            "online feedback needs dispatch_batches off: with it only rank 0 draws the SaeRL order, so the ranks' "
            "samplers would apply the same feedback at different positions and drift apart"
        )


class SaeRLGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` whose prompts reach generation in SaeRL order.

    Takes ``GRPOTrainer``'s arguments plus ``curriculum`` (a
    :class:`~saerl_zoo.curriculum.Curriculum` or the directory of a saved one,
    scoring exactly the rows of ``train_dataset`` in order) and optional
    ``saerl_overrides`` for :meth:`Curriculum.sampler` (``mixing``,
    ``rotate``, ``seed``). Only ``_get_train_sampler`` changes the training
    order; ``_save_checkpoint`` / ``_load_optimizer_and_scheduler`` keep the
    SaeRL position with each checkpoint (see the module docstring).

    ``feedback`` (an :class:`~saerl_zoo.feedback.OnlineFeedback`, default
    ``None``: the offline order) feeds each chunk's rewards back to the
    sampler through ``_prepare_inputs`` / ``_calculate_rewards``; it needs
    ``dataloader_num_workers=0``, and its ``gather`` is switched off because
    TRL already gathers the rewards (see "Online feedback" in the module
    docstring).
    """

    def __init__(
        self,
        *args: Any,
        curriculum: Curriculum | str | os.PathLike[str],
        saerl_overrides: dict[str, Any] | None = None,
        feedback: OnlineFeedback | None = None,
        **kwargs: Any,
    ) -> None:
        self.saerl_curriculum = _as_curriculum(curriculum)
        self.saerl_overrides = dict(saerl_overrides or {})
        reserved = _RESERVED & self.saerl_overrides.keys()
        if reserved:
            raise ValueError(f"the TRL adapter sets {sorted(reserved)} itself; do not override them")
        if "feedback" in self.saerl_overrides:
            raise ValueError("pass online feedback as feedback=..., not in saerl_overrides: the trainer feeds it the rewards")
        if feedback is not None and not isinstance(feedback, OnlineFeedback):
            raise TypeError(f"feedback must be an OnlineFeedback or None, got {type(feedback).__name__}")
        self.saerl_feedback = feedback
        self.saerl_sampler: SaeRLRepeatSampler | None = None
        self._saerl_warned_partial = False
        self._saerl_batch = 0  # per-rank loader batches of the current pass trained on (feedback only)
        self._saerl_chunk: int | None = None  # the pass's chunk that the current batch belongs to
        # Fail before the model is set up when the dataset or the loader cannot match.
        bound = inspect.signature(GRPOTrainer.__init__).bind_partial(None, *args, **kwargs)
        _check_dataset(bound.arguments.get("train_dataset"), self.saerl_curriculum)
        if feedback is not None:
            _check_feedback_loader(bound.arguments.get("args"))
            # TRL hands every rank the gathered rewards of all ranks; gathering again would count each rollout
            # once per rank.
            feedback.gather = False
        super().__init__(*args, **kwargs)
        _check_dataset(self.train_dataset, self.saerl_curriculum)
        if self.saerl_curriculum.provenance.get("scorer"):  # warns when another model scored the prompts
            self.saerl_scorer = check_policy(self.saerl_curriculum, self.model)
        if self.train_dataset is not None:
            self._build_saerl_sampler()  # validate chunk size against the curriculum now, not at train()

    def _build_saerl_sampler(self) -> SaeRLRepeatSampler:
        overrides = dict(self.saerl_overrides)
        if self.saerl_feedback is not None:
            overrides["feedback"] = self.saerl_feedback  # a rebuilt sampler continues the same feedback state
        return SaeRLRepeatSampler.from_curriculum(
            self.saerl_curriculum,
            num_generations=self.num_generations,
            generation_batch_size=self.args.generation_batch_size,
            steps_per_generation=self.args.steps_per_generation,
            num_iterations=self.num_iterations,
            **overrides,
        )

    def _get_train_sampler(self, dataset: Any = None) -> Sampler:
        # Keep `dataset` optional: transformers added it once and broke subclasses that did not take it.
        if dataset is None:
            dataset = self.train_dataset
        _check_dataset(dataset, self.saerl_curriculum)
        if self.saerl_feedback is not None:
            _check_feedback_loader(self.args)
        self.saerl_sampler = self._build_saerl_sampler()
        self._saerl_batch = 0  # a new loader starts a new pass; a resume moves this to TRL's skip
        return self.saerl_sampler

    def _prepare_inputs(self, generation_batch: Any) -> Any:
        # Count the per-rank loader batches in the order training consumes them: TRL generates for (at most)
        # the one batch it is handed here, and that batch lies in chunk `batch // repeat_count` of the pass.
        if self.saerl_feedback is not None and self.model.training and self.saerl_sampler is not None:
            sampler = self.saerl_sampler
            self._saerl_chunk = self._saerl_batch // sampler.repeat_count
            self._saerl_batch = (self._saerl_batch + 1) % (sampler.chunks_per_epoch * sampler.repeat_count)
        return super()._prepare_inputs(generation_batch)

    def _calculate_rewards(self, inputs: Any, prompts: Any, completions: Any, completion_ids_list: Any) -> torch.Tensor:
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        if self.saerl_feedback is not None and self.model.training:
            self._saerl_feed(rewards_per_func)
        return rewards_per_func

    def _saerl_feed(self, rewards_per_func: torch.Tensor) -> None:
        """Give the SaeRL sampler the rewards of the chunk being generated (all ranks', in rank order)."""
        sampler = self.saerl_sampler
        chunk = self._saerl_chunk
        if sampler is None or chunk is None or chunk >= len(sampler.drawn_chunks):
            raise RuntimeError(
                f"online feedback lost track of the chunk being generated (chunk {chunk}, "
                f"{0 if sampler is None else len(sampler.drawn_chunks)} drawn): rewards cannot be matched to prompts"
            )
        indices = np.repeat(np.asarray(sampler.drawn_chunks[chunk], dtype=np.int64), self.num_generations)
        if len(indices) != rewards_per_func.shape[0]:
            raise RuntimeError(
                f"got {rewards_per_func.shape[0]} rewards for a chunk of {len(indices)} rollouts "
                f"({len(sampler.drawn_chunks[chunk])} prompts x {self.num_generations} generations)"
            )
        scored = ~torch.isnan(rewards_per_func).all(dim=1)
        rewards = (rewards_per_func * self.reward_weights.to(rewards_per_func.device)).nansum(dim=1)
        sampler.saerl.update(indices[scored.cpu().numpy()], rewards[scored].cpu())

    def _saerl_position(self, global_step: int) -> dict[str, int]:
        """Where ``global_step`` finished optimiser steps leave the data, by the trainer's own arithmetic.

        The trainer counts ``num_update_steps_per_epoch = ceil(len(dataloader)
        / gradient_accumulation_steps)`` (``len(dataloader)`` is ``chunks *
        repeat_count`` per rank) and, on resume, skips ``(global_step %
        that) * gradient_accumulation_steps`` per-rank batches of the epoch
        ``global_step // that``; each chunk spans ``repeat_count`` of them.
        """
        sampler = self.saerl_sampler if self.saerl_sampler is not None else self._build_saerl_sampler()
        # Per-rank batches per epoch: the sampler holds chunks * repeat_count * generation_batch_size
        # indices and each rank takes one batch of generation_batch_size / num_processes per step.
        batches_per_epoch = sampler.chunks_per_epoch * sampler.repeat_count
        accumulation = self.args.gradient_accumulation_steps
        updates_per_epoch = max(math.ceil(batches_per_epoch / accumulation), 1)
        micro = (global_step % updates_per_epoch) * accumulation
        chunk, partial = divmod(micro, sampler.repeat_count)
        return {
            "epoch": global_step // updates_per_epoch,
            "chunk": chunk,
            "partial_micro_batches": partial,
            "cursor": chunk * sampler.batch_size,
            "num_update_steps_per_epoch": updates_per_epoch,
        }

    def _saerl_state(self) -> dict[str, Any]:
        sampler = self.saerl_sampler
        assert sampler is not None
        position = self._saerl_position(self.state.global_step)
        saerl = sampler.saerl.state_dict()
        saerl.update(epoch=position["epoch"], cursor=position["cursor"])
        return {
            "format": _STATE_FORMAT,
            "global_step": self.state.global_step,
            **position,
            "layout": sampler.layout(),
            "saerl": saerl,
        }

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if self.saerl_sampler is None or not self.args.should_save:
            return
        state = self._saerl_state()
        if state["partial_micro_batches"] and not self._saerl_warned_partial:
            self._saerl_warned_partial = True
            warnings.warn(
                f"checkpoint at step {state['global_step']} falls inside a generation chunk "
                f"({state['partial_micro_batches']} of its {self.saerl_sampler.repeat_count} micro-batches trained): "
                "on resume TRL generates for that chunk again. Choose save_steps * gradient_accumulation_steps as a "
                "multiple of steps_per_generation * num_iterations to checkpoint on chunk boundaries.",
                stacklevel=2,
            )
        folder = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        write_json(Path(self._get_output_dir(trial=trial)) / folder / STATE_NAME, state)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None and self.saerl_sampler is not None:
            self._saerl_resume(checkpoint)

    def _saerl_resume(self, checkpoint: str | os.PathLike[str]) -> None:
        """Set the epoch and check that TRL's data skip lands where the checkpoint stopped.

        The cursor is *not* restored into the sampler: ``skip_first_batches``
        already replays the epoch from its start and drops the trained batches.
        """
        sampler = self.saerl_sampler
        assert sampler is not None
        step = _checkpoint_step(checkpoint)
        here = self._saerl_position(step)
        path = Path(checkpoint) / STATE_NAME
        if not path.is_file():
            lost = " (the online feedback state is lost)" if self.saerl_feedback is not None else ""
            warnings.warn(
                f"{path} is missing (checkpoint not written by SaeRLGRPOTrainer?): resuming the SaeRL order at "
                f"epoch {here['epoch']}, chunk {here['chunk']} from the checkpoint's step count alone{lost}",
                stacklevel=2,
            )
            sampler.saerl.set_epoch(here["epoch"])
            self._saerl_skip_to(here)
            return
        saved = read_json(path)
        if saved.get("format") != _STATE_FORMAT:
            raise ValueError(f"{path}: unknown SaeRL state format {saved.get('format')!r}")
        if saved["layout"] != sampler.layout():
            raise ValueError(
                f"{path} was written for the TRL layout {saved['layout']}, this run has {sampler.layout()}: "
                "num_generations, generation_batch_size, steps_per_generation, num_iterations (or the number of "
                "processes) changed, so the SaeRL chunks differ and the order cannot continue; restore them "
                "(or delete the file to resume without this check)"
            )
        sampler.saerl.load_state_dict(saved["saerl"])  # refuses another curriculum; sets seed and epoch
        if saved["global_step"] != step:
            raise ValueError(
                f"{path} is for step {saved['global_step']} but the checkpoint's {TRAINER_STATE_NAME} is at step {step}"
            )
        if self.args.ignore_data_skip:
            warnings.warn(
                f"ignore_data_skip=True: TRL restarts epoch {saved['epoch']} at its first chunk, so the SaeRL order "
                f"does too instead of continuing at chunk {saved['chunk']}",
                stacklevel=2,
            )
            return
        keys = ("epoch", "chunk", "partial_micro_batches")
        if any(saved[key] != here[key] for key in keys):
            raise ValueError(
                f"TRL will resume the data at { {k: here[k] for k in keys} } but {path} stopped at "
                f"{ {k: saved[k] for k in keys} } (gradient_accumulation_steps changed?): resuming would not "
                "continue the SaeRL order"
            )
        self._saerl_skip_to(here)

    def _saerl_skip_to(self, here: dict[str, int]) -> None:
        """Start the batch count where TRL's ``skip_first_batches`` starts training."""
        assert self.saerl_sampler is not None
        self._saerl_batch = here["chunk"] * self.saerl_sampler.repeat_count + here["partial_micro_batches"]


def make_trl_trainer(
    model: Any,
    reward_funcs: Any,
    args: Any = None,
    train_dataset: Any = None,
    *,
    curriculum: Curriculum | str | os.PathLike[str],
    saerl_overrides: dict[str, Any] | None = None,
    feedback: OnlineFeedback | None = None,
    **grpo_kwargs: Any,
) -> SaeRLGRPOTrainer:
    """``GRPOTrainer(model, reward_funcs, args, train_dataset, **grpo_kwargs)`` drawing prompts in SaeRL order.

    ``curriculum`` is a :class:`~saerl_zoo.curriculum.Curriculum` or the
    directory it was saved to; it must score exactly ``train_dataset``'s rows.
    ``feedback`` turns on online reward feedback (off by default; see
    :class:`SaeRLGRPOTrainer`).
    """
    return SaeRLGRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=train_dataset,
        curriculum=curriculum,
        saerl_overrides=saerl_overrides,
        feedback=feedback,
        **grpo_kwargs,
    )
