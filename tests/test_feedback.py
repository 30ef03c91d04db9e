"""Online feedback: the rule, re-ordering only the rest, exact resume, rank identity over gloo."""

from __future__ import annotations

import json
import os
import socket
from collections import Counter
from itertools import islice

import numpy as np
import pytest
import torch

from saerl_zoo.feedback import OnlineFeedback, TrainerSampler, gather
from saerl_zoo.pacing import Pacing
from saerl_zoo.sampler import SaeRLSampler, _epoch_batches


def make_inputs(n=60, n_clusters=3, seed=0):
    rng = np.random.default_rng(seed)
    clusters = rng.integers(0, n_clusters, size=n)
    difficulty = rng.random(n)
    keep = rng.random(n) > 0.15
    return clusters, difficulty, keep


def make_sampler(feedback=None, n=60, **kw):
    clusters, difficulty, keep = make_inputs(n)
    args = dict(batch_size=4, clusters=clusters, difficulty=difficulty, keep=keep, mixing=0.25, seed=3)
    args.update(kw)
    return SaeRLSampler(n, feedback=feedback, **args)


def roundtrip(state):
    return json.loads(json.dumps(state))


def rewards_for(indices, step=0):
    """A deterministic 'policy': even prompts pass, odd ones fail, with a twist per step."""
    return [float((i + step) % 2 == 0) for i in indices]


# ---------------------------------------------------------------- off by default / no-op


def test_without_feedback_update_is_a_no_op_and_state_is_unchanged():
    s = make_sampler()
    order, state = s.order(), s.state_dict()
    s.update([0, 1, 2], [1.0, 0.0, 1.0])
    assert s.order() == order and s.state_dict() == state
    assert "feedback" not in state and "feedback" not in state["fingerprint"]


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(mixing=0.0, rotate=False),
        dict(clusters=None),
        dict(difficulty=None),
        dict(num_replicas=2, rank=1),
        dict(drop_last=True),
        dict(stages=3),
        dict(num_steps=5),
        dict(num_steps=50, competence="sqrt", num_replicas=2, rank=0),
    ],
)
def test_feedback_before_any_update_is_the_offline_order(kw):
    offline = make_sampler(**kw)
    online = make_sampler(OnlineFeedback(), **kw)
    for epoch in range(3):
        offline.set_epoch(epoch)
        online.set_epoch(epoch)
        assert online.global_batches() == offline.global_batches()
        assert list(online) == list(offline)
    assert "feedback" in online.state_dict()


# ---------------------------------------------------------------- the rule


def test_estimates_follow_the_documented_rule():
    clusters = np.array([0, 0, 0, 1, 1, 1])
    difficulty = np.array([0.2, 0.4, 0.6, 0.3, 0.5, 0.7])
    fb = OnlineFeedback(prior_strength=2.0, cluster_rate=0.5, memory=0.5)
    s = SaeRLSampler(6, batch_size=3, clusters=clusters, difficulty=difficulty, mixing=0, feedback=fb)
    np.testing.assert_allclose(fb.estimates(s), difficulty)

    # prompt 0: 4 rollouts, 1 pass -> observed difficulty 0.75, residual 0.55 over 4 rollouts of cluster 0
    s.update([0, 0, 0, 0], [1.0, 0.0, 0.0, 0.0])
    offset0 = 0.5 * (4 / (4 + 2)) * 0.55
    assert fb.cluster_offsets() == pytest.approx({0: offset0, 1: 0.0})
    est = fb.estimates(s)
    assert est[0] == pytest.approx((2 * (0.2 + offset0) + 4 * 0.75) / 6)
    np.testing.assert_allclose(est[1:3], difficulty[1:3] + offset0)  # unseen prompts of the cluster move
    np.testing.assert_allclose(est[3:], difficulty[3:])  # the other cluster does not

    # prompt 0 again: 2 rollouts, both pass; older counts decay by memory
    s.update([0, 0], [1.0, 1.0])
    count, total = 0.5 * 4 + 2, 0.5 * 1 + 2
    residual = 0.0 - 0.2
    offset0 += 0.5 * (2 / (2 + 2)) * (residual - offset0)
    assert fb.cluster_offsets()[0] == pytest.approx(offset0)
    observed = 1 - total / count
    assert fb.estimates(s)[0] == pytest.approx((2 * (0.2 + offset0) + count * observed) / (2 + count))


def test_reward_and_difficulty_ranges_map_scales():
    fb = OnlineFeedback(prior_strength=0.0, cluster_rate=0.0, reward_range=(-1, 1), difficulty_range=(1, 3))
    s = SaeRLSampler(4, batch_size=2, difficulty=[1.0, 2.0, 3.0, 2.0], mixing=0, feedback=fb)
    s.update([0, 1, 2, 2], [1.0, -1.0, 0.0, 5.0])  # 5.0 clips to a pass
    est = fb.estimates(s)
    assert est[:3].tolist() == pytest.approx([1.0, 3.0, 1.5])  # pass rate 1 -> 1, 0 -> 3, 0.75 -> 1.5
    assert est[3] == 2.0


def test_no_difficulty_probe_uses_the_middle_of_the_range_as_prior():
    fb = OnlineFeedback(prior_strength=1.0, cluster_rate=0.0)
    s = SaeRLSampler(4, batch_size=2, clusters=[0, 0, 1, 1], mixing=0, feedback=fb)
    s.update([2], [1.0])
    assert fb.estimates(s).tolist() == pytest.approx([0.5, 0.5, 0.25, 0.5])


# ---------------------------------------------------------------- where it acts


def test_update_reorders_only_the_not_yet_started_batches_within_their_cluster_slots():
    fb = OnlineFeedback(prior_strength=1.0, cluster_rate=1.0)
    s = make_sampler(fb, n=80, num_replicas=2, rank=0, batch_size=3)  # global batches of 6
    before = s.global_batches()
    it = iter(s)
    served = list(islice(it, 4))  # rank 0 is inside global batch 1 (its 3 items of batch 0, 1 of batch 1)
    pool = [i for b in before[2:] for i in b]
    ones = [i for i in pool[::3]]
    s.update(ones * 2, [0.0] * len(ones) * 2)  # these now look hard
    after = s.global_batches()
    assert after[:2] == before[:2], "batches already begun are never changed"
    assert [len(b) for b in after] == [len(b) for b in before]
    labels = s._clusters
    for b_old, b_new in zip(before[2:], after[2:]):
        assert [labels[i] for i in b_old] == [labels[i] for i in b_new], "each slot keeps its cluster"
    flat_new = [i for b in after[2:] for i in b]
    assert sorted(flat_new) == sorted(pool)
    est = fb.estimates(s)
    for c in np.unique(labels):
        seq = [est[i] for i in flat_new if labels[i] == c]
        assert seq == sorted(seq), "each cluster's rest is easy -> hard by the new estimates"
    assert after != before
    # the running iterator follows the new order from where it stands
    rest = list(it)
    assert served + rest == s.order()


def test_update_before_the_epoch_starts_replans_it_from_the_estimates():
    fb = OnlineFeedback()
    s = make_sampler(fb)
    s.update([0, 1, 2, 3], [1.0, 0.0, 1.0, 0.0])
    clusters, _, keep = make_inputs()
    expected = _epoch_batches(np.flatnonzero(keep), clusters, fb.estimates(s), 4, 0.25, True, 3, 0)
    assert s.global_batches() == [b.tolist() for b in expected]


@pytest.mark.parametrize("pacing", [Pacing(), Pacing(stages=3), Pacing(num_steps=6)], ids=str)
def test_next_epoch_is_planned_from_the_estimates(pacing):
    fb = OnlineFeedback()
    s = make_sampler(fb, stages=pacing.stages, num_steps=pacing.num_steps)
    served = list(islice(iter(s), 8))
    s.update(served, rewards_for(served))
    s.set_epoch(1)
    clusters, _, keep = make_inputs()
    # stages and competence are cut from the corrected difficulties
    expected = _epoch_batches(np.flatnonzero(keep), clusters, fb.estimates(s), 4, 0.25, True, 3, 1, pacing)
    assert s.global_batches() == [b.tolist() for b in expected]
    offline = make_sampler(stages=pacing.stages, num_steps=pacing.num_steps)
    offline.set_epoch(1)
    assert s.global_batches() != offline.global_batches()


def test_next_epoch_follows_the_policys_pass_rates_better_than_the_probe():
    # A noisy probe, biased per cluster; the policy's real pass rates reveal both.
    rng = np.random.default_rng(0)
    n, k = 240, 4
    clusters = np.repeat(np.arange(k), n // k)
    true = rng.random(n)  # the policy's failure rate
    probe = true + np.array([0.4, -0.3, 0.0, 0.2])[clusters] + rng.normal(0, 0.3, n)
    kw = dict(batch_size=8, clusters=clusters, difficulty=probe, mixing=0, seed=0)
    offline = SaeRLSampler(n, **kw)
    online = SaeRLSampler(n, feedback=OnlineFeedback(), **kw)
    for batch in iter(lambda it=iter(online): list(islice(it, 8)), []):
        rollouts = np.repeat(batch, 8)
        online.update(rollouts, (rng.random(len(rollouts)) > true[rollouts]).astype(float))
    offline.set_epoch(1)
    online.set_epoch(1)

    def easy_to_hard(order):  # mean within-cluster rank correlation of position with the true difficulty
        order = np.asarray(order)
        return np.mean([
            np.corrcoef(np.arange((clusters[order] == c).sum()), np.argsort(np.argsort(true[order[clusters[order] == c]])))[0, 1]
            for c in range(k)
        ])

    assert sorted(online.order()) == sorted(offline.order())
    assert easy_to_hard(offline.order()) < 0.8
    assert easy_to_hard(online.order()) > easy_to_hard(offline.order()) + 0.1


# ---------------------------------------------------------------- resume


@pytest.mark.parametrize("pacing", [dict(), dict(stages=3), dict(num_steps=6)], ids=["unpaced", "stages", "competence"])
@pytest.mark.parametrize("stop_step", [0, 2, 5])
def test_resume_reproduces_the_uninterrupted_run_exactly(stop_step, pacing):
    def run(steps, sampler, it, log):
        for step in steps:
            batch = list(islice(it, 4))
            log.append(batch)
            sampler.update(batch * 2, rewards_for(batch * 2, step))

    uninterrupted = make_sampler(OnlineFeedback(), **pacing)
    log_a: list = []
    run(range(9), uninterrupted, iter(uninterrupted), log_a)

    first = make_sampler(OnlineFeedback(), **pacing)
    log_b: list = []
    it = iter(first)
    run(range(stop_step), first, it, log_b)
    state = roundtrip(first.state_dict())
    resumed = make_sampler(OnlineFeedback(), **pacing)
    resumed.load_state_dict(state)
    run(range(stop_step, 9), resumed, iter(resumed), log_b)
    assert log_b == log_a
    assert resumed.state_dict() == uninterrupted.state_dict()


def test_fingerprint_refuses_mixing_feedback_on_and_off():
    on = make_sampler(OnlineFeedback())
    off = make_sampler()
    with pytest.raises(ValueError, match="feedback"):
        off.load_state_dict(on.state_dict())
    with pytest.raises(ValueError, match="feedback"):
        on.load_state_dict(off.state_dict())
    with pytest.raises(ValueError, match="feedback"):
        make_sampler(OnlineFeedback(memory=0.9)).load_state_dict(on.state_dict())


def test_one_feedback_object_continues_across_equivalent_samplers_only():
    fb = OnlineFeedback()
    first = make_sampler(fb)
    first.update([0, 1], [1.0, 0.0])
    second = make_sampler(fb)  # e.g. a trainer rebuilding its sampler
    assert fb.n_updates == 1 and second.feedback is fb
    with pytest.raises(ValueError, match="other prompts"):
        make_sampler(fb, n=61)


# ---------------------------------------------------------------- input errors


@pytest.mark.parametrize(
    "indices, rewards, match",
    [
        ([0, 1], [1.0], "one reward per rollout"),
        ([0, 60], [1.0, 1.0], r"\[0, 60\)"),
        ([-1], [1.0], r"\[0, 60\)"),
        ([0.5], [1.0], "integers"),
        ([0], [float("nan")], "finite"),
    ],
)
def test_bad_feedback_raises(indices, rewards, match):
    s = make_sampler(OnlineFeedback())
    with pytest.raises(ValueError, match=match):
        s.update(indices, rewards)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(prior_strength=-1), "prior_strength"),
        (dict(cluster_rate=1.5), "cluster_rate"),
        (dict(memory=-0.1), "memory"),
        (dict(reward_range=(1, 1)), "reward_range"),
        (dict(difficulty_range=5), "difficulty_range"),
        (dict(gather="yes"), "gather"),
    ],
)
def test_bad_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OnlineFeedback(**kwargs)


def test_mixing_one_baseline_refuses_feedback():
    with pytest.raises(ValueError, match="baseline"):
        make_sampler(OnlineFeedback(), mixing=1.0)


def test_tensors_are_accepted():
    s = make_sampler(OnlineFeedback())
    s.update(torch.tensor([0, 1]), torch.tensor([1.0, 0.0]))
    assert s.feedback.n_updates == 1


def test_gather_outside_distributed():
    assert gather(3) == [3]
    assert gather(3, enabled=False) == [3]
    with pytest.raises(RuntimeError, match="initialised"):
        gather(3, enabled=True)


# ---------------------------------------------------------------- TrainerSampler


def test_trainer_sampler_advances_epochs_and_resumes():
    inner = make_sampler()
    orders = []
    for epoch in range(3):
        inner.set_epoch(epoch)
        orders.append(inner.order())
    inner.set_epoch(0)
    ts = TrainerSampler(inner)
    assert list(ts) == orders[0] and ts.epoch == 1
    assert list(ts) == orders[1] and ts.epoch == 2
    it = iter(ts)
    head = list(islice(it, 5))
    state = roundtrip(ts.state_dict())
    other = TrainerSampler(make_sampler())
    other.load_state_dict(state)
    assert head + list(other) == orders[2] and other.epoch == 3


@pytest.mark.parametrize("skip", [False, True])
def test_trainer_sampler_at_a_finished_epoch(skip):
    ts = TrainerSampler(make_sampler(), skip_finished_epoch=skip)
    it = iter(ts)
    list(islice(it, len(ts)))  # every index handed out, the end not yet seen
    state = ts.state_dict()
    assert state["cursor"] == len(ts) and state["epoch"] == 0
    resumed = TrainerSampler(make_sampler(), skip_finished_epoch=skip)
    resumed.load_state_dict(state)
    first = list(resumed)
    expected = make_sampler()
    expected.set_epoch(1)
    if skip:
        assert first == expected.order() and resumed.epoch == 2
    else:
        assert first == [] and resumed.epoch == 1
        assert list(resumed) == expected.order()


# ---------------------------------------------------------------- two ranks over gloo


def _rank_worker(rank, world, port, out_dir, gather_mode):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        sampler = make_sampler(OnlineFeedback(gather=gather_mode), n=90, num_replicas=world, rank=rank)
        it = iter(sampler)
        log = []
        for step in range(6):
            batch = list(islice(it, 4))
            rollouts = [i for i in batch for _ in range(3)]
            # each rank scores its own prompts; a rank-dependent twist makes unequal local feedback
            sampler.update(rollouts, rewards_for(rollouts, step + rank))
            log.append({"batch": batch, "global": sampler.global_batches(), "state": sampler.state_dict()})
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(log, f)
    finally:
        torch.distributed.destroy_process_group()


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawn(tmp_path, gather_mode):
    torch.multiprocessing.spawn(_rank_worker, args=(2, _free_port(), str(tmp_path), gather_mode), nprocs=2, join=True)
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]


def test_two_gloo_ranks_keep_identical_state(tmp_path):
    logs = _spawn(tmp_path, "auto")
    for step, (a, b) in enumerate(zip(*logs)):
        assert a["global"] == b["global"], f"step {step}: ranks disagree on the order"
        assert a["state"]["feedback"] == b["state"]["feedback"], f"step {step}: ranks disagree on the feedback"
        # the feedback holds both ranks' prompts, and the shards still partition each global batch
        assert set(a["state"]["feedback"]["seen"]) == {i for log in logs for r in log[: step + 1] for i in r["batch"]}
        assert sorted(a["batch"] + b["batch"]) == sorted(a["global"][step])
    served = [i for log in logs for r in log for i in r["batch"]]
    assert max(Counter(served).values()) == 1


def test_without_gathering_ranks_would_drift_apart(tmp_path):
    logs = _spawn(tmp_path, False)
    assert logs[0][-1]["state"]["feedback"] != logs[1][-1]["state"]["feedback"]


@pytest.mark.parametrize("pacing", [Pacing(stages=3), Pacing(num_steps=20)], ids=str)
def test_paced_update_mid_epoch_recuts_the_rest_by_the_estimates(pacing):
    n = 200
    clusters, difficulty, keep = make_inputs(n)
    fb = OnlineFeedback(cluster_rate=1.0, prior_strength=1.0)
    s = SaeRLSampler(n, batch_size=4, clusters=clusters, difficulty=difficulty, keep=keep, mixing=0, seed=3,
                     stages=pacing.stages, num_steps=pacing.num_steps, feedback=fb)
    before = s.global_batches()
    it = iter(s)
    served = list(islice(it, 12))  # three batches
    # the policy solves everything of cluster 0 it sees: the cluster's unseen prompts get easier
    s.update(served, [1.0 if clusters[i] == 0 else 0.0 for i in served])
    assert fb.cluster_offsets()[0] < 0
    after = s.global_batches()
    assert after[:3] == before[:3] and after != before
    assert sorted(i for b in after for i in b) == sorted(np.flatnonzero(keep).tolist())
    expected = _epoch_batches(np.flatnonzero(keep), clusters, fb.estimates(s), 4, 0.0, True, 3, 0, pacing,
                              [np.asarray(b) for b in before[:3]], replan=fb.n_updates)
    assert after == [b.tolist() for b in expected]
    assert served + list(it) == [i for b in after for i in b]  # the running iterator follows the new plan
    estimate = fb.estimates(s)
    if pacing.stages > 1:  # the rest's stages are quantiles of the corrected difficulty
        from saerl_zoo.pacing import stage_cuts

        starts = [0, *(c // 4 for c in stage_cuts(int(keep.sum()), 3, 4)), len(after)]
        segments = [[i for b in after[max(a, 3):z] for i in b] for a, z in zip(starts[:-1], starts[1:])]
        for easier, harder in zip(segments, segments[1:]):
            assert estimate[easier].max() <= estimate[harder].min()
