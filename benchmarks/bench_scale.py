"""Curriculum at scale: clustering, probe scoring and sampler order for up to 1M prompts.

Synthetic SAE codes stand in for a featurized pool: d_sae = 16,384, ~64 active
features per prompt (CSR, float32), drawn from 100 planted "topics" (each
topic prefers 256 features; 54 draws from the topic, 16 anywhere, duplicates
merged) with exponential activations. The planted topics give the clusterings
a ground truth to be scored against.

Stages, each timed on its own (in a fresh process per stage and size in the
full run, so its peak RSS is its own, data loading included):

* ``cluster``  — ``saerl_zoo.diversity.cluster(X, 100)``: L2 normalisation +
  k-means (scikit-learn ``KMeans`` up to 20k prompts, ``sparse_kmeans`` above);
* ``mbkm``     — scikit-learn ``MiniBatchKMeans(100)`` (defaults) on the same
  normalised codes: the reference for time and clustering agreement;
* ``probe``    — difficulty and quality probe predictions (``X @ w + b``) and
  the quality keep mask;
* ``sampler``  — ``SaeRLSampler`` construction (validation, fingerprint) and
  ``order()`` for the epoch.

Targets at 1M prompts on 2 CPU cores: clustering < 2 min, probe scoring < 10 s,
sampler order < 5 s, peak memory < 4 GB per stage, nothing dense of n × d_sae.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from benchmarks.common import figure, run_stage

NAME = "scale"
D_SAE = 16_384
K = 100
TOPICS = 100
SAMPLER_BATCH = 64


# ---------------------------------------------------------------- data


def make_codes(n: int, seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray]:
    """n synthetic pooled SAE codes (CSR n × 16384, ~64 nnz per row) and each row's planted topic."""
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, TOPICS, n)
    preferred = rng.integers(0, D_SAE, (TOPICS, 256))
    X = None
    parts = []
    step = 1 << 17
    for start in range(0, n, step):  # in blocks: bounded temporaries
        m = min(step, n - start)
        own = preferred[topic[start : start + m, None], rng.integers(0, 256, (m, 54))]
        anywhere = rng.integers(0, D_SAE, (m, 16))
        cols = np.concatenate([own, anywhere], 1).astype(np.int32)
        cols.sort(1)
        vals = rng.exponential(1.0, cols.shape).astype(np.float32)
        block = sp.csr_matrix((vals.ravel(), cols.ravel(), np.arange(0, m * 70 + 1, 70)), shape=(m, D_SAE))
        block.sum_duplicates()
        parts.append(block)
    X = sp.vstack(parts, format="csr") if len(parts) > 1 else parts[0]
    X.indptr = X.indptr.astype(np.int64) if X.nnz >= 2**31 else X.indptr
    return X, topic


def save_codes(folder: Path, X: sp.csr_matrix, topic: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "indptr.npy", X.indptr)
    np.save(folder / "indices.npy", X.indices)
    np.save(folder / "data.npy", X.data)
    np.save(folder / "topic.npy", topic)


def load_codes(folder: str | Path, n: int) -> sp.csr_matrix:
    """The first n rows of the saved codes, read into memory (memory-mapped reads, then copied)."""
    folder = Path(folder)
    indptr = np.load(folder / "indptr.npy", mmap_mode="r")[: n + 1]
    nnz = int(indptr[-1])
    indices = np.array(np.load(folder / "indices.npy", mmap_mode="r")[:nnz])
    data = np.array(np.load(folder / "data.npy", mmap_mode="r")[:nnz])
    return sp.csr_matrix((data, indices, np.array(indptr)), shape=(n, D_SAE))


# ---------------------------------------------------------------- stages (run in a subprocess in the full run)


def stage_baseline(folder: str, n: int, out: str, k: int = K) -> dict[str, Any]:
    """Nothing but the imports every stage pays (torch, scikit-learn, scipy): the RSS floor."""
    import sklearn.cluster  # noqa: F401
    import torch  # noqa: F401

    import saerl_zoo.diversity  # noqa: F401
    import saerl_zoo.sampler  # noqa: F401

    return {"seconds": 0.0}


def stage_cluster(folder: str, n: int, out: str, k: int = K) -> dict[str, Any]:
    from saerl_zoo.diversity import EXACT_MAX_ROWS, cluster

    X = load_codes(folder, n)
    start = time.perf_counter()
    result = cluster(X, k, seed=0)
    seconds = time.perf_counter() - start
    np.save(Path(out) / f"labels-cluster-{n}.npy", result.labels)
    algorithm = "sklearn KMeans (n_init=3)" if n <= EXACT_MAX_ROWS else "sparse_kmeans"
    return {"seconds": seconds, "inertia": result.config.inertia, "algorithm": algorithm, "nnz": int(X.nnz)}


def stage_fast(folder: str, n: int, out: str, k: int = K) -> dict[str, Any]:
    """sparse_kmeans forced (what cluster() uses above 20k), for the growth table at small n."""
    from sklearn.preprocessing import normalize

    from saerl_zoo.diversity import sparse_kmeans

    X = load_codes(folder, n)
    start = time.perf_counter()
    labels, _, inertia, info = sparse_kmeans(normalize(X), k, seed=0)
    seconds = time.perf_counter() - start
    np.save(Path(out) / f"labels-fast-{n}.npy", labels)
    return {"seconds": seconds, "inertia": inertia, "passes": [lv["passes"] for lv in info["levels"]]}


def stage_mbkm(folder: str, n: int, out: str, k: int = K) -> dict[str, Any]:
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.preprocessing import normalize

    X = load_codes(folder, n)
    start = time.perf_counter()
    km = MiniBatchKMeans(n_clusters=k, random_state=0).fit(normalize(X))
    seconds = time.perf_counter() - start
    np.save(Path(out) / f"labels-mbkm-{n}.npy", km.labels_.astype(np.int64))
    return {"seconds": seconds, "inertia": float(km.inertia_), "steps": int(km.n_steps_)}


def _probes():
    from saerl_zoo.difficulty import DifficultyProbe
    from saerl_zoo.probe import ProbeConfig
    from saerl_zoo.quality import QualityProbe

    rng = np.random.default_rng(1)

    def weights(nonzero: int) -> np.ndarray:
        w = np.zeros(D_SAE, dtype=np.float32)
        w[rng.choice(D_SAE, nonzero, replace=False)] = rng.normal(0, 0.1, nonzero)
        return w

    def config(kind: str, estimator: str) -> ProbeConfig:
        return ProbeConfig(probe=kind, estimator=estimator, d_in=D_SAE, target="synthetic", hyperparameters={},
                           metrics={}, n_train=0, n_heldout=0, seed=0)

    return (DifficultyProbe(weights(400), 0.5, config("difficulty", "elasticnet")),
            QualityProbe(weights(D_SAE), 2.0, config("quality", "logistic")))


def stage_probe(folder: str, n: int, out: str, k: int = K) -> dict[str, Any]:
    X = load_codes(folder, n)
    difficulty_probe, quality_probe = _probes()
    start = time.perf_counter()
    difficulty = difficulty_probe.predict(X)
    keep = quality_probe.keep_mask(X, keep_fraction=0.9)
    seconds = time.perf_counter() - start
    np.save(Path(out) / f"difficulty-{n}.npy", difficulty)
    np.save(Path(out) / f"keep-{n}.npy", keep)
    return {"seconds": seconds, "kept": int(keep.sum())}


def stage_sampler(folder: str, n: int, out: str, k: int = K) -> dict[str, Any]:
    from saerl_zoo.sampler import SaeRLSampler

    out = Path(out)
    labels_path = out / f"labels-cluster-{n}.npy"
    clusters = np.load(labels_path) if labels_path.exists() else np.random.default_rng(0).integers(0, k, n)
    difficulty = np.load(out / f"difficulty-{n}.npy")
    keep = np.load(out / f"keep-{n}.npy")
    start = time.perf_counter()
    sampler = SaeRLSampler(n, batch_size=SAMPLER_BATCH, clusters=clusters, difficulty=difficulty, keep=keep, mixing=0.1, seed=0)
    built = time.perf_counter()
    order = sampler.order()
    done = time.perf_counter()
    small = SaeRLSampler(n, batch_size=8, clusters=clusters, difficulty=difficulty, keep=keep, mixing=0.1, seed=0)
    start8 = time.perf_counter()
    small.order()
    seconds8 = time.perf_counter() - start8
    return {"seconds": done - start, "construct_s": built - start, "order_s": done - built, "order_len": len(order),
            "order_s_batch8": seconds8}


STAGES = {"cluster": stage_cluster, "fast": stage_fast, "mbkm": stage_mbkm, "probe": stage_probe, "sampler": stage_sampler}


def _in_process(fn, **kwargs) -> dict[str, Any]:
    """Quick mode: run a stage here; peak = tracemalloc's (numpy and Python allocations, not torch's)."""
    tracemalloc.start()
    try:
        result = fn(**kwargs)
        result["peak_traced_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    return result


# ---------------------------------------------------------------- the benchmark


def run(quick: bool = False, log=print) -> dict[str, Any]:
    from sklearn.metrics import adjusted_rand_score

    sizes = [1_000, 3_000] if quick else [10_000, 30_000, 100_000, 300_000, 1_000_000]
    k = 20 if quick else K
    mbkm_sizes = sizes
    n_max = sizes[-1]
    work = Path(tempfile.mkdtemp(prefix="saerl-scale-"))
    data, out = work / "codes", work / "out"
    out.mkdir(parents=True)
    start = time.perf_counter()
    X, topic = make_codes(n_max)
    save_codes(data, X, topic)
    nnz_per_row = X.nnz / X.shape[0]
    csr_mib = (X.data.nbytes + X.indices.nbytes + X.indptr.nbytes) / 2**20
    del X
    log(f"  synthetic codes: {n_max:,} × {D_SAE:,}, {nnz_per_row:.1f} active per row, CSR {csr_mib:.0f} MiB "
        f"(dense would be {n_max * D_SAE * 4 / 2**30:.1f} GiB); made in {time.perf_counter() - start:.1f}s")

    def stage(name: str, n: int) -> dict[str, Any]:
        kwargs = {"folder": str(data), "n": n, "out": str(out), "k": k}
        if quick:
            return _in_process(STAGES[name], **kwargs)
        return run_stage("benchmarks.bench_scale", STAGES[name].__name__, kwargs, timeout=1800)

    table: dict[int, dict[str, Any]] = {}
    baseline = None if quick else run_stage("benchmarks.bench_scale", "stage_baseline", {"folder": str(data), "n": 0, "out": str(out)})
    for n in sizes:
        row: dict[str, Any] = {}
        row["cluster"] = stage("cluster", n)
        from saerl_zoo.diversity import EXACT_MAX_ROWS

        row["fast"] = stage("fast", n) if n <= EXACT_MAX_ROWS else {**row["cluster"], "same_as": "cluster"}
        if n in mbkm_sizes:
            row["mbkm"] = stage("mbkm", n)
        row["probe"] = stage("probe", n)
        row["sampler"] = stage("sampler", n)
        truth = topic[:n]
        fast_labels = np.load(out / f"labels-{'fast' if n <= EXACT_MAX_ROWS else 'cluster'}-{n}.npy")
        cluster_labels = np.load(out / f"labels-cluster-{n}.npy")
        row["ari"] = {
            "cluster_vs_topics": adjusted_rand_score(truth, cluster_labels),
            "fast_vs_topics": adjusted_rand_score(truth, fast_labels),
        }
        if "mbkm" in row:
            mb = np.load(out / f"labels-mbkm-{n}.npy")
            row["ari"]["mbkm_vs_topics"] = adjusted_rand_score(truth, mb)
            row["ari"]["fast_vs_mbkm"] = adjusted_rand_score(fast_labels, mb)
        table[n] = row
        log(f"  n={n:>9,}: cluster {row['cluster']['seconds']:.2f}s ({row['cluster']['algorithm']}), "
            f"sparse_kmeans {row['fast']['seconds']:.2f}s, "
            + (f"MiniBatchKMeans {row['mbkm']['seconds']:.2f}s, " if "mbkm" in row else "")
            + f"probes {row['probe']['seconds']:.3f}s, sampler {row['sampler']['seconds']:.3f}s; "
            f"ARI vs topics: ours {row['ari']['fast_vs_topics']:.3f}"
            + (f", MiniBatchKMeans {row['ari']['mbkm_vs_topics']:.3f}, ours vs MiniBatchKMeans {row['ari']['fast_vs_mbkm']:.3f}"
               if "mbkm" in row else ""))

    figures = _figures(table, sizes, baseline, quick, k)
    slopes = {stage: _slope(sizes, [table[n][stage]["seconds"] for n in sizes]) for stage in ("fast", "probe", "sampler")}
    if all("mbkm" in table[n] for n in sizes):
        slopes["mbkm"] = _slope(sizes, [table[n]["mbkm"]["seconds"] for n in sizes])
    for stage, slope in slopes.items():
        label = {"fast": "sparse_kmeans", "mbkm": "MiniBatchKMeans", "probe": "probe scoring", "sampler": "sampler"}[stage]
        figures.append(figure("scale/growth", f"log-log slope of {label} time from {sizes[0]:,} to {sizes[-1]:,} prompts", slope,
                              "", target="≈ 1 (linear)", met=None if quick else bool(slope < 1.2)))
    from benchmarks.common import format_figure

    for f in figures:
        log("  " + format_figure(f))
    png = None
    try:
        png = _plot(table, sizes, work / "scale.png", k)
    except Exception as err:  # pragma: no cover - plotting is a plus
        log(f"  (no plot: {err})")
    return {
        "figures": figures,
        "details": {"sizes": sizes, "d_sae": D_SAE, "k": k, "nnz_per_row": nnz_per_row, "csr_mib_at_max": csr_mib,
                    "sampler_batch_size": SAMPLER_BATCH, "baseline_peak_rss_mib": baseline and baseline["peak_rss_mib"],
                    "memory": "peak RSS of a fresh process per stage (ru_maxrss)" if not quick
                    else "tracemalloc peak (numpy/Python allocations) — quick mode runs stages in-process",
                    "table": {str(n): row for n, row in table.items()}, "slopes": slopes},
        "artifacts": {"scale.png": str(png)} if png else {},
        "markdown": _markdown_table(table, sizes, quick),
    }


def _peak(stage: dict[str, Any]) -> float | None:
    return stage.get("peak_rss_mib", stage.get("peak_traced_mib"))


def _figures(
    table: dict[int, dict[str, Any]], sizes: list[int], baseline: dict[str, Any] | None, quick: bool, k: int
) -> list[dict[str, Any]]:
    n = sizes[-1]
    row = table[n]
    gb = 2**30 / 2**20  # MiB per GiB
    sec = f"scale/{n:,}"
    mem = "peak RSS" if not quick else "peak traced"
    figs = [
        figure(sec, f"clustering, cluster(X, k={k}) [{row['cluster']['algorithm']}]", row["cluster"]["seconds"], "s",
               target="< 120 s", met=row["cluster"]["seconds"] < 120,
               note=f"{mem} {_peak(row['cluster']):.0f} MiB"),
    ]
    if "mbkm" in row:
        same = " (the clustering above)" if row["cluster"]["algorithm"] == "sparse_kmeans" else ""
        figs.append(figure(sec, f"sparse_kmeans{same}", row["fast"]["seconds"], "s",
                           reference="sklearn MiniBatchKMeans (defaults), s", reference_value=row["mbkm"]["seconds"],
                           ratio=row["mbkm"]["seconds"] / row["fast"]["seconds"], note="ratio = speed-up over MiniBatchKMeans"))
        figs.append(figure(sec, "clustering agreement, ARI(ours, MiniBatchKMeans)", row["ari"]["fast_vs_mbkm"], "",
                           note=f"ARI vs planted topics: ours {row['ari']['fast_vs_topics']:.3f}, "
                                f"MiniBatchKMeans {row['ari']['mbkm_vs_topics']:.3f}"))
        figs.append(figure(sec, "k-means objective (inertia), ours", row["fast"]["inertia"], "",
                           reference="MiniBatchKMeans", reference_value=row["mbkm"]["inertia"], note="lower is better"))
    figs += [
        figure(sec, "probe scoring (difficulty + quality + keep mask)", row["probe"]["seconds"], "s", target="< 10 s",
               met=row["probe"]["seconds"] < 10, note=f"{mem} {_peak(row['probe']):.0f} MiB"),
        figure(sec, f"sampler construction + order (batch {SAMPLER_BATCH})", row["sampler"]["seconds"], "s", target="< 5 s",
               met=row["sampler"]["seconds"] < 5,
               note=f"order() alone {row['sampler']['order_s']:.2f}s; with batch 8 {row['sampler']['order_s_batch8']:.2f}s"),
    ]
    peaks = {stage: _peak(row[stage]) for stage in ("cluster", "mbkm", "probe", "sampler") if stage in row}
    worst = max(peaks, key=lambda s: peaks[s])
    figs.append(figure(sec, f"peak memory of any stage ({worst})", peaks[worst] / gb, "GiB", target="< 4 GB",
                       met=peaks[worst] * 2**20 < 4e9,
                       note=", ".join(f"{s} {v:.0f} MiB" for s, v in peaks.items())
                       + (f"; interpreter + imports alone {baseline['peak_rss_mib']:.0f} MiB" if baseline else "")))
    return figs


def _slope(sizes: list[int], seconds: list[float]) -> float:
    return float(np.polyfit(np.log(sizes), np.log(np.maximum(seconds, 1e-6)), 1)[0])


def _plot(table: dict[int, dict[str, Any]], sizes: list[int], path: Path, k: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    series = {f"sparse_kmeans (k={k})": "fast", f"MiniBatchKMeans (k={k})": "mbkm", "probe scoring": "probe",
              "sampler build + order": "sampler"}
    for label, key in series.items():
        xs = [n for n in sizes if key in table[n]]
        ax.loglog(xs, [table[n][key]["seconds"] for n in xs], "o-", label=label)
    ax.loglog(sizes, [table[sizes[0]]["fast"]["seconds"] * n / sizes[0] for n in sizes], "k:", label="linear")
    ax.set_xlabel("prompts")
    ax.set_ylabel("seconds")
    ax.set_title("SaeRL curriculum stages, d_sae = 16,384, ~64 active")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _markdown_table(table: dict[int, dict[str, Any]], sizes: list[int], quick: bool) -> str:
    mem = "peak RSS MiB" if not quick else "peak traced MiB"
    lines = [
        "| prompts | cluster() | ARI cluster() / topics | sparse_kmeans | MiniBatchKMeans | ARI ours / topics "
        f"| ARI MBKM / topics | ARI ours / MBKM | probes | sampler | {mem}: cluster / MBKM / probes / sampler |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        r = table[n]
        algo = "sklearn KMeans" if "KMeans" in r["cluster"]["algorithm"] else "sparse_kmeans"
        mbkm = f"{r['mbkm']['seconds']:.2f} s" if "mbkm" in r else "—"
        ari = r["ari"]
        peaks = " / ".join(f"{_peak(r[s]):.0f}" if s in r else "—" for s in ("cluster", "mbkm", "probe", "sampler"))
        lines.append(
            f"| {n:,} | {r['cluster']['seconds']:.2f} s ({algo}) | {ari['cluster_vs_topics']:.3f} | {r['fast']['seconds']:.2f} s | {mbkm} "
            f"| {ari['fast_vs_topics']:.3f} | {ari.get('mbkm_vs_topics', float('nan')):.3f} "
            f"| {ari.get('fast_vs_mbkm', float('nan')):.3f} | {r['probe']['seconds']:.3f} s | {r['sampler']['seconds']:.3f} s "
            f"| {peaks} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(run(quick=bool(os.environ.get("QUICK")))["details"]["slopes"]))
