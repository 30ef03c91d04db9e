"""The benchmark runner in quick mode, and the fast paths the benchmarks measure.

No timing assertions (the machine is shared and noisy): the runner must
produce its result files with finite, sane figures; the fast paths must give
the same answers as the plain ones.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import saerl_zoo.diversity as dv
import saerl_zoo.featurizer as fz
from conftest import PROMPTS

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- the runner


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def test_quick_run_writes_every_result_file(quick_run):
    out, stdout = quick_run
    for name in ("featurize", "scale", "sampler_overhead"):
        result = json.loads((out / f"{name}.json").read_text())
        assert result["name"] == name and result["quick"] is True
        assert result["command"].startswith("python -m benchmarks.run")
        assert result["machine"]["cpu_count"] >= 1 and result["machine"]["torch"]
        assert result["figures"], name
        for f in result["figures"]:
            assert isinstance(f["value"], (int, float)) and math.isfinite(f["value"]), f
            if f["ratio"] is not None:
                assert math.isfinite(f["ratio"]) and f["ratio"] > 0, f
            if f["reference_value"] is not None:
                assert math.isfinite(f["reference_value"]) and f["reference_value"] > 0, f
    summary = (out / "README.md").read_text()
    for name in ("featurize", "scale", "sampler_overhead"):
        assert f"## {name}" in summary
    assert "bare forward" in stdout and "sae-lens route" in stdout


def test_quick_run_figures_are_sane(quick_run):
    out, _ = quick_run
    feat = json.loads((out / "featurize.json").read_text())
    for key, d in feat["details"].items():
        assert d["max_abs_diff_featurize_vs_saelens"] < 1e-3, key  # both routes compute the same features
        assert d["padded_tokens"]["sorted"] <= d["padded_tokens"]["naive"]
        assert all(v > 0 for v in d["prompts_per_s"].values())
        assert 0 < d["sae_encode_share_of_truncated_forward_flops"] < 1
    scale = json.loads((out / "scale.json").read_text())
    table = scale["details"]["table"]
    assert [int(n) for n in table] == scale["details"]["sizes"]
    for row in table.values():
        assert row["sampler"]["order_len"] > 0
        assert -0.5 <= row["ari"]["fast_vs_topics"] <= 1
        assert row["cluster"]["seconds"] > 0 and row["probe"]["seconds"] >= 0
    assert (out / "scale.png").exists()
    sampler = json.loads((out / "sampler_overhead.json").read_text())
    grpo = sampler["details"]["grpo"]
    assert len(grpo["train_step_s"]) == len(grpo["take_s"]) >= 1
    assert all(s > 0 for s in grpo["train_step_s"])


def test_unknown_section_is_refused():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--only", "nope"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0 and "unknown section" in proc.stderr


# ---------------------------------------------------------------- featurize: the TopK fast path


@pytest.mark.parametrize("shape", [(50, 64, 8), (7, 1024, 32), (33, 4608, 64), (5, 96, 3)])
def test_topk_candidates_equal_torch_topk(shape):
    n, d, k = shape
    torch.manual_seed(0)
    pre = torch.randn(n, d)
    rows, cols, vals = fz._topk_candidates(pre, k)
    got = torch.zeros(n, d).index_put_((rows, cols), vals)
    top = pre.topk(k, dim=1)
    want = torch.zeros(n, d).scatter_(1, top.indices, top.values.relu())
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_topk_candidates_decline_odd_widths_and_keep_nan():
    assert fz._topk_candidates(torch.randn(4, 97), 8) is None  # 97 is prime: no column groups
    bad = torch.randn(4, 64)
    bad[2, 5] = float("nan")
    rows, _, vals = fz._topk_candidates(bad, 8)
    assert torch.isnan(vals[rows == 2]).any() and not torch.isnan(vals[rows != 2]).any()  # reaches the pooled check


def test_topk_sae_nan_is_reported(tiny_model, tokenizer):
    from sae_lens import TopKSAE, TopKSAEConfig

    cfg = TopKSAEConfig(d_in=32, d_sae=128, k=6)
    cfg.metadata.hook_name = "model.layers.1"
    sae = TopKSAE(cfg)
    with torch.no_grad():
        sae.W_enc[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN/inf"):
        fz.featurize(list(PROMPTS), tiny_model, tokenizer, sae, progress=False)


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_topk_sae_fast_path_matches_plain_encode(monkeypatch, tiny_model, tokenizer, pooling):
    from sae_lens import TopKSAE, TopKSAEConfig

    torch.manual_seed(0)
    cfg = TopKSAEConfig(d_in=32, d_sae=128, k=6)
    cfg.metadata.hook_name = "model.layers.1"
    sae = TopKSAE(cfg)
    with torch.no_grad():
        sae.W_enc.normal_()
        sae.b_dec.normal_(0, 0.1)
    prompts = list(PROMPTS)
    fast = fz.featurize(prompts, tiny_model, tokenizer, sae, pooling=pooling, batch_size=3, progress=False).toarray()
    assert type(sae.activation_fn).__name__ == "TopK"  # restored after the swap
    monkeypatch.setattr(fz, "_topk_module", lambda _sae: None)
    plain = fz.featurize(prompts, tiny_model, tokenizer, sae, pooling=pooling, batch_size=3, progress=False).toarray()
    np.testing.assert_allclose(fast, plain, rtol=1e-6, atol=1e-7)
    assert (fast > 0).sum() > 0


# ---------------------------------------------------------------- diversity: sparse k-means


def planted(n_per: int = 300, k: int = 6, d: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows, cols, vals, truth = [], [], [], []
    for c in range(k):
        block = np.arange(c * (d // k), (c + 1) * (d // k))
        for _ in range(n_per):
            picked = np.concatenate([rng.choice(block, 20, replace=False), rng.choice(d, 3, replace=False)])
            picked = np.unique(picked)
            rows += [len(truth)] * len(picked)
            cols += picked.tolist()
            vals += rng.exponential(1.0, len(picked)).tolist()
            truth.append(c)
    X = sp.csr_matrix((np.float32(vals), (rows, cols)), shape=(len(truth), d))
    return X, np.array(truth)


def test_sparse_kmeans_recovers_planted_groups_deterministically():
    from sklearn.preprocessing import normalize

    X, truth = planted()
    labels, centers, inertia, info = dv.sparse_kmeans(normalize(X), 6, seed=0, init_size=512)
    assert dv.purity(labels, truth) == 1.0
    assert len(info["levels"]) >= 2  # sample levels, then the full passes
    again = dv.sparse_kmeans(normalize(X), 6, seed=0, init_size=512)
    np.testing.assert_array_equal(again[0], labels)
    np.testing.assert_array_equal(again[1], centers)
    assert inertia == pytest.approx(again[2])
    # the labels are the nearest centres of the returned centres
    np.testing.assert_array_equal(dv._nearest(normalize(X), centers)[0], labels)


def test_cluster_switches_to_sparse_kmeans_above_the_exact_limit(monkeypatch, tmp_path):
    X, truth = planted(seed=1)
    monkeypatch.setattr(dv, "EXACT_MAX_ROWS", 100)
    result = dv.cluster(X, 6, seed=0)
    assert dv.purity(result.labels, truth) == 1.0
    np.testing.assert_array_equal(result.assign(X), result.labels)
    result.save(tmp_path / "c")
    np.testing.assert_array_equal(dv.Clustering.load(tmp_path / "c").assign(X), result.labels)
    assert sum(result.config.sizes) == X.shape[0] and result.config.inertia > 0


def test_nearest_matches_dense_distances():
    rng = np.random.default_rng(0)
    X = sp.random(300, 50, density=0.2, format="csr", dtype=np.float32, random_state=0)
    C = rng.standard_normal((7, 50)).astype(np.float32)
    labels, dist = dv._nearest(X, C)
    dense = ((X.toarray()[:, None, :] - C[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(labels, dense.argmin(1))
    np.testing.assert_allclose(dist, dense.min(1), rtol=1e-4, atol=1e-4)
