from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_diversity import blobs

from saerl_zoo.curriculum import (
    DEFAULT_STAGES,
    Curriculum,
    curriculum_from_features,
    true_levels,
    write_ordered_dataset,
    write_report,
)
from saerl_zoo.data import align_labels, load_rows
from saerl_zoo.difficulty import DifficultyProbe
from saerl_zoo.quality import QualityProbe


@pytest.fixture(scope="module")
def pool():
    """4 topics of 60 prompts; difficulty and quality are linear in the SAE codes."""
    X, topic = blobs(n_per=60, k=4, d=200, seed=0)
    rng = np.random.default_rng(0)
    w = rng.normal(size=X.shape[1])
    difficulty = np.asarray(X @ w).ravel()
    good = (np.asarray(X @ rng.normal(size=X.shape[1])).ravel() > -1.0).astype(int)
    return X, topic, difficulty, good


@pytest.fixture(scope="module")
def probes(pool):
    X, _, difficulty, good = pool
    return DifficultyProbe.fit(X, difficulty), QualityProbe.fit(X, good)


def test_pipeline_filters_clusters_and_orders(pool, probes):
    X, topic, difficulty, good = pool
    d_probe, q_probe = probes
    cur = curriculum_from_features(X, difficulty_probe=d_probe, quality_probe=q_probe, n_clusters=4, batch_size=10, mixing=0.0,
                                   stages=1)
    order = cur.order()
    assert len(order) == len(set(order)) == cur.keep.sum()
    assert set(order) == set(np.flatnonzero(cur.keep))
    assert good[cur.keep].mean() > good[~cur.keep].mean()  # the filter drops mostly bad prompts
    batches = cur.sampler().global_batches()
    pure = [len(set(cur.clusters[b])) == 1 for b in batches]
    mixed = [i for i, p in enumerate(pure) if not p]
    assert all(i >= len(batches) - 4 for i in mixed)  # only the pooled remainders of the 4 clusters mix, at the end
    for batch in batches:  # easy → hard inside every batch
        assert np.all(np.diff(cur.difficulty[batch]) >= 0)


def test_ablations_switch_components_off(pool, probes):
    X = pool[0]
    d_probe, q_probe = probes
    cur = curriculum_from_features(X, use_clusters=False)
    assert cur.keep.all() and cur.difficulty is None and cur.quality is None and cur.clusters is None
    assert sorted(cur.order()) == list(range(X.shape[0]))
    with pytest.raises(ValueError, match="needs a quality probe"):
        curriculum_from_features(X, keep_fraction=0.5)
    half = curriculum_from_features(X, quality_probe=q_probe, keep_fraction=0.5, use_clusters=False)
    assert half.keep.sum() == X.shape[0] // 2


def test_curriculum_round_trips(tmp_path, pool, probes):
    cur = curriculum_from_features(pool[0], difficulty_probe=probes[0], quality_probe=probes[1], n_clusters=3, provenance={"model": "m"})
    cur.save(tmp_path / "c")
    back = Curriculum.load(tmp_path / "c")
    assert back.order() == cur.order()
    assert back.provenance["model"] == "m"
    assert back.sampler(num_replicas=2, rank=1).order() == cur.sampler(num_replicas=2, rank=1).order()


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_ordered_dataset_writer(tmp_path, suffix, pool, probes):
    X = pool[0]
    rows = [{"id": f"p{i}", "prompt": f"question {i}"} for i in range(X.shape[0])]
    cur = curriculum_from_features(X, difficulty_probe=probes[0], quality_probe=probes[1], n_clusters=4)
    path = write_ordered_dataset(rows, cur, tmp_path / f"out.{suffix}")
    written = pq.read_table(path).to_pylist() if suffix == "parquet" else load_rows(path)
    assert [r["saerl_index"] for r in written] == cur.order()
    assert [r["id"] for r in written] == [f"p{i}" for i in cur.order()]
    assert written[0]["saerl_difficulty"] == pytest.approx(cur.difficulty[cur.order()[0]])
    with pytest.raises(ValueError, match="rows for a curriculum"):
        write_ordered_dataset(rows[:-1], cur, tmp_path / "bad.jsonl")


def test_report_has_table_plot_and_numbers(tmp_path, pool, probes):
    cur = curriculum_from_features(pool[0], difficulty_probe=probes[0], quality_probe=probes[1], n_clusters=4, batch_size=16)
    paths = write_report(cur, tmp_path)
    report = json.loads(paths["json"].read_text())
    assert report["n_kept"] == int(cur.keep.sum())
    assert len(report["batches"]) == len(cur.sampler().global_batches())
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = paths["markdown"].read_text()
    assert "| batch | stage |" in text and "mean true level" not in text
    assert "| difficulty | spearman |" in text and "{" not in text  # probe metrics as a table, not dicts
    assert "the probe predicts 1 - pass rate" in text
    figures = report["pacing"]["figures"]
    assert figures["spearman_batch_difficulty"] > 0.9
    above = int((cur.difficulty[cur.keep] > 1).sum())
    assert report["difficulty_scale"]["kept_above_1"] == above


def test_report_with_ground_truth_adds_true_levels(tmp_path, pool, probes):
    X, _, difficulty, _ = pool
    cur = curriculum_from_features(X, difficulty_probe=probes[0], quality_probe=probes[1], n_clusters=4, batch_size=16)
    rows = [{"id": f"p{i}", "prompt": "q"} for i in range(X.shape[0])]
    (tmp_path / "gt.jsonl").write_text("".join(
        json.dumps({"id": f"p{i}", "level": None if i == 0 else int(d > np.median(difficulty)) + 1}) + "\n"
        for i, d in enumerate(difficulty)))
    levels = true_levels(rows, tmp_path / "gt.jsonl")
    assert np.isnan(levels[0]) and set(levels[1:]) == {1.0, 2.0}
    paths = write_report(cur, tmp_path / "r", levels)
    report = json.loads(paths["json"].read_text())
    quarters = report["pacing"]["figures"]["level_by_quarter"]
    assert quarters[0] < quarters[-1]
    assert "mean true level by quarter" in paths["markdown"].read_text()
    assert all("mean_true_level" in b for b in report["batches"])


def test_pacing_defaults_and_overrides(pool, probes):
    X = pool[0]
    paced = curriculum_from_features(X, difficulty_probe=probes[0], n_clusters=4)
    assert paced.sampler().pacing.stages == DEFAULT_STAGES == 5
    assert curriculum_from_features(X, n_clusters=4).sampler().pacing.stages == 1  # nothing to pace by
    with pytest.raises(ValueError, match=r"pacing \(stages=3\) orders prompts by difficulty"):
        curriculum_from_features(X, n_clusters=4, stages=3)
    run = curriculum_from_features(X, difficulty_probe=probes[0], n_clusters=4, num_steps=7, competence="sqrt")
    assert run.sampler().pacing.describe() == {"num_steps": 7, "competence": "sqrt", "initial_competence": 0.01}
    # overriding one pacing setting replaces the saved pacing as a whole
    assert paced.sampler(num_steps=7).pacing.num_steps == 7
    assert run.sampler(stages=2).pacing.describe() == {"stages": 2}
    assert paced.sampler(stages=1).order() != paced.order()


def test_curriculum_saved_before_pacing_keeps_its_order(tmp_path, pool, probes):
    cur = curriculum_from_features(pool[0], difficulty_probe=probes[0], n_clusters=4, stages=1)
    old = {k: v for k, v in cur.sampler_kwargs.items() if k not in ("stages", "num_steps", "competence", "initial_competence")}
    legacy = Curriculum(cur.keep, cur.difficulty, cur.quality, cur.clusters, old, cur.provenance)
    legacy.save(tmp_path / "c")
    assert Curriculum.load(tmp_path / "c").order() == cur.order()


def test_load_rows_and_align_labels_errors(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": ""}\n')
    with pytest.raises(ValueError, match="p.jsonl:2 has no text"):
        load_rows(tmp_path / "p.jsonl")
    (tmp_path / "q.jsonl").write_text('{"id": "a", "prompt": "x"}\nnot json\n')
    with pytest.raises(ValueError, match="q.jsonl:2 is not valid JSON"):
        load_rows(tmp_path / "q.jsonl")
    with pytest.raises(FileNotFoundError):
        load_rows(tmp_path / "none.jsonl")
    rows = [{"id": "a"}, {"id": "b"}]
    idx, vals = align_labels(rows, [{"id": "b", "pass_rate": 0.25}], "pass_rate")
    assert idx.tolist() == [1] and vals.tolist() == [0.25]
    with pytest.raises(ValueError, match="unknown prompt id 'z'"):
        align_labels(rows, [{"id": "z", "pass_rate": 1}], "pass_rate")
