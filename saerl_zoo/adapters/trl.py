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
SaeRL order is unaffected, but any future feedback from rewards to the order
could only reach chunks drawn after that horizon (there is no such feedback
option today).

Checkpoints. ``_save_checkpoint`` writes ``saerl_sampler_state.json`` into each
checkpoint: the SaeRL epoch, the cursor of the last fully trained chunk
(counted in unique prompts of that epoch's order, computed from
``global_step``, not from the prefetched live position) and the layout. On
``train(resume_from_checkpoint=...)`` TRL's ``skip_first_batches`` re-iterates
the sampler from the start of the epoch and drops the trained batches, so the
sampler does *not* also start from the saved cursor (that would skip twice);
instead the saved state sets the epoch (accelerate does not forward
``set_epoch`` through its skipping wrapper on several ranks) and must agree
with the position TRL's skip lands on, else resuming raises. With
``ignore_data_skip=True`` TRL restarts the epoch from its first chunk and the
SaeRL order does the same.

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

from torch.utils.data import IterableDataset as TorchIterableDataset
from torch.utils.data import Sampler
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOTrainer

from saerl_zoo.curriculum import Curriculum
from saerl_zoo.sampler import SaeRLSampler
from saerl_zoo.storage import read_json, write_json

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
    The epoch follows :meth:`set_epoch` (the trainer and accelerate call it);
    the SaeRL sampler's own cursor is not used, so each iteration yields the
    whole epoch. ``position`` counts the indices handed out in the current
    pass, prefetching included (a diagnostic, not a resume point).
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
        ``seed``); the batch size, replicas and ``drop_last`` are set here.
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
        """This epoch's chunks of unique prompts, in training order (short chunk dropped)."""
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

    def __iter__(self) -> Iterator[int]:
        self.position = 0
        for chunk in self.chunks():
            for _ in range(self.repeat_count):
                for index in chunk:
                    for _ in range(self.mini_repeat_count):
                        self.position += 1
                        yield index

    def __len__(self) -> int:
        return self.chunks_per_epoch * self.batch_size * self.mini_repeat_count * self.repeat_count


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


class SaeRLGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` whose prompts reach generation in SaeRL order.

    Takes ``GRPOTrainer``'s arguments plus ``curriculum`` (a
    :class:`~saerl_zoo.curriculum.Curriculum` or the directory of a saved one,
    scoring exactly the rows of ``train_dataset`` in order) and optional
    ``saerl_overrides`` for :meth:`Curriculum.sampler` (``mixing``,
    ``rotate``, ``seed``). Only ``_get_train_sampler`` changes the training
    order; ``_save_checkpoint`` / ``_load_optimizer_and_scheduler`` keep the
    SaeRL position with each checkpoint (see the module docstring).
    """

    def __init__(
        self,
        *args: Any,
        curriculum: Curriculum | str | os.PathLike[str],
        saerl_overrides: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.saerl_curriculum = _as_curriculum(curriculum)
        self.saerl_overrides = dict(saerl_overrides or {})
        reserved = _RESERVED & self.saerl_overrides.keys()
        if reserved:
            raise ValueError(f"the TRL adapter sets {sorted(reserved)} itself; do not override them")
        self.saerl_sampler: SaeRLRepeatSampler | None = None
        self._saerl_warned_partial = False
        # Fail before the model is set up when the dataset cannot match.
        bound = inspect.signature(GRPOTrainer.__init__).bind_partial(None, *args, **kwargs)
        _check_dataset(bound.arguments.get("train_dataset"), self.saerl_curriculum)
        super().__init__(*args, **kwargs)
        _check_dataset(self.train_dataset, self.saerl_curriculum)
        if self.train_dataset is not None:
            self._build_saerl_sampler()  # validate chunk size against the curriculum now, not at train()

    def _build_saerl_sampler(self) -> SaeRLRepeatSampler:
        return SaeRLRepeatSampler.from_curriculum(
            self.saerl_curriculum,
            num_generations=self.num_generations,
            generation_batch_size=self.args.generation_batch_size,
            steps_per_generation=self.args.steps_per_generation,
            num_iterations=self.num_iterations,
            **self.saerl_overrides,
        )

    def _get_train_sampler(self, dataset: Any = None) -> Sampler:
        # Keep `dataset` optional: transformers added it once and broke subclasses that did not take it.
        if dataset is None:
            dataset = self.train_dataset
        _check_dataset(dataset, self.saerl_curriculum)
        self.saerl_sampler = self._build_saerl_sampler()
        return self.saerl_sampler

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
        here = self._saerl_position(self.state.global_step)
        path = Path(checkpoint) / STATE_NAME
        if not path.is_file():
            warnings.warn(
                f"{path} is missing (checkpoint not written by SaeRLGRPOTrainer?): resuming the SaeRL order at "
                f"epoch {here['epoch']}, chunk {here['chunk']} from the trainer's step count alone",
                stacklevel=2,
            )
            sampler.saerl.set_epoch(here["epoch"])
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
        if saved["global_step"] != self.state.global_step:
            raise ValueError(
                f"{path} is for step {saved['global_step']} but the trainer state is at step {self.state.global_step}"
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


def make_trl_trainer(
    model: Any,
    reward_funcs: Any,
    args: Any = None,
    train_dataset: Any = None,
    *,
    curriculum: Curriculum | str | os.PathLike[str],
    saerl_overrides: dict[str, Any] | None = None,
    **grpo_kwargs: Any,
) -> SaeRLGRPOTrainer:
    """``GRPOTrainer(model, reward_funcs, args, train_dataset, **grpo_kwargs)`` drawing prompts in SaeRL order.

    ``curriculum`` is a :class:`~saerl_zoo.curriculum.Curriculum` or the
    directory it was saved to; it must score exactly ``train_dataset``'s rows.
    """
    return SaeRLGRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=train_dataset,
        curriculum=curriculum,
        saerl_overrides=saerl_overrides,
        **grpo_kwargs,
    )
