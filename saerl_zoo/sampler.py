"""Prompt order for RL training: the SaeRL curriculum as a ``torch`` sampler.

SaeRL orders prompts with three signals read from the policy's SAE features:
clusters in feature space (diversity), a difficulty probe and a quality probe.
:class:`SaeRLSampler` turns them into an epoch order, in this sequence:

1. quality filtering - prompts outside ``keep`` never appear;
   pacing (:mod:`saerl_zoo.pacing`, off by default) then wraps steps 2-3:
   with ``stages=S`` the kept prompts are cut into ``S`` bands of global
   predicted difficulty, served easiest first, each band going through
   steps 2-3 on its own (its leftovers pooled at the band's end) before
   step 4 mixes the whole order; with ``num_steps=N`` a competence schedule lets
   batch ``t`` draw only from the easiest ``c(t)`` of the pool, so an
   ``N``-step run sweeps easy -> hard (see :func:`_competence_batches`);
2. cluster-first batching - each cluster is sorted easy -> hard and cut into
   global batches, so one optimiser step sees related prompts of similar
   difficulty; each cluster's partial last chunk is pooled with the others',
   sorted by difficulty and appended at the end, so every batch but the
   very last is full;
3. rotation - batches rotate round-robin across clusters, so the policy never
   spends many consecutive steps on one topic;
4. tail mixing - adjacent batches swap a ``mixing`` fraction of their hardest
   items, a knob between pure cluster batches (0) and the vanilla-GRPO
   uniform shuffle (1).

Each component can be switched off for ablations (``keep=None``,
``clusters=None``, ``difficulty=None``, ``mixing=0``, ``rotate=False``,
``stages=1``). Pacing needs ``difficulty``.

Online feedback (beyond the paper, off by default): with ``feedback=``
:class:`~saerl_zoo.feedback.OnlineFeedback`, :meth:`SaeRLSampler.update` takes
the rewards of served prompts and re-orders what is not served yet by
corrected difficulty estimates; see :mod:`saerl_zoo.feedback`.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
from torch.utils.data import Sampler

from saerl_zoo.arrays import ArrayLike, check_finite, check_int, to_vector
from saerl_zoo.pacing import Pacing, competence, stage_cuts

__all__ = ["Feedback", "SaeRLSampler"]


def _chunk(order: np.ndarray, global_batch: int) -> list[np.ndarray]:
    return [order[i : i + global_batch] for i in range(0, len(order), global_batch)]


def _cluster_batches(
    members: np.ndarray,
    clusters: np.ndarray | None,
    difficulty: np.ndarray | None,
    global_batch: int,
    rotate: bool,
    rng: np.random.Generator,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Cluster-first batches of ``members``, each cluster easy -> hard, rotated, and the clusters' partial rests.

    The rests (each cluster's last ``< global_batch`` prompts) are returned
    together, for the caller to pool into the stage's last batches.
    """
    order = rng.permutation(members)  # the seeded tie-break among equal difficulties
    if difficulty is not None:
        order = order[np.argsort(difficulty[order], kind="stable")]
    labels = clusters[order] if clusters is not None else np.zeros(len(order), dtype=np.int64)

    per_cluster: list[list[np.ndarray]] = []
    leftovers: list[np.ndarray] = []
    for label in rng.permutation(np.unique(labels)):
        members_c = order[labels == label]
        full = len(members_c) - len(members_c) % global_batch
        per_cluster.append(_chunk(members_c[:full], global_batch))
        leftovers.append(members_c[full:])
    if rotate:
        rounds = itertools.zip_longest(*per_cluster)
        batches = [batch for round_ in rounds for batch in round_ if batch is not None]
    else:
        batches = [batch for cluster in per_cluster for batch in cluster]
    return batches, np.concatenate(leftovers)


def _mix_tails(batches: list[np.ndarray], k: int, rng: np.random.Generator) -> None:
    """Adjacent batch pairs swap a shuffled pool of their ``k`` last (hardest) items, in place."""
    # Batches are disjoint views of their cluster arrays, so writing the
    # shuffled pool back in place edits exactly these two tails.
    for first, second in zip(batches[0::2], batches[1::2]):
        k1, k2 = min(k, len(first)), min(k, len(second))
        pool = rng.permutation(np.concatenate([first[len(first) - k1 :], second[len(second) - k2 :]]))
        first[len(first) - k1 :] = pool[:k1]
        second[len(second) - k2 :] = pool[k1:]


def _competence_batches(
    kept: np.ndarray,
    clusters: np.ndarray | None,
    difficulty: np.ndarray,
    global_batch: int,
    mixing: float,
    rotate: bool,
    pacing: Pacing,
    rng: np.random.Generator,
    done: Sequence[np.ndarray] = (),
) -> list[np.ndarray]:
    """Batches under a competence schedule: batch ``t`` holds only the easiest ``c(t)`` of the pool.

    Each batch is one cluster's prompts (the next cluster in the seeded
    rotation with enough of them inside the allowed fraction), drawn uniformly
    from that cluster's allowed, not yet served prompts, plus ``round(mixing *
    G)`` drawn uniformly from the whole allowed pool. When no cluster has
    enough, the batch is drawn from the whole allowed pool. The allowed
    fraction never holds fewer prompts than the batches so far need, so every
    kept prompt is served exactly once per epoch. With ``done`` (the epoch's
    first, full batches, fixed already) the schedule continues after them.
    """
    order = rng.permutation(kept)
    order = order[np.argsort(difficulty[order], kind="stable")]  # rank -> prompt, easy -> hard
    n_kept = len(order)
    n_batches = math.ceil(n_kept / global_batch)
    horizon = min(pacing.num_steps, n_batches)  # type: ignore[type-var]
    labels = clusters[order] if clusters is not None else np.zeros(n_kept, dtype=np.int64)
    rotation = rng.permutation(np.unique(labels))
    open_ = ~np.isin(order, np.concatenate([np.empty(0, dtype=order.dtype), *done]))
    unserved = [np.flatnonzero((labels == label) & open_) for label in rotation]  # ranks, ascending, per cluster
    k_mix = round(mixing * global_batch)
    pointer = 0
    batches = []
    for t in range(len(done), n_batches):
        size = min(global_batch, n_kept - t * global_batch)
        allowed = math.ceil(competence(t, horizon, pacing.competence, pacing.initial_competence) * n_kept - 1e-9)
        allowed = min(n_kept, max(allowed, t * global_batch + size))
        counts = np.array([np.searchsorted(ranks, allowed) for ranks in unserved])
        head = size - min(k_mix, size)
        picks: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(rotation)
        for step in range(len(rotation)):
            slot = (pointer + step) % len(rotation)
            if counts[slot] >= max(head, 1):
                picks[slot] = rng.choice(counts[slot], head, replace=False)
                pointer = (slot + 1) % len(rotation) if rotate else slot
                break
        else:
            head = 0  # no cluster fills a batch inside the allowed fraction: draw it all from the pool
        # the rest uniformly from everything allowed and not yet picked
        starts = np.concatenate([[0], np.cumsum(counts - np.array([len(p) for p in picks]))])
        positions = rng.choice(starts[-1], size - head, replace=False)
        hit = np.searchsorted(starts, positions, side="right") - 1
        for slot in np.unique(hit):
            free = np.setdiff1d(np.arange(counts[slot]), picks[slot], assume_unique=True)
            picks[slot] = np.concatenate([picks[slot], free[positions[hit == slot] - starts[slot]]])
        ranks = []
        for slot, pick in enumerate(picks):
            if len(pick):
                ranks.append(unserved[slot][pick])
                unserved[slot] = np.delete(unserved[slot], pick)
        batches.append(order[np.sort(np.concatenate(ranks))])
    return batches


def _epoch_batches(
    kept: np.ndarray,
    clusters: np.ndarray | None,
    difficulty: np.ndarray | None,
    global_batch: int,
    mixing: float,
    rotate: bool,
    seed: int,
    epoch: int,
    pacing: Pacing = Pacing(),
    done: Sequence[np.ndarray] = (),
    replan: int = 0,
) -> list[np.ndarray]:
    """The epoch's global batches; only the last one may be short.

    All randomness comes from one generator seeded by ``(seed, epoch)``, and
    the mixing shuffle draws from it last, so a schedule with ``mixing > 0``
    shares its batch heads with the ``mixing = 0`` schedule of the same epoch.
    Stages are cut from the difficulty ranking (ties by index) and each is
    batched in turn from the same generator, so ``stages=1`` draws exactly
    what the unpaced order draws.

    ``done`` (the epoch's first batches, all full) re-plans only the rest of
    the epoch under the same pacing, e.g. from corrected difficulties: the
    stages keep their places in the schedule and the remaining prompts are
    cut into them anew. ``replan`` (a count of re-plans) joins the seed.
    """
    rng = np.random.default_rng((seed, epoch, replan) if replan else (seed, epoch))
    if mixing == 1:
        return _chunk(rng.permutation(kept), global_batch)
    if pacing.num_steps is not None:
        rest = _competence_batches(kept, clusters, difficulty, global_batch, mixing, rotate, pacing, rng, done)  # type: ignore[arg-type]
        return [*done, *rest]

    remaining = np.setdiff1d(kept, np.concatenate(done)) if len(done) else kept
    stages = [remaining]
    if pacing.stages > 1:
        ranked = remaining[np.argsort(difficulty[remaining], kind="stable")]  # type: ignore[index]
        served = len(kept) - len(remaining)
        cuts = [cut - served for cut in stage_cuts(len(kept), pacing.stages, global_batch) if cut > served]
        stages = [np.sort(stage) for stage in np.split(ranked, cuts)]
    batches: list[np.ndarray] = []
    for stage in stages:
        stage_batches, rest = _cluster_batches(stage, clusters, difficulty, global_batch, rotate, rng)
        if difficulty is not None:
            rest = rest[np.argsort(difficulty[rest], kind="stable")]
        batches += stage_batches + _chunk(rest, global_batch)
    k = round(mixing * global_batch)
    if k:
        _mix_tails(batches, k, rng)
    return [*done, *batches]


class Feedback(Protocol):
    """What the sampler asks of an online-feedback strategy (e.g. :class:`~saerl_zoo.feedback.OnlineFeedback`).

    The sampler calls these and knows nothing else of the strategy; the
    strategy reads the sampler only through its public ``n``, ``epoch``,
    ``cursor``, ``batch_size``, ``mixing``, ``pacing``, ``clusters``,
    ``difficulty`` and :meth:`SaeRLSampler.plan`. So imports run one way:
    feedback → sampler.
    """

    version: int  # bumped on every update that may re-order the rest of the epoch

    def bind(self, sampler: SaeRLSampler) -> None: ...
    def config(self) -> dict[str, Any]: ...
    def epoch_batches(self, sampler: SaeRLSampler) -> list[np.ndarray]: ...
    def update(self, sampler: SaeRLSampler, indices: Any, rewards: Any) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class SaeRLSampler(Sampler[int]):
    """Epoch order of prompt indices for RL training, sharded across ranks.

    Every rank builds the same global schedule from ``(seed, epoch)`` and
    takes ``global_batch[rank::num_replicas]`` of each global batch of
    ``batch_size * num_replicas`` items, so one optimiser step across ranks
    covers exactly one scheduled batch. Use ``DataLoader(dataset,
    batch_size=batch_size, sampler=sampler)`` to keep that alignment.

    ``mixing`` blends cluster batches with randomness: ``k = round(mixing *
    G)`` tail items of each adjacent batch pair are pooled and shuffled
    between the two. ``mixing = 1`` is special-cased to a uniform seeded
    permutation of all kept prompts (the vanilla-GRPO baseline), ignoring
    clusters, difficulty and rotation. ``rotate=False`` lays out clusters one
    after another in the same seeded cluster order.

    A short last global batch is dropped with ``drop_last=True``; otherwise,
    with several replicas, it is padded with indices from the start of the
    epoch's order (as ``DistributedSampler`` does) so every rank takes the
    same number of steps. With one replica it is yielded as is.

    Like ``DistributedSampler`` the epoch does not advance by itself: call
    :meth:`set_epoch` each epoch. Iteration resumes from an internal cursor
    that :meth:`state_dict` saves; the cursor counts indices handed to the
    consumer, so a ``DataLoader`` that prefetches has drawn a few batches
    beyond the last step trained. ``__len__`` is the full epoch length even
    mid-epoch.

    ``feedback`` (an :class:`~saerl_zoo.feedback.OnlineFeedback`, default
    ``None``) turns on online difficulty correction through :meth:`update`;
    its state joins :meth:`state_dict`.

    Pacing (see :mod:`saerl_zoo.pacing`): ``stages`` difficulty stages
    (default 1: unpaced, the order before pacing existed, bit for bit), or
    ``num_steps`` - the run's length in global batches - for a competence
    schedule (``competence`` ``"linear"`` or ``"sqrt"``, starting at
    ``initial_competence``). A ``num_steps`` beyond the epoch's batch count
    sweeps within each epoch. ``mixing=1`` ignores pacing like everything else.
    """

    def __init__(
        self,
        n: int,
        *,
        batch_size: int,
        clusters: ArrayLike | None = None,
        difficulty: ArrayLike | None = None,
        keep: ArrayLike | None = None,
        mixing: float = 0.1,
        rotate: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
        feedback: Feedback | None = None,
        stages: int = 1,
        num_steps: int | None = None,
        competence: str = "linear",
        initial_competence: float = 0.01,
    ) -> None:
        self.n = check_int(n, "n", 1)
        self.batch_size = check_int(batch_size, "batch_size", 1)
        self.num_replicas = check_int(num_replicas, "num_replicas", 1)
        self.rank = check_int(rank, "rank", 0)
        if self.rank >= self.num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas={self.num_replicas}), got {rank}")
        # default_rng((seed, epoch)) only accepts non-negative entropy.
        self.seed = check_int(seed, "seed", 0)
        if isinstance(mixing, bool) or not isinstance(mixing, (int, float, np.floating, np.integer)):
            raise ValueError(f"mixing must be a number in [0, 1], got {mixing!r}")
        if not 0 <= mixing <= 1:
            raise ValueError(f"mixing must be in [0, 1], got {mixing}")
        self.mixing = float(mixing)
        self.rotate = bool(rotate)
        self.drop_last = bool(drop_last)
        self.pacing = Pacing(stages, num_steps, competence, initial_competence)
        self.epoch = 0
        self._cursor = 0

        if keep is None:
            keep_mask = np.ones(self.n, dtype=bool)
        else:
            keep_mask = to_vector(keep, "keep", self.n)
            if keep_mask.dtype != np.bool_:
                raise ValueError(
                    f"keep must be a boolean mask, got dtype {keep_mask.dtype} "
                    "(for a list of indices, build np.isin(np.arange(n), indices))"
                )
        self._kept = np.flatnonzero(keep_mask)
        if len(self._kept) == 0:
            raise ValueError("keep filters out all prompts")

        self._clusters = None
        if clusters is not None:
            labels = to_vector(clusters, "clusters", self.n)
            if not np.issubdtype(labels.dtype, np.integer):
                raise ValueError(f"clusters must be integer labels, got dtype {labels.dtype}")
            self._clusters = labels.astype(np.int64)

        self._difficulty = None
        if difficulty is not None:
            self._difficulty = check_finite(to_vector(difficulty, "difficulty", self.n), "difficulty")
        if self.pacing.active and self._difficulty is None:
            raise ValueError(f"pacing ({self.pacing}) orders prompts by difficulty: give difficulty, or stages=1")

        if self.drop_last and len(self._kept) < self.global_batch_size:
            raise ValueError(
                f"only {len(self._kept)} prompts are kept, fewer than one global batch of "
                f"{self.global_batch_size}: with drop_last=True the epoch would be empty"
            )
        self._fingerprint = self._make_fingerprint(keep_mask)
        self.feedback = feedback
        if feedback is not None:
            feedback.bind(self)
            self._fingerprint["feedback"] = feedback.config()

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.num_replicas

    def _make_fingerprint(self, keep_mask: np.ndarray) -> dict[str, Any]:
        """Everything that changes the order or its length, minus seed and rank.

        Rank is left out on purpose: all ranks share epoch, cursor and length,
        so a state saved on rank 0 resumes every rank.
        """
        digest = hashlib.sha256()
        for name, array in (
            ("keep", keep_mask),
            ("clusters", self._clusters),
            ("difficulty", self._difficulty),
        ):
            digest.update(name.encode())
            if array is not None:
                digest.update(array.dtype.str.encode() + array.tobytes())
        return {
            "n": self.n,
            "batch_size": self.batch_size,
            "num_replicas": self.num_replicas,
            "mixing": self.mixing,
            "rotate": self.rotate,
            "drop_last": self.drop_last,
            "data": digest.hexdigest()[:16],
            **self.pacing.describe(),
        }

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order is yielded next.

        Setting a new epoch restarts at its beginning; setting the current
        one keeps the cursor, so a training loop that calls ``set_epoch``
        right after :meth:`load_state_dict` still resumes mid-epoch.
        """
        epoch = check_int(epoch, "epoch", 0)
        if epoch != self.epoch:
            self._cursor = 0
        self.epoch = epoch

    @property
    def clusters(self) -> np.ndarray | None:
        """Each prompt's cluster label (int64), or ``None`` without clusters."""
        return self._clusters

    @property
    def difficulty(self) -> np.ndarray | None:
        """Each prompt's offline (probe) difficulty, or ``None`` without difficulty."""
        return self._difficulty

    def plan(
        self, difficulty: np.ndarray | None, done: Sequence[np.ndarray] = (), replan: int = 0
    ) -> list[np.ndarray]:
        """This epoch's global batches for ``difficulty`` (before ``drop_last``).

        ``done`` are global batches already begun, kept as they are; the rest
        of the epoch is planned around them (``replan`` seeds that re-plan).
        Online feedback calls this with its corrected estimates; see
        :func:`_epoch_batches`.
        """
        return _epoch_batches(
            self._kept,
            self._clusters,
            difficulty,
            self.global_batch_size,
            self.mixing,
            self.rotate,
            self.seed,
            self.epoch,
            self.pacing,
            done,
            replan,
        )

    def global_batches(self) -> list[list[int]]:
        """The epoch's global batches after ``drop_last``, before padding and sharding."""
        if self.feedback is None:
            batches = self.plan(self._difficulty)
        else:
            batches = self.feedback.epoch_batches(self)
        if self.drop_last and len(batches[-1]) < self.global_batch_size:
            batches = batches[:-1]
        return [batch.tolist() for batch in batches]

    def batch_clusters(self) -> list[list[int]]:
        """Cluster label of each item per global batch (all 0 without clusters)."""
        batches = self.global_batches()
        if self._clusters is None:
            return [[0] * len(batch) for batch in batches]
        return [self._clusters[batch].tolist() for batch in batches]

    def order(self) -> list[int]:
        """This rank's full epoch order, independent of the cursor."""
        batches = self.global_batches()
        last = batches[-1]
        if self.num_replicas > 1 and len(last) < self.global_batch_size:
            flat = [index for batch in batches for index in batch]
            last.extend(np.resize(flat, self.global_batch_size - len(last)).tolist())
        return [index for batch in batches for index in batch[self.rank :: self.num_replicas]]

    def __len__(self) -> int:
        kept, size = len(self._kept), self.global_batch_size
        if self.drop_last:
            return kept // size * self.batch_size
        if self.num_replicas == 1:
            return kept
        return math.ceil(kept / size) * self.batch_size

    def _feedback_version(self) -> int | None:
        return None if self.feedback is None else self.feedback.version

    @property
    def cursor(self) -> int:
        """Indices of this epoch's order handed out so far (online feedback re-plans only the rest)."""
        return self._cursor

    @cursor.setter
    def cursor(self, position: int) -> None:
        # For wrappers that hand out the order in their own units (TRL's repeated chunks).
        if not 0 <= position <= len(self):
            raise ValueError(f"cursor must be in [0, {len(self)}], got {position}")
        self._cursor = int(position)

    def __iter__(self) -> Iterator[int]:
        order, version = self.order(), self._feedback_version()
        for position in range(self._cursor, len(order)):
            if self._feedback_version() != version:  # feedback re-ordered the rest of the epoch
                order, version = self.order(), self._feedback_version()
            self._cursor = position + 1
            yield order[position]
        self._cursor = 0

    def update(self, indices: ArrayLike, rewards: ArrayLike) -> None:
        """Online feedback: the rewards of rollouts of ``indices``, one entry per rollout.

        Re-orders the prompts not yet handed out (see :mod:`saerl_zoo.feedback`).
        A no-op without ``feedback``, so the offline order is unchanged.
        """
        if self.feedback is not None:
            self.feedback.update(self, indices, rewards)

    def state_dict(self) -> dict[str, Any]:
        state = {
            "epoch": self.epoch,
            "cursor": self._cursor,
            "seed": self.seed,
            "fingerprint": dict(self._fingerprint),
        }
        if self.feedback is not None:
            state["feedback"] = self.feedback.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`; refuse a state built from other inputs."""
        missing = {"epoch", "cursor", "seed", "fingerprint"} - set(state)
        if missing:
            raise ValueError(f"state_dict is missing {sorted(missing)}")
        fingerprint = state["fingerprint"]
        if not isinstance(fingerprint, dict):
            raise ValueError(f"state_dict fingerprint must be a dict, got {fingerprint!r}")
        differ = sorted(
            key for key in self._fingerprint.keys() | fingerprint.keys()
            if fingerprint.get(key) != self._fingerprint.get(key)
        )
        if differ:
            raise ValueError(
                f"state_dict was saved for a different sampler: {', '.join(differ)} differ "
                f"(saved {fingerprint}, this sampler {self._fingerprint})"
            )
        epoch = check_int(state["epoch"], "epoch", 0)
        seed = check_int(state["seed"], "seed", 0)
        cursor = check_int(state["cursor"], "cursor", 0)
        if cursor > len(self):
            raise ValueError(f"cursor {cursor} is past the epoch length {len(self)}")
        if self.feedback is not None:
            if "feedback" not in state:
                raise ValueError("state_dict has no feedback state")
            self.feedback.load_state_dict(state["feedback"])
        self.epoch, self.seed, self._cursor = epoch, seed, cursor
