from collections import Counter
from itertools import islice

import numpy as np
import pytest
import torch

from saerl_zoo.pacing import competence, stage_cuts
from saerl_zoo.quality import quality_mask
from saerl_zoo.sampler import SaeRLSampler

# every pacing design the invariants must hold for: unpaced, stages, competence
# over a run shorter than the epoch, longer than it, and starting from nothing
PACINGS = [
    dict(),
    dict(stages=3),
    dict(stages=5),
    dict(num_steps=6),
    dict(num_steps=400, competence="sqrt"),
    dict(num_steps=9, initial_competence=0.0),
]
PACING_IDS = ["unpaced", "stages3", "stages5", "competence6", "competence400sqrt", "competence9c0"]


def make_inputs(n=111, n_clusters=4, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    clusters = rng.integers(0, n_clusters, size=n)
    difficulty = rng.integers(0, 5, size=n).astype(float) if ties else rng.random(n)
    keep = rng.random(n) > 0.2
    return clusters, difficulty, keep


def cluster_batch_count(clusters, keep, G):
    labels = clusters[keep] if keep is not None else clusters
    return sum(count // G for count in Counter(labels.tolist()).values())


# ---------------------------------------------------------------- coverage


@pytest.mark.parametrize("pacing", PACINGS, ids=PACING_IDS)
@pytest.mark.parametrize("mixing", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("rotate", [True, False])
@pytest.mark.parametrize("batch_size", [1, 7, 16])
def test_single_rank_visits_each_kept_prompt_once(mixing, rotate, batch_size, pacing):
    clusters, difficulty, keep = make_inputs()
    s = SaeRLSampler(
        len(keep), batch_size=batch_size, clusters=clusters, difficulty=difficulty,
        keep=keep, mixing=mixing, rotate=rotate, seed=3, **pacing,
    )
    order = list(s)
    assert sorted(order) == np.flatnonzero(keep).tolist()
    assert len(s) == len(order) == len(s.order())
    assert all(type(i) is int for i in order)
    batches = s.global_batches()
    assert all(len(b) == batch_size for b in batches[:-1])
    assert [i for b in batches for i in b] == order


@pytest.mark.parametrize("pacing", PACINGS, ids=PACING_IDS)
@pytest.mark.parametrize("num_replicas,batch_size", [(2, 5), (3, 4), (4, 8)])
@pytest.mark.parametrize("mixing", [0.0, 0.25])
def test_ranks_with_padding_cover_every_kept_prompt(num_replicas, batch_size, mixing, pacing):
    clusters, difficulty, keep = make_inputs()
    kept = np.flatnonzero(keep)
    G = num_replicas * batch_size
    assert len(kept) % G, "inputs must leave a short last batch to pad"
    shards = [
        list(SaeRLSampler(len(keep), batch_size=batch_size, clusters=clusters,
                          difficulty=difficulty, keep=keep, mixing=mixing,
                          num_replicas=num_replicas, rank=r, seed=1, **pacing))
        for r in range(num_replicas)
    ]
    lengths = {len(shard) for shard in shards}
    assert lengths == {-(-len(kept) // G) * batch_size}
    union = [i for shard in shards for i in shard]
    assert set(union) == set(kept.tolist())
    # only padding repeats, and the padding comes from the start of the epoch
    padded = len(union) - len(kept)
    assert 0 < padded < G
    order = [i for b in SaeRLSampler(len(keep), batch_size=batch_size, clusters=clusters,
                                     difficulty=difficulty, keep=keep, mixing=mixing,
                                     num_replicas=num_replicas, seed=1, **pacing).global_batches() for i in b]
    expected = Counter(order) + Counter(order[:padded])
    assert Counter(union) == expected


@pytest.mark.parametrize("pacing", PACINGS, ids=PACING_IDS)
@pytest.mark.parametrize("num_replicas,batch_size", [(2, 5), (3, 4)])
def test_ranks_with_drop_last_are_disjoint_and_drop_only_the_short_batch(num_replicas, batch_size, pacing):
    clusters, difficulty, keep = make_inputs()
    kept = np.flatnonzero(keep)
    G = num_replicas * batch_size
    samplers = [
        SaeRLSampler(len(keep), batch_size=batch_size, clusters=clusters, difficulty=difficulty,
                     keep=keep, num_replicas=num_replicas, rank=r, drop_last=True, **pacing)
        for r in range(num_replicas)
    ]
    shards = [list(s) for s in samplers]
    union = [i for shard in shards for i in shard]
    assert len(union) == len(set(union)) == len(kept) // G * G
    assert set(union) <= set(kept.tolist())
    assert all(len(shard) == len(samplers[0]) == len(kept) // G * batch_size for shard in shards)
    flat = [i for b in samplers[0].global_batches() for i in b]
    assert sorted(flat) == sorted(union)


def test_padding_wraps_when_fewer_prompts_than_one_global_batch():
    shards = [list(SaeRLSampler(3, batch_size=4, num_replicas=2, rank=r, mixing=0)) for r in range(2)]
    assert [len(s) for s in shards] == [4, 4]
    union = shards[0] + shards[1]
    assert set(union) == {0, 1, 2}
    assert max(Counter(union).values()) == 3


def test_single_rank_never_pads():
    s = SaeRLSampler(10, batch_size=4, mixing=0)
    assert len(list(s)) == len(s) == 10
    assert [len(b) for b in s.global_batches()] == [4, 4, 2]
    s = SaeRLSampler(10, batch_size=4, mixing=0, drop_last=True)
    assert len(list(s)) == len(s) == 8


@pytest.mark.parametrize("pacing", PACINGS, ids=PACING_IDS)
@pytest.mark.parametrize("num_replicas", [2, 3])
def test_rank_shards_partition_each_global_batch(num_replicas, pacing):
    clusters, difficulty, keep = make_inputs(n=200)
    batch_size = 6
    samplers = [
        SaeRLSampler(len(keep), batch_size=batch_size, clusters=clusters, difficulty=difficulty,
                     keep=keep, num_replicas=num_replicas, rank=r, drop_last=True, seed=5, **pacing)
        for r in range(num_replicas)
    ]
    orders = [s.order() for s in samplers]
    for step, global_batch in enumerate(samplers[0].global_batches()):
        per_rank = [o[step * batch_size:(step + 1) * batch_size] for o in orders]
        assert all(len(p) == batch_size for p in per_rank)
        assert sorted(i for p in per_rank for i in p) == sorted(global_batch)
        assert per_rank == [global_batch[r::num_replicas] for r in range(num_replicas)]


# ---------------------------------------------------------------- filtering


@pytest.mark.parametrize("pacing", PACINGS, ids=PACING_IDS)
def test_filtered_prompts_never_appear_on_any_rank(pacing):
    clusters, difficulty, keep = make_inputs(n=150)
    difficulty[~keep] = -1.0  # filtered prompts are the easiest: pacing must still skip them
    dropped = set(np.flatnonzero(~keep).tolist())
    assert dropped
    for rank in range(3):
        s = SaeRLSampler(len(keep), batch_size=4, clusters=clusters, difficulty=difficulty,
                         keep=keep, mixing=0.5, num_replicas=3, rank=rank, **pacing)
        assert not dropped & set(s)


# ---------------------------------------------------------------- curriculum


@pytest.mark.parametrize("rotate", [True, False])
@pytest.mark.parametrize("ties", [False, True])
def test_cluster_batches_are_pure_and_easy_to_hard(rotate, ties):
    clusters, difficulty, keep = make_inputs(n=300, n_clusters=5, ties=ties)
    G = 8
    s = SaeRLSampler(len(keep), batch_size=G, clusters=clusters, difficulty=difficulty,
                     keep=keep, mixing=0, rotate=rotate, seed=2)
    batches = s.global_batches()
    labels = s.batch_clusters()
    n_cluster_batches = cluster_batch_count(clusters, keep, G)
    head, tail = batches[:n_cluster_batches], batches[n_cluster_batches:]
    assert all(len(set(lab)) == 1 for lab in labels[:n_cluster_batches])
    per_cluster = {}
    for batch, lab in zip(head, labels):
        per_cluster.setdefault(lab[0], []).extend(batch)
    assert len(per_cluster) == 5
    for members in per_cluster.values():
        d = difficulty[members]
        assert np.all(np.diff(d) >= 0)
    remainder = [i for b in tail for i in b]
    assert np.all(np.diff(difficulty[remainder]) >= 0)
    # the set-aside remainders are exactly each cluster's leftover count
    rem_counts = Counter(clusters[remainder].tolist())
    kept_counts = Counter(clusters[keep].tolist())
    assert rem_counts == Counter({c: k % G for c, k in kept_counts.items() if k % G})


def test_rotation_round_robins_and_rotate_off_runs_clusters_in_blocks():
    clusters = np.repeat([0, 1, 2], [12, 8, 4])
    difficulty = np.arange(24.0)
    rot = SaeRLSampler(24, batch_size=4, clusters=clusters, difficulty=difficulty, mixing=0, seed=4)
    firsts = [lab[0] for lab in rot.batch_clusters()]
    assert sorted(firsts[:3]) == [0, 1, 2]
    assert firsts[3:5] in ([0, 1], [1, 0]) and firsts[5] == 0
    # cluster 0 has 3 batches, 1 has 2, 2 has 1: round r holds clusters with > r batches
    assert [firsts[:3].index(c) for c in firsts[3:5]] == sorted(firsts[:3].index(c) for c in firsts[3:5])

    block = SaeRLSampler(24, batch_size=4, clusters=clusters, difficulty=difficulty, mixing=0,
                         rotate=False, seed=4)
    blocks = [lab[0] for lab in block.batch_clusters()]
    runs = [c for i, c in enumerate(blocks) if i == 0 or blocks[i - 1] != c]
    assert len(runs) == 3 and sorted(runs) == [0, 1, 2]
    assert runs == firsts[:3], "rotate=False should keep the seeded cluster order"


def test_cluster_order_changes_with_epoch():
    clusters = np.repeat(np.arange(6), 4)
    s = SaeRLSampler(24, batch_size=4, clusters=clusters, mixing=0, seed=0)
    seen = set()
    for epoch in range(8):
        s.set_epoch(epoch)
        seen.add(tuple(lab[0] for lab in s.batch_clusters()))
    assert len(seen) > 1


@pytest.mark.parametrize("mixing", [0.1, 0.25, 0.5, 0.75])
@pytest.mark.parametrize("G", [8, 10])
def test_mixing_touches_only_pair_tails(mixing, G):
    clusters, difficulty, keep = make_inputs(n=301, n_clusters=3)
    kw = dict(batch_size=G, clusters=clusters, difficulty=difficulty, keep=keep, seed=7)
    pure = SaeRLSampler(len(keep), mixing=0, **kw).global_batches()
    mixed = SaeRLSampler(len(keep), mixing=mixing, **kw).global_batches()
    k = round(mixing * G)
    assert k > 0
    assert [len(b) for b in pure] == [len(b) for b in mixed]
    for p, m in zip(pure, mixed):
        keep_head = len(p) - min(k, len(p))
        assert m[:keep_head] == p[:keep_head]
    for j in range(0, len(pure) - 1, 2):
        tails = lambda b1, b2: Counter(b1[len(b1) - min(k, len(b1)):] + b2[len(b2) - min(k, len(b2)):])
        assert tails(mixed[j], mixed[j + 1]) == tails(pure[j], pure[j + 1])
    if len(pure) % 2:
        assert mixed[-1] == pure[-1], "an unpaired last batch is not mixed"
    assert mixed != pure, "some tail should actually move"
    swapped = sum(
        len(set(mixed[j][-k:]) & set(pure[j + 1])) for j in range(0, len(pure) - 1, 2)
    )
    assert swapped > 0, "mixing should move items across the pair"


@pytest.mark.parametrize("pacing", PACINGS, ids=PACING_IDS)
def test_mixing_one_is_a_uniform_permutation_not_the_curriculum(pacing):
    clusters, difficulty, keep = make_inputs(n=200)
    kw = dict(batch_size=8, clusters=clusters, difficulty=difficulty, keep=keep, seed=0, **pacing)
    vanilla = SaeRLSampler(len(keep), mixing=1, **kw)
    curriculum = SaeRLSampler(len(keep), mixing=0, **kw)
    assert sorted(vanilla.order()) == sorted(curriculum.order())
    assert vanilla.order() != curriculum.order()
    # no cluster structure left: batches mix clusters
    assert sum(len(set(lab)) > 1 for lab in vanilla.batch_clusters()) > len(vanilla.global_batches()) // 2
    # and it ignores clusters/difficulty entirely: same permutation as without them
    plain = SaeRLSampler(len(keep), batch_size=8, keep=keep, mixing=1, seed=0)
    assert plain.order() == vanilla.order()


@pytest.mark.parametrize("pacing", [dict(), dict(stages=4), dict(num_steps=3)], ids=["unpaced", "stages", "competence"])
def test_mixing_one_positions_are_roughly_uniform(pacing):
    n, hits = 20, np.zeros((20, 20))
    difficulty = np.arange(n, dtype=float)
    s = SaeRLSampler(n, batch_size=4, difficulty=difficulty, mixing=1, **pacing)
    for epoch in range(2000):
        s.set_epoch(epoch)
        hits[np.arange(n), s.order()] += 1
    # each prompt lands in each position ~100 times; easy->hard would pin the diagonal
    assert hits.min() > 50 and hits.max() < 160


# ---------------------------------------------------------------- ablations


def test_no_difficulty_gives_a_seeded_random_order_within_clusters():
    s = SaeRLSampler(40, batch_size=40, mixing=0, seed=0)
    first = s.order()
    assert sorted(first) == list(range(40)) and first != list(range(40))
    s.set_epoch(1)
    assert s.order() != first


def test_no_clusters_is_one_cluster_sorted_easy_to_hard():
    difficulty = np.random.default_rng(0).random(50)
    s = SaeRLSampler(50, batch_size=8, difficulty=difficulty, mixing=0)
    assert s.order() == np.argsort(difficulty, kind="stable").tolist()
    assert {c for lab in s.batch_clusters() for c in lab} == {0}


def test_everything_off_is_still_a_full_epoch():
    s = SaeRLSampler(30, batch_size=4, mixing=0)
    assert sorted(s) == list(range(30))


def test_difficulty_ties_are_broken_by_seed():
    difficulty = np.zeros(30)
    a = SaeRLSampler(30, batch_size=30, difficulty=difficulty, mixing=0, seed=0).order()
    b = SaeRLSampler(30, batch_size=30, difficulty=difficulty, mixing=0, seed=1).order()
    assert sorted(a) == sorted(b) == list(range(30)) and a != b


# ---------------------------------------------------------------- determinism


def test_same_seed_same_order_and_seed_or_epoch_changes_it():
    clusters, difficulty, keep = make_inputs()
    kw = dict(batch_size=4, clusters=clusters, difficulty=difficulty, keep=keep, mixing=0.3)
    a = SaeRLSampler(len(keep), seed=11, **kw)
    b = SaeRLSampler(len(keep), seed=11, **kw)
    assert a.order() == b.order() == list(a) == list(b)
    assert SaeRLSampler(len(keep), seed=12, **kw).order() != a.order()
    epoch0 = a.order()
    a.set_epoch(1)
    assert a.order() != epoch0
    a.set_epoch(0)
    assert a.order() == epoch0


def test_accepts_lists_numpy_and_tensors_alike():
    clusters, difficulty, keep = make_inputs()
    kw = dict(batch_size=4, mixing=0.2, seed=0)
    ref = SaeRLSampler(len(keep), clusters=clusters, difficulty=difficulty, keep=keep, **kw)
    as_lists = SaeRLSampler(len(keep), clusters=clusters.tolist(), difficulty=difficulty.tolist(),
                            keep=keep.tolist(), **kw)
    as_tensors = SaeRLSampler(len(keep), clusters=torch.tensor(clusters),
                              difficulty=torch.tensor(difficulty, dtype=torch.float64),
                              keep=torch.tensor(keep), **kw)
    assert ref.order() == as_lists.order() == as_tensors.order()
    assert ref.state_dict() == as_lists.state_dict() == as_tensors.state_dict()


# ---------------------------------------------------------------- resume


@pytest.mark.parametrize("pacing", PACINGS, ids=PACING_IDS)
@pytest.mark.parametrize("num_replicas,rank", [(1, 0), (2, 1)])
@pytest.mark.parametrize("stop", [0, 1, 17, 40])
def test_resume_mid_epoch_yields_exactly_the_rest(num_replicas, rank, stop, pacing):
    clusters, difficulty, keep = make_inputs()
    kw = dict(batch_size=4, clusters=clusters, difficulty=difficulty, keep=keep, mixing=0.25,
              seed=9, num_replicas=num_replicas, rank=rank, **pacing)
    original = SaeRLSampler(len(keep), **kw)
    original.set_epoch(2)
    full = original.order()
    it = iter(original)
    seen = list(islice(it, stop))
    state = original.state_dict()
    assert state["cursor"] == stop and state["epoch"] == 2

    resumed = SaeRLSampler(len(keep), **{**kw, "seed": 0})
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # a training loop calling set_epoch again must not rewind
    rest = list(resumed)
    assert seen + rest == full
    assert seen + list(it) == full
    # after a full pass the cursor is back at the start
    assert resumed.state_dict()["cursor"] == 0
    assert list(resumed) == full


def test_cursor_persists_across_interrupted_iteration_and_resets_on_new_epoch():
    s = SaeRLSampler(20, batch_size=4, mixing=0)
    full = s.order()
    assert list(islice(iter(s), 5)) == full[:5]
    assert list(s) == full[5:]
    assert list(islice(iter(s), 3)) == full[:3]
    s.set_epoch(1)
    assert s.state_dict()["cursor"] == 0
    assert list(s) == s.order()


@pytest.mark.parametrize(
    "change",
    [
        dict(batch_size=5),
        dict(mixing=0.5),
        dict(num_replicas=2),
        dict(rotate=False),
        dict(drop_last=True),
        dict(difficulty_shift=1.0),
        dict(flip_keep=True),
        dict(relabel=True),
        dict(stages=3),
        dict(num_steps=10),
        dict(num_steps=10, competence="sqrt", base_num_steps=10),
        dict(num_steps=10, initial_competence=0.2, base_num_steps=10),
    ],
)
def test_fingerprint_mismatch_raises(change):
    clusters, difficulty, keep = make_inputs()
    base = dict(batch_size=4, clusters=clusters, difficulty=difficulty, keep=keep, mixing=0.25)
    change = dict(change)
    if "base_num_steps" in change:
        base["num_steps"] = change.pop("base_num_steps")
    saved = SaeRLSampler(len(keep), **base)
    list(islice(iter(saved), 3))
    state = saved.state_dict()

    other = dict(base)
    if change.pop("difficulty_shift", None):
        other["difficulty"] = difficulty.copy()
        other["difficulty"][0] += 1.0
    if change.pop("flip_keep", None):
        other["keep"] = keep.copy()
        other["keep"][np.flatnonzero(keep)[0]] = False
    if change.pop("relabel", None):
        other["clusters"] = clusters.copy()
        other["clusters"][0] += 1
    other.update(change)
    with pytest.raises(ValueError, match="different sampler"):
        SaeRLSampler(len(keep), **other).load_state_dict(state)


def test_fingerprint_ignores_rank_and_seed():
    clusters, difficulty, keep = make_inputs()
    state = SaeRLSampler(len(keep), batch_size=4, clusters=clusters, num_replicas=2, rank=0,
                         seed=3).state_dict()
    other = SaeRLSampler(len(keep), batch_size=4, clusters=clusters, num_replicas=2, rank=1, seed=8)
    other.load_state_dict(state)
    assert other.seed == 3


def test_load_state_dict_rejects_bad_state():
    s = SaeRLSampler(20, batch_size=4)
    good = s.state_dict()
    with pytest.raises(ValueError, match="missing"):
        s.load_state_dict({"epoch": 0})
    with pytest.raises(ValueError, match="cursor"):
        s.load_state_dict({**good, "cursor": 21})
    with pytest.raises(ValueError, match="cursor"):
        s.load_state_dict({**good, "cursor": -1})


# ---------------------------------------------------------------- quality_mask


def test_quality_mask_threshold():
    scores = np.array([0.1, 0.5, 0.5, 0.9])
    assert quality_mask(scores, threshold=0.5).tolist() == [False, True, True, True]
    assert quality_mask(torch.tensor(scores), threshold=0.95).tolist() == [False] * 4


def test_quality_mask_fraction_breaks_ties_by_index():
    scores = [0.3, 0.7, 0.7, 0.7, 0.1, 0.9]
    assert quality_mask(scores, keep_fraction=0.5).tolist() == [False, True, True, False, False, True]
    assert quality_mask(scores, keep_fraction=1.0).all()
    assert quality_mask(scores, keep_fraction=0.01).tolist() == [False] * 5 + [True]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(), "exactly one"),
        (dict(threshold=0.5, keep_fraction=0.5), "exactly one"),
        (dict(keep_fraction=0.0), "keep_fraction"),
        (dict(keep_fraction=1.5), "keep_fraction"),
    ],
)
def test_quality_mask_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        quality_mask([0.1, 0.2], **kwargs)


def test_quality_mask_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        quality_mask([0.1, float("nan")], threshold=0.0)


# ---------------------------------------------------------------- input errors


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=2.5), "batch_size"),
        (dict(mixing=-0.1), "mixing"),
        (dict(mixing=1.1), "mixing"),
        (dict(mixing=float("nan")), "mixing"),
        (dict(num_replicas=0), "num_replicas"),
        (dict(num_replicas=2, rank=2), "rank"),
        (dict(rank=-1), "rank"),
        (dict(seed=-1), "seed"),
        (dict(clusters=[0] * 9), "clusters has length 9"),
        (dict(clusters=[0.5] * 10), "integer"),
        (dict(difficulty=[0.0] * 11), "difficulty has length 11"),
        (dict(difficulty=[0.0] * 9 + [float("nan")]), "NaN"),
        (dict(difficulty=[0.0] * 9 + [float("inf")]), "NaN/inf"),
        (dict(difficulty=np.zeros((10, 1))), "1-D"),
        (dict(keep=[True] * 9), "keep has length 9"),
        (dict(keep=[0, 1] * 5), "boolean"),
        (dict(keep=[False] * 10), "filters out all"),
        (dict(batch_size=11, drop_last=True), "drop_last"),
        (dict(difficulty=np.arange(10.0), stages=0), "stages must be an int >= 1"),
        (dict(difficulty=np.arange(10.0), stages=2.0), "stages must be an int"),
        (dict(difficulty=np.arange(10.0), num_steps=0), "num_steps must be an int >= 1"),
        (dict(difficulty=np.arange(10.0), stages=2, num_steps=5), "not both"),
        (dict(difficulty=np.arange(10.0), num_steps=5, competence="cubic"), "competence must be one of"),
        (dict(difficulty=np.arange(10.0), num_steps=5, initial_competence=1.5), "initial_competence"),
        (dict(stages=2), r"pacing \(stages=2\) orders prompts by difficulty"),
        (dict(num_steps=4), "orders prompts by difficulty"),
    ],
)
def test_bad_input_raises_a_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SaeRLSampler(10, **{"batch_size": 2, **kwargs})


def test_bad_n_and_epoch():
    with pytest.raises(ValueError, match="n must be"):
        SaeRLSampler(0, batch_size=1)
    with pytest.raises(ValueError, match="epoch"):
        SaeRLSampler(5, batch_size=1).set_epoch(-1)


def test_works_with_a_dataloader():
    s = SaeRLSampler(10, batch_size=4, difficulty=np.arange(10.0), mixing=0)
    loader = torch.utils.data.DataLoader(list(range(10)), batch_size=4, sampler=s)
    assert [b.tolist() for b in loader] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


# ---------------------------------------------------------------- pacing


def test_one_stage_reproduces_the_unpaced_order_bit_for_bit():
    """stages=1 against orders the sampler gave at b8dcc69, before pacing existed.

    tests/data/sampler_orders_b8dcc69.json was written at that commit from
    make_inputs(n, n_clusters, seed=0, ties) for each case's settings (seed 7).
    """
    import json
    from pathlib import Path

    cases = json.loads((Path(__file__).parent / "data" / "sampler_orders_b8dcc69.json").read_text())["cases"]
    assert len(cases) == 48
    for case in cases:
        clusters, difficulty, keep = make_inputs(case["n"], case["n_clusters"], 0, case["ties"])
        s = SaeRLSampler(case["n"], batch_size=case["batch_size"], clusters=clusters, difficulty=difficulty, keep=keep,
                         mixing=case["mixing"], rotate=case["rotate"], seed=7, num_replicas=case["num_replicas"], stages=1)
        s.set_epoch(case["epoch"])
        assert s.global_batches() == case["batches"], case


@pytest.mark.parametrize("stages", [2, 3, 5])
@pytest.mark.parametrize("ties", [False, True])
def test_stages_are_difficulty_quantiles_served_in_ascending_order(stages, ties):
    clusters, difficulty, keep = make_inputs(n=300, n_clusters=5, ties=ties)
    G = 8
    s = SaeRLSampler(len(keep), batch_size=G, clusters=clusters, difficulty=difficulty, keep=keep, mixing=0,
                     stages=stages, seed=2)
    batches = s.global_batches()
    kept = np.flatnonzero(keep)
    cuts = stage_cuts(len(kept), stages, G)
    assert len(cuts) == stages - 1 and all(cut % G == 0 for cut in cuts)
    assert all(len(b) == G for b in batches[:-1])
    starts = [0, *(cut // G for cut in cuts), len(batches)]
    served = [[i for b in batches[a:z] for i in b] for a, z in zip(starts[:-1], starts[1:])]
    for easier, harder in zip(served, served[1:]):
        assert difficulty[easier].max() <= difficulty[harder].min()
    ranked = kept[np.argsort(difficulty[kept], kind="stable")]
    assert [sorted(stage) for stage in served] == [sorted(x) for x in np.split(ranked, cuts)]


def test_inside_a_stage_clusters_batch_easy_to_hard_and_rotate():
    # two stages of 24; each holds clusters 0 and 1 (12 each): 3 pure batches per cluster, alternating
    clusters = np.tile(np.repeat([0, 1], 12), 2)
    difficulty = np.concatenate([np.arange(24.0), np.arange(24.0) + 100])
    s = SaeRLSampler(48, batch_size=4, clusters=clusters, difficulty=difficulty, mixing=0, stages=2, seed=1)
    labels = [set(lab) for lab in s.batch_clusters()]
    assert all(len(lab) == 1 for lab in labels)
    firsts = [lab.pop() for lab in labels]
    for stage in (firsts[:6], firsts[6:]):
        assert stage[0::2] == [stage[0]] * 3 and stage[1::2] == [1 - stage[0]] * 3
    for batch in s.global_batches():
        assert batch == sorted(batch, key=lambda i: difficulty[i])


def test_more_stages_than_batches_gives_one_stage_per_batch():
    difficulty = np.arange(10.0)[::-1]
    s = SaeRLSampler(10, batch_size=4, difficulty=difficulty, mixing=0, stages=8)
    assert stage_cuts(10, 8, 4) == [4, 8]
    assert s.global_batches() == [[9, 8, 7, 6], [5, 4, 3, 2], [1, 0]]


@pytest.mark.parametrize("schedule", ["linear", "sqrt"])
@pytest.mark.parametrize("num_steps", [5, 12, 200])
@pytest.mark.parametrize("initial", [0.0, 0.01, 0.3])
def test_competence_batch_t_holds_only_the_easiest_c_t(schedule, num_steps, initial):
    clusters, difficulty, keep = make_inputs(n=300, n_clusters=5)
    G = 8
    s = SaeRLSampler(len(keep), batch_size=G, clusters=clusters, difficulty=difficulty, keep=keep, mixing=0.25,
                     num_steps=num_steps, competence=schedule, initial_competence=initial, seed=4)
    batches = s.global_batches()
    kept = np.flatnonzero(keep)
    horizon = min(num_steps, len(batches))
    rank = np.empty(len(keep), dtype=np.int64)
    rank[kept[np.argsort(difficulty[kept], kind="stable")]] = np.arange(len(kept))
    served = 0
    for t, batch in enumerate(batches):
        allowed = max(np.ceil(competence(t, horizon, schedule, initial) * len(kept) - 1e-9), served + len(batch))
        assert rank[batch].max() < allowed, f"batch {t} reaches past the easiest {allowed}"
        served += len(batch)
    assert competence(horizon - 1, horizon, schedule, initial) == 1.0
    assert competence(horizon - 2, horizon, schedule, initial) < 1.0 or horizon == 1


def test_competence_half_a_run_serves_only_the_easier_half_and_the_run_sweeps_the_pool():
    clusters, difficulty, keep = make_inputs(n=1200, n_clusters=6)
    kept = np.flatnonzero(keep)
    num_steps = 40  # 320 prompts of ~960: a run much shorter than the epoch
    s = SaeRLSampler(len(keep), batch_size=8, clusters=clusters, difficulty=difficulty, keep=keep, mixing=0.1,
                     num_steps=num_steps, initial_competence=0.0, seed=0)
    run = s.global_batches()[:num_steps]
    median = np.sort(difficulty[kept])[len(kept) // 2 - 1]
    first_half = [i for b in run[: num_steps // 2] for i in b]
    assert difficulty[first_half].max() <= median
    last_quarter = [i for b in run[3 * num_steps // 4 :] for i in b]
    hardest_tenth = np.sort(difficulty[kept])[int(0.9 * len(kept))]
    assert (difficulty[last_quarter] >= hardest_tenth).sum() >= 2, "the run's end must reach the hardest prompts"
    batch_means = [difficulty[b].mean() for b in run]
    assert np.corrcoef(np.arange(num_steps), batch_means)[0, 1] > 0.6


def test_competence_keeps_cluster_coherent_batches_and_mixes_inside_the_allowed_pool():
    clusters, difficulty, keep = make_inputs(n=1200, n_clusters=6)
    G = 8
    pure = SaeRLSampler(len(keep), batch_size=G, clusters=clusters, difficulty=difficulty, keep=keep, mixing=0,
                        num_steps=60, seed=0)
    dominant = [np.bincount(lab).max() for lab in pure.batch_clusters()[:60]]
    assert np.mean([d == G for d in dominant]) > 0.9
    mixed = SaeRLSampler(len(keep), batch_size=G, clusters=clusters, difficulty=difficulty, keep=keep, mixing=0.25,
                         num_steps=60, seed=0)
    dominant = [np.bincount(lab).max() for lab in mixed.batch_clusters()[:60]]
    assert min(dominant) >= G - 2 and np.mean([d < G for d in dominant]) > 0.3
    firsts = [np.bincount(lab).argmax() for lab in mixed.batch_clusters()[:60]]
    assert len(set(firsts[:12])) >= 4, "the rotation spreads consecutive batches over clusters"
