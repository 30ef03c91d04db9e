"""How well a stitch carries the host SAE, its probes and its curriculum over to model B.

Everything is measured on one evaluation prompt set run through both models,
against the host's native pipeline on the same prompts:

* map: explained variance of A's activations predicted from B's (token pairs
  aligned by character offsets, and per-prompt means);
* SAE: L0 and reconstruction on mapped activations vs on A's own, and how
  close the SAE's reconstruction of mapped B comes to A's true activation;
* features: per-feature correlation of pooled codes, native vs mapped;
* probes: Spearman / AUROC against ground truth, native vs transferred
  (A's probes on mapped codes) vs refitted on mapped codes with a small
  labelled set, and native minus transferred with a paired bootstrap
  interval over the scored prompts;
* curricula: rank correlation of the difficulty orders, agreement of the
  quality filter, and cluster agreement (ARI) with A's cluster centres and
  with k-means refitted on the mapped codes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy import stats
from sklearn.metrics import adjusted_rand_score

from saerl_zoo.baselines import METRIC, score_metric
from saerl_zoo.bootstrap import paired_bootstrap
from saerl_zoo.curriculum import curriculum_from_features
from saerl_zoo.difficulty import DifficultyProbe
from saerl_zoo.diversity import Clustering, cluster
from saerl_zoo.quality import QualityProbe
from saerl_zoo.transfer.activations import TextActivations, token_index_pairs
from saerl_zoo.transfer.maps import StitchMap, explained_variance
from saerl_zoo.zoo.api import sae_metrics


@dataclasses.dataclass
class GroundTruth:
    """Per-prompt truth for scoring probes: difficulty (NaN where undefined, e.g. broken prompts) and 0/1 quality."""

    difficulty: np.ndarray | None = None
    quality: np.ndarray | None = None
    scored: np.ndarray | None = None  # prompts to score on (e.g. those outside every labelled subset); default all

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]], *, difficulty_field: str = "level", quality_field: str = "quality",
                  exclude: np.ndarray | None = None) -> GroundTruth:
        """Truth rows in prompt order (the embedded pool's ground_truth.jsonl); difficulty only on good prompts
        (a broken prompt has no meaningful level); `exclude`d rows (labelled ones) are not scored."""
        quality = np.array([float(r[quality_field]) for r in rows]) if all(quality_field in r for r in rows) else None
        difficulty = np.array([np.nan if r.get(difficulty_field) is None else float(r[difficulty_field]) for r in rows])
        if quality is not None:
            difficulty[quality == 0] = np.nan
        scored = np.ones(len(rows), dtype=bool)
        if exclude is not None:
            scored[np.asarray(exclude, dtype=np.int64)] = False
        return cls(difficulty=difficulty, quality=quality, scored=scored)

    def test_rows(self, kind: str, n: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(prompt indices, truth) that a `kind` ("difficulty" / "quality") score of `n` prompts is judged on, or None
        without that truth: the scored prompts, and for difficulty only those with a level. Probes, surface
        baselines and bootstrap gaps all take their test prompts from here, so they are judged on the same ones."""
        truth = self.difficulty if kind == "difficulty" else self.quality
        if truth is None:
            return None
        rows = self.scored if self.scored is not None else np.ones(n, dtype=bool)
        if kind == "difficulty":
            rows = rows & np.isfinite(truth)
        index = np.flatnonzero(rows)
        return index, truth[index]


@dataclasses.dataclass
class RefitLabels:
    """A small labelled subset for re-fitting the probes on B's mapped codes (row indices into the eval prompts)."""

    difficulty_index: np.ndarray
    difficulty: np.ndarray  # higher = harder
    quality_index: np.ndarray
    quality: np.ndarray  # 0 = broken, 1 = good


def pooled_codes(sae: Any, acts: TextActivations, layer: int, stitch: StitchMap | None = None, texts_per_block: int = 256) -> sp.csr_matrix:
    """Mean SAE code of each text's tokens, optionally through a stitch first (what `featurize` computes, from cached activations)."""
    tokens = acts.layer(layer)
    param = sae.W_enc
    blocks = []
    with torch.inference_mode():
        for start in range(0, acts.n_texts, texts_per_block):
            stop = min(acts.n_texts, start + texts_per_block)
            lo, hi = acts.text_ptr[start], acts.text_ptr[stop]
            x = torch.from_numpy(tokens[lo:hi]).to(param.device, param.dtype)
            if stitch is not None:
                x = stitch.apply(x)
            codes = sae.encode(x).float().cpu().numpy()
            sums = np.add.reduceat(codes, acts.text_ptr[start:stop] - lo, axis=0)
            blocks.append(sp.csr_matrix(sums / np.diff(acts.text_ptr[start : stop + 1])[:, None]))
    return sp.vstack(blocks, format="csr").astype(np.float32)


def feature_correlation(native: sp.csr_matrix, mapped: sp.csr_matrix) -> dict[str, float]:
    """Pearson correlation across prompts of each feature alive in the native codes, native vs mapped."""
    a, b = native.toarray().astype(np.float64), mapped.toarray().astype(np.float64)
    alive = a.std(0) > 0
    a, b = a[:, alive] - a[:, alive].mean(0), b[:, alive] - b[:, alive].mean(0)
    denom = np.sqrt((a**2).sum(0) * (b**2).sum(0))
    r = np.where(denom > 0, (a * b).sum(0) / np.where(denom > 0, denom, 1.0), 0.0)  # a feature dead in the mapped codes counts as 0
    return {"mean": float(r.mean()), "median": float(np.median(r)), "n_features": int(alive.sum())}


def probe_metrics(difficulty: np.ndarray | None, quality: np.ndarray | None, truth: GroundTruth) -> dict[str, float]:
    """Difficulty Spearman and quality AUROC of probe scores against the ground truth, on the scored prompts."""
    out: dict[str, float] = {}
    for kind, scores in (("difficulty", difficulty), ("quality", quality)):
        test = None if scores is None else truth.test_rows(kind, len(scores))
        if test is not None:
            out[f"{kind}_{METRIC[kind]}"] = score_metric(kind, test[1], scores[test[0]])
    return out


def probe_gaps(native: Any, transferred: Any, truth: GroundTruth, seed: int = 0) -> dict[str, dict[str, float]]:
    """Native minus transferred probe metric per kind, with a paired bootstrap interval over the scored prompts."""
    out = {}
    for kind in ("difficulty", "quality"):
        a, b = getattr(native, kind), getattr(transferred, kind)
        test = None if a is None or b is None else truth.test_rows(kind, len(a))
        if test is not None:
            index, y = test
            out[f"{kind}_{METRIC[kind]}"] = paired_bootstrap(lambda t, s, k=kind: score_metric(k, t, s), y, a[index], b[index], seed=seed)
    return out


class TransferEvaluation:
    """The host's native pipeline on the eval prompts, computed once; `evaluate` scores one stitch against it."""

    def __init__(self, sae: Any, target: TextActivations, target_layer: int, *, difficulty_probe: DifficultyProbe | None = None,
                 quality_probe: QualityProbe | None = None, truth: GroundTruth | None = None, n_clusters: int | None = None, seed: int = 0):
        self.sae, self.target, self.target_layer = sae, target, target_layer
        self.difficulty_probe, self.quality_probe, self.truth = difficulty_probe, quality_probe, truth or GroundTruth()
        self.seed = seed
        self.features = pooled_codes(sae, target, target_layer)
        self.clustering: Clustering = cluster(self.features, n_clusters, seed=seed)
        self.curriculum = self._curriculum(self.features)
        self.sae_native = self._sae_metrics(torch.from_numpy(target.layer(target_layer)))

    def _curriculum(self, features: sp.csr_matrix, difficulty_probe=None, quality_probe=None):
        return curriculum_from_features(features, difficulty_probe=difficulty_probe or self.difficulty_probe,
                                        quality_probe=quality_probe or self.quality_probe, clustering=self.clustering, seed=self.seed)

    def _sae_metrics(self, acts: torch.Tensor) -> dict[str, float]:
        m = sae_metrics(self.sae, acts)
        return {"l0": m["l0"], "explained_variance": m["explained_variance"], "dead_fraction": m["dead_fraction"]}

    def native(self) -> dict[str, Any]:
        """The host pipeline's own numbers: SAE metrics and probe quality against the truth."""
        c = self.curriculum
        return {"sae": self.sae_native, "probes": probe_metrics(c.difficulty, c.quality, self.truth),
                "n_prompts": len(c), "n_clusters": int(self.clustering.config.n_clusters)}

    def evaluate(self, stitch: StitchMap, source: TextActivations, refit: RefitLabels | None = None) -> dict[str, Any]:
        """Every transfer metric of one stitch, given B's activations on the same eval prompts."""
        c = stitch.config
        if c.target_layer != self.target_layer or c.d_target != self.target.width:
            raise ValueError(f"the stitch maps into layer {c.target_layer} ({c.d_target} dims); this evaluation reads layer "
                             f"{self.target_layer} ({self.target.width} dims)")
        x_b, y_a = source.layer(c.source_layer), self.target.layer(self.target_layer)
        src_rows, tgt_rows, _ = token_index_pairs(source, self.target)
        mapped_tokens = stitch.apply(x_b)
        with torch.inference_mode():
            recon = self.sae.decode(self.sae.encode(torch.from_numpy(mapped_tokens[src_rows]))).float().numpy()
        features = pooled_codes(self.sae, source, c.source_layer, stitch)
        out: dict[str, Any] = {
            "map": {
                "token_explained_variance": explained_variance(y_a[tgt_rows], mapped_tokens[src_rows]),
                "prompt_explained_variance": explained_variance(self.target.pooled(self.target_layer), stitch.apply(source.pooled(c.source_layer))),
                "n_token_pairs": int(len(src_rows)),
            },
            "sae": {**self._sae_metrics(torch.from_numpy(mapped_tokens)),
                    "explained_variance_vs_native": explained_variance(y_a[tgt_rows], recon)},
            "features": feature_correlation(self.features, features),
        }
        curriculum = self._curriculum(features)
        out["probes"] = {"transferred": probe_metrics(curriculum.difficulty, curriculum.quality, self.truth),
                         "native_minus_transferred": probe_gaps(self.curriculum, curriculum, self.truth, self.seed)}
        out["curriculum"] = self._agreement(curriculum, features)
        if refit is not None:
            d_probe = DifficultyProbe.fit(features[refit.difficulty_index], refit.difficulty, seed=self.seed)
            q_probe = QualityProbe.fit(features[refit.quality_index], refit.quality, seed=self.seed)
            refitted = self._curriculum(features, d_probe, q_probe)
            out["probes"]["refit"] = probe_metrics(refitted.difficulty, refitted.quality, self.truth)
            out["probes"]["refit_heldout"] = {"difficulty": d_probe.metrics, "quality": q_probe.metrics}
        return out

    def _agreement(self, transferred, features: sp.csr_matrix) -> dict[str, float]:
        native = self.curriculum
        out: dict[str, float] = {}
        if native.difficulty is not None:
            out["difficulty_spearman"] = float(stats.spearmanr(native.difficulty, transferred.difficulty).statistic)
        if native.quality is not None:
            out["keep_agreement"] = float(np.mean(native.keep == transferred.keep))
        out["cluster_ari"] = float(adjusted_rand_score(native.clusters, transferred.clusters))
        refitted = cluster(features, self.clustering.config.n_clusters, seed=self.seed)
        out["cluster_ari_refit"] = float(adjusted_rand_score(self.clustering.labels, refitted.labels))
        return out


def evaluate_stitch(
    stitch: StitchMap,
    sae: Any,
    host_model: Any,
    host_tokenizer: Any,
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    difficulty_probe: DifficultyProbe | None = None,
    quality_probe: QualityProbe | None = None,
    truth: GroundTruth | None = None,
    refit: RefitLabels | None = None,
    max_length: int = 128,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    force: bool = False,
) -> dict[str, Any]:
    """Run `prompts` through host A and model B, then compare the host pipeline with the stitched one (see the module doc).

    Both models are checked against the stitch (width, block, fingerprint) and the SAE against the
    preprocessing the stitch was fitted with, before either model runs; `force=True` skips the fingerprint check only.
    """
    from saerl_zoo.transfer.activations import collect_activations
    from saerl_zoo.transfer.check import check_stitch_model, check_stitch_preprocessing

    c = stitch.config
    check_stitch_model(c, host_model, "target", force=force)
    check_stitch_model(c, model, "source", force=force)
    preprocessing = check_stitch_preprocessing(c, sae)
    kw = {"max_length": max_length, "batch_size": batch_size, "preprocessing": preprocessing, "progress": progress}
    target = collect_activations(host_model, host_tokenizer, prompts, [c.target_layer], **kw)
    source = collect_activations(model, tokenizer, prompts, [c.source_layer], **kw)
    evaluation = TransferEvaluation(sae, target, c.target_layer, difficulty_probe=difficulty_probe, quality_probe=quality_probe,
                                    truth=truth, seed=seed)
    return {"native": evaluation.native(), "transfer": evaluation.evaluate(stitch, source, refit), "stitch": dataclasses.asdict(c)}
