"""Online SaeRL: reward feedback that corrects the probe's difficulty as training goes.

The paper's SaeRL order is offline: the difficulty probe scores every prompt
once, before training. Pass rates move as the policy learns, so the probe's
estimates drift away from what the policy finds hard. :class:`OnlineFeedback`
lets a :class:`~saerl_zoo.sampler.SaeRLSampler` take the rewards of the
rollouts it has served (``sampler.update(indices, rewards)``) and re-order what
it has *not* served yet. It is off by default (``feedback=None``): without it
the sampler is exactly the paper's offline method, and ``update`` is a no-op.

The rule
--------
Rewards are mapped to pass values ``q = clip((r - r_lo) / (r_hi - r_lo), 0, 1)``
with ``reward_range = (r_lo, r_hi)``, and a pass value to the probe's
difficulty scale by ``d(q) = d_lo + (d_hi - d_lo) * (1 - q)`` with
``difficulty_range = (d_lo, d_hi)``; the default ``(0, 1)`` is the probe target
``1 - pass rate`` that :class:`~saerl_zoo.difficulty.DifficultyProbe` documents.
Write ``p_i`` for the probe's prediction of prompt ``i`` (the middle of
``difficulty_range`` when the curriculum has no difficulty probe) and ``c(i)``
for its cluster.

* **Per prompt**: ``n_i`` (rollouts seen, decayed) and ``s_i`` (their summed
  pass values). New rollouts of a prompt first decay its old ones,
  ``n_i <- memory * n_i + k``, ``s_i <- memory * s_i + sum(q)``, so the
  estimate follows the current policy rather than its whole history.
* **Per cluster**: an offset ``o_c`` of the probe, an exponential moving
  average of how far the probe is off on the cluster's prompts in each update,
  ``o_c <- o_c + rate * w_c * (mean_j (d(q_j) - p_j) - o_c)`` with ``rate =
  cluster_rate`` and ``w_c = m_c / (m_c + prior_strength)`` for ``m_c``
  rollouts of cluster ``c`` in the update. This is how feedback reaches the
  cluster's prompts that have not been rolled out yet.
* **Estimate**: the prior is ``p_i + o_c(i)``; a prompt with observations blends
  it with its own observed difficulty, counting the prior as
  ``prior_strength`` rollouts::

      d_i = (prior_strength * (p_i + o_c(i)) + n_i * d(s_i / n_i)) / (prior_strength + n_i)

Where it acts
-------------
Feedback changes only what has not been handed out yet:

* **the rest of the current epoch**: after each update, the global batches not
  yet started (on any rank) keep their places in the schedule — their
  cluster of each slot, the rotation across clusters, the mixed tails — and
  each cluster's remaining prompts are re-sorted easy -> hard by the new
  estimates into that cluster's remaining slots. (If nothing of the epoch has
  been handed out, the whole epoch is re-planned instead.) A paced sampler
  (``stages > 1`` or ``num_steps``) re-plans the not yet started batches
  instead: its stages keep their places in the schedule and the remaining
  prompts are cut into them anew by the new estimates (or the competence
  schedule continues, its allowed fraction ranked by the new estimates), so
  pacing follows the corrected difficulty within the epoch.
* **the next epochs**: each new epoch is planned from scratch with the current
  estimates in place of the probe's (cluster chunks, rotation and mixing as
  in the offline method).

What moves, concretely: a cluster offset shifts all of a cluster's unseen
prompts alike, so it never changes their order among themselves; it changes
where they fall against prompts with observations of their own and in the
cross-cluster pool of leftovers at the end of the epoch. Within the first
epoch of a run every prompt left to serve is unseen, so feedback mostly acts
from the second epoch on, where every prompt has been rolled out and the
order follows the policy's observed pass rates (shrunk towards the
corrected probe) instead of the probe alone.

The plan of an epoch is fixed when the epoch is first drawn: a loader that
prefetches draws the next epoch before the last steps' rewards of the
previous one arrive, and those then act on the new epoch's rest.

Exact resume: the sampler's ``state_dict`` carries the feedback state (the
per-prompt counts, the cluster offsets and the current epoch's plan), so a run
restored from a checkpoint continues with the same order and the same
estimates.

Several ranks: when ``torch.distributed`` is initialised with more than one
process, ``update`` gathers every rank's ``(indices, rewards)`` and position
with ``all_gather_object`` before changing anything, so all ranks apply the
same feedback in the same (rank) order and keep identical state. ``update`` is
then a collective: every rank must call it, equally often. Single-controller
trainers (veRL, OpenRLHF) keep the sampler in one process and never gather.

:class:`TrainerSampler` wraps a sampler for trainers that iterate a
``DataLoader`` epoch after epoch without calling ``set_epoch`` and checkpoint
it through torchdata's ``StatefulDataLoader`` (OpenRLHF, veRL).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Sampler

if TYPE_CHECKING:  # pragma: no cover
    from saerl_zoo.sampler import SaeRLSampler

__all__ = ["OnlineFeedback", "TrainerSampler", "gather"]

_STATE_FORMAT = 1


def _pair(value: Any, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high), got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo == hi:
        raise ValueError(f"{name} must be two different finite numbers, got {value!r}")
    return lo, hi


def _number(value: Any, name: str, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def gather(payload: Any, *, enabled: bool | str = "auto", group: Any = None) -> list[Any]:
    """Every rank's ``payload``, in rank order (``[payload]`` when not distributed).

    ``enabled="auto"`` gathers when ``torch.distributed`` is initialised with
    more than one process in ``group``; ``True`` requires that, ``False``
    never gathers.
    """
    if enabled is False:
        return [payload]
    dist = torch.distributed
    active = dist.is_available() and dist.is_initialized()
    if not active:
        if enabled is True:
            raise RuntimeError("gather=True needs torch.distributed to be initialised")
        return [payload]
    world = dist.get_world_size(group)
    if world == 1:
        return [payload]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, payload, group=group)
    return out


class OnlineFeedback:
    """Reward feedback for a :class:`~saerl_zoo.sampler.SaeRLSampler` (see the module docstring).

    Pass one to the sampler (``SaeRLSampler(..., feedback=OnlineFeedback())``
    or ``curriculum.sampler(feedback=OnlineFeedback())``) and call
    ``sampler.update(indices, rewards)`` after each step with one entry per
    scored rollout. One object serves one sampler (rebuilding an equivalent
    sampler with the same object continues its state).

    Args:
        prior_strength: how many rollouts the (cluster-corrected) probe
            prediction is worth against a prompt's own observations; also
            damps cluster offsets learnt from few rollouts. 0 trusts
            observations alone.
        cluster_rate: step size of the cluster offsets' moving average in
            ``[0, 1]``; 0 switches propagation to unseen prompts off.
        memory: weight kept by a prompt's older rollouts when new ones arrive,
            in ``[0, 1]``; 1 averages the whole history, 0 keeps the latest.
        reward_range: rewards mapped to pass values 0 and 1 (clipped).
        difficulty_range: probe difficulties of a pass rate of 1 and of 0.
        gather: ``"auto"``, ``True`` or ``False``: gather feedback across
            ``torch.distributed`` ranks before updating (see :func:`gather`).
        group: the process group to gather over (default: the world).
    """

    def __init__(
        self,
        *,
        prior_strength: float = 4.0,
        cluster_rate: float = 0.5,
        memory: float = 0.5,
        reward_range: Sequence[float] = (0.0, 1.0),
        difficulty_range: Sequence[float] = (0.0, 1.0),
        gather: bool | str = "auto",
        group: Any = None,
    ) -> None:
        self.prior_strength = _number(prior_strength, "prior_strength", 0.0)
        self.cluster_rate = _number(cluster_rate, "cluster_rate", 0.0, 1.0)
        self.memory = _number(memory, "memory", 0.0, 1.0)
        self.reward_range = _pair(reward_range, "reward_range")
        self.difficulty_range = _pair(difficulty_range, "difficulty_range")
        if gather not in ("auto", True, False):
            raise ValueError(f"gather must be 'auto', True or False, got {gather!r}")
        self.gather = gather
        self.group = group
        self.version = 0  # bumped by every update; a running sampler iterator re-reads the order on change
        self.n_updates = 0
        self._n: int | None = None
        self._count = self._total = self._slots = self._labels = self._offset = None
        self._plan: tuple[int, list[np.ndarray]] | None = None

    # ------------------------------------------------------------ set-up

    def config(self) -> dict[str, Any]:
        """The settings that shape the order (they join the sampler's fingerprint)."""
        return {
            "prior_strength": self.prior_strength,
            "cluster_rate": self.cluster_rate,
            "memory": self.memory,
            "reward_range": list(self.reward_range),
            "difficulty_range": list(self.difficulty_range),
        }

    def bind(self, sampler: SaeRLSampler) -> None:
        """Attach to ``sampler`` (called by its constructor)."""
        if sampler.mixing == 1:
            raise ValueError(
                "online feedback re-orders the SaeRL curriculum; mixing=1 is the uniform-shuffle baseline, "
                "which has no curriculum to correct"
            )
        labels = sampler.clusters if sampler.clusters is not None else np.zeros(sampler.n, dtype=np.int64)
        if self._n is None:
            self._n = sampler.n
            self._labels = np.unique(labels)
            self._count = np.zeros(sampler.n)
            self._total = np.zeros(sampler.n)
            self._offset = np.zeros(len(self._labels))
        elif self._n != sampler.n or not np.array_equal(self._labels, np.unique(labels)):
            raise ValueError("this OnlineFeedback already serves a sampler over other prompts; make a new one")
        self._slots = np.searchsorted(self._labels, labels)

    # ------------------------------------------------------------ estimates

    def _probe(self, sampler: SaeRLSampler) -> np.ndarray:
        if sampler.difficulty is not None:
            return sampler.difficulty
        return np.full(sampler.n, sum(self.difficulty_range) / 2)

    def _observed(self, pass_values: np.ndarray) -> np.ndarray:
        low, high = self.difficulty_range
        return low + (high - low) * (1.0 - pass_values)

    def estimates(self, sampler: SaeRLSampler) -> np.ndarray:
        """Current difficulty estimate of every prompt (the probe's, before any update)."""
        prior = self._probe(sampler) + self._offset[self._slots]
        seen = self._count > 0
        out = prior.copy()
        if seen.any():
            n = self._count[seen]
            observed = self._observed(self._total[seen] / n)
            out[seen] = (self.prior_strength * prior[seen] + n * observed) / (self.prior_strength + n)
        return out

    def cluster_offsets(self) -> dict[int, float]:
        """The learnt probe correction of each cluster label."""
        return {int(label): float(offset) for label, offset in zip(self._labels, self._offset)}

    # ------------------------------------------------------------ the epoch plan

    def epoch_batches(self, sampler: SaeRLSampler) -> list[np.ndarray]:
        """The sampler's current-epoch global batches (before ``drop_last``), planned once per epoch."""
        if self._plan is None or self._plan[0] != sampler.epoch:
            # Before any update the estimates are the probe's own values, so
            # this is the offline plan exactly.
            difficulty = sampler.difficulty if self.n_updates == 0 else self.estimates(sampler)
            self._plan = (sampler.epoch, sampler.plan(difficulty))
        return [batch.copy() for batch in self._plan[1]]

    def _resort_rest(self, sampler: SaeRLSampler, started: int) -> None:
        """Re-sort each cluster's prompts within its slots in the global batches ``started`` onwards."""
        epoch, batches = self._plan  # type: ignore[misc]
        if started >= len(batches):
            return
        rest = np.concatenate(batches[started:])
        groups = self._slots[rest]
        estimate = self.estimates(sampler)[rest]
        slots_by_group = np.argsort(groups, kind="stable")  # each group's slots, in schedule order
        easy_to_hard = rest[np.lexsort((np.arange(len(rest)), estimate, groups))]
        resorted = np.empty_like(rest)
        resorted[slots_by_group] = easy_to_hard
        sizes = np.cumsum([len(batch) for batch in batches[started:]])[:-1]
        self._plan = (epoch, batches[:started] + np.split(resorted, sizes))

    def _replan_rest(self, sampler: SaeRLSampler, started: int) -> None:
        """Paced samplers: cut the unstarted rest into its stages (or competence steps) by the new estimates."""
        epoch, batches = self._plan  # type: ignore[misc]
        if started < len(batches):
            self._plan = (epoch, sampler.plan(self.estimates(sampler), batches[:started], replan=self.n_updates))

    # ------------------------------------------------------------ feedback

    def update(self, sampler: SaeRLSampler, indices: Any, rewards: Any) -> None:
        """Apply the rewards of rollouts of ``indices`` (one entry per rollout); see the module docstring."""
        if isinstance(indices, torch.Tensor):
            indices = indices.detach().cpu().numpy()
        if isinstance(rewards, torch.Tensor):
            rewards = rewards.detach().cpu().float().numpy()
        idx = np.asarray(indices).reshape(-1)
        values = np.asarray(rewards, dtype=np.float64).reshape(-1)
        if len(idx) != len(values):
            raise ValueError(f"{len(idx)} indices but {len(values)} rewards: pass one reward per rollout")
        if len(idx) and not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"indices must be integers, got dtype {idx.dtype}")
        idx = idx.astype(np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= sampler.n):
            raise ValueError(f"indices must be in [0, {sampler.n}), got {idx.min()}..{idx.max()}")
        if not np.isfinite(values).all():
            raise ValueError("rewards must be finite")
        low, high = self.reward_range
        passes = np.clip((values - low) / (high - low), 0.0, 1.0)

        parts = gather((idx.tolist(), passes.tolist(), sampler.cursor), enabled=self.gather, group=self.group)
        idx = np.asarray([i for part in parts for i in part[0]], dtype=np.int64)
        passes = np.asarray([q for part in parts for q in part[1]], dtype=np.float64)
        cursor = max(part[2] for part in parts)

        self.epoch_batches(sampler)  # the epoch's plan exists, from the state before this update
        if len(idx):
            self._learn(sampler, idx, passes)
        self.n_updates += 1
        started = math.ceil(cursor / sampler.batch_size)  # global batches some rank has begun to hand out
        if started == 0:
            self._plan = None  # nothing of this epoch served yet: plan it afresh from the new estimates
        elif sampler.pacing.active:
            self._replan_rest(sampler, started)
        else:
            self._resort_rest(sampler, started)
        self.version += 1

    def _learn(self, sampler: SaeRLSampler, idx: np.ndarray, passes: np.ndarray) -> None:
        prompts, inverse = np.unique(idx, return_inverse=True)
        rollouts = np.bincount(inverse).astype(np.float64)
        passed = np.bincount(inverse, weights=passes)
        # cluster offsets: this update's residuals of observed difficulty against the probe
        residual = self._observed(passed / rollouts) - self._probe(sampler)[prompts]
        slots = self._slots[prompts]
        weight = np.bincount(slots, weights=rollouts, minlength=len(self._labels))
        mean = np.bincount(slots, weights=rollouts * residual, minlength=len(self._labels))
        present = weight > 0
        gain = self.cluster_rate * weight[present] / (weight[present] + self.prior_strength)
        mean = mean[present] / weight[present]
        self._offset[present] += gain * (mean - self._offset[present])
        # per-prompt counts, older rollouts decayed
        self._count[prompts] = self.memory * self._count[prompts] + rollouts
        self._total[prompts] = self.memory * self._total[prompts] + passed

    # ------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        seen = np.flatnonzero(self._count > 0)
        plan = None
        if self._plan is not None:
            plan = {"epoch": self._plan[0], "batches": [batch.tolist() for batch in self._plan[1]]}
        return {
            "format": _STATE_FORMAT,
            "n_updates": self.n_updates,
            "seen": seen.tolist(),
            "count": self._count[seen].tolist(),
            "total": self._total[seen].tolist(),
            "cluster_labels": self._labels.tolist(),
            "cluster_offsets": self._offset.tolist(),
            "plan": plan,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != _STATE_FORMAT:
            raise ValueError(f"unknown feedback state format {state.get('format')!r}")
        if state["cluster_labels"] != self._labels.tolist():
            raise ValueError("feedback state was saved for other cluster labels")
        seen = np.asarray(state["seen"], dtype=np.int64)
        if len(seen) and (seen.min() < 0 or seen.max() >= self._n):
            raise ValueError("feedback state was saved for more prompts")
        count = np.zeros(self._n)
        total = np.zeros(self._n)
        count[seen] = state["count"]
        total[seen] = state["total"]
        plan = state["plan"]
        self._count, self._total = count, total
        self._offset = np.asarray(state["cluster_offsets"], dtype=np.float64)
        self._plan = None if plan is None else (int(plan["epoch"]), [np.asarray(b, dtype=np.int64) for b in plan["batches"]])
        self.n_updates = int(state["n_updates"])
        self.version += 1


class TrainerSampler(Sampler[int]):
    """A SaeRL sampler for trainers that iterate their loader epoch after epoch without ``set_epoch``.

    OpenRLHF and veRL build one (torchdata ``StatefulDataLoader``) loader and
    call ``iter()`` on it once per epoch, never ``set_epoch``. This wrapper
    yields the rest of the current epoch and then moves the wrapped
    :class:`~saerl_zoo.sampler.SaeRLSampler` to the next epoch, so each epoch
    gets its own SaeRL order (as ``DistributedSampler`` + ``set_epoch`` would)
    and ``state_dict`` — which ``StatefulDataLoader`` saves inside its own —
    pins the epoch and position exactly.

    A checkpoint taken after the last index of an epoch was handed out but
    before the loader saw the end leaves a finished epoch behind. With
    ``skip_finished_epoch=False`` (OpenRLHF: it stores the episode and
    expects the loader to end it) the next pass over it is empty; with
    ``True`` (veRL: it derives the epoch from the step count) the next pass
    starts the next epoch directly.
    """

    def __init__(self, sampler: SaeRLSampler, *, skip_finished_epoch: bool = False) -> None:
        self.sampler = sampler
        self.skip_finished_epoch = bool(skip_finished_epoch)

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        if self.skip_finished_epoch and self.sampler.state_dict()["cursor"] >= len(self.sampler):
            self.sampler.set_epoch(self.sampler.epoch + 1)
        yield from self.sampler
        self.sampler.set_epoch(self.sampler.epoch + 1)

    def __len__(self) -> int:
        return len(self.sampler)

    def update(self, indices: Any, rewards: Any) -> None:
        self.sampler.update(indices, rewards)

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)
