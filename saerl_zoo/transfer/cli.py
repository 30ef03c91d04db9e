"""`saerl-zoo transfer fit | eval`: thin shells over `saerl_zoo.transfer`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np


def _load_host(sae_name: str, host: str | None, device: str, trust_remote_code: bool):
    """Host model A: --from, else the SAE's catalog entry's model."""
    from saerl_zoo.models import load_model
    from saerl_zoo.zoo.api import get_catalog, load_host_model

    if host is not None:
        return load_model(host, device=device, trust_remote_code=trust_remote_code)
    if sae_name not in get_catalog():
        raise click.UsageError(f"--sae {sae_name} is not a catalog name: give its host model with --from")
    return load_host_model(get_catalog().get(sae_name), device=device)


@click.group("transfer")
def transfer() -> None:
    """Use an SAE and its probes with another model (family or size).

    `fit` learns a stitch (B's residual stream -> the SAE host's) on a shared
    text corpus; `eval` measures what the SAE, probes and curriculum keep
    through it. For scorer transfer (host scores, another model trains) no
    stitch is needed: see `saerl_zoo.transfer.check_policy`.
    """


@transfer.command("fit")
@click.option("--sae", "sae_name", required=True, help="The host SAE: catalog name or sae-lens folder.")
@click.option("--from", "host", help="Host model A (folder or Hub id). Default: the SAE's catalog host.")
@click.option("--to", "target", required=True, help="Model B (folder or Hub id) whose activations the stitch reads.")
@click.option("--corpus", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True, help="jsonl/parquet of shared texts (--text-field of each row), or .txt with one text per line.")
@click.option("--text-field", default="text", show_default=True, help="Field of each corpus row holding the text.")
@click.option("--layer", type=int, help="B's decoder block. Default: chosen by held-out fit among --candidate-layers.")
@click.option("--candidate-layers", help="Comma-separated blocks of B to choose from. Default: all.")
@click.option("--method", type=click.Choice(["ridge", "procrustes", "cca", "identity"]), default="ridge", show_default=True)
@click.option("--pairing", type=click.Choice(["prompt", "token"]), default="token", show_default=True,
              help="token: tokens aligned by character offsets; prompt: mean-pooled per text (fits pooled means well but "
                   "carries SAE features poorly: the SAE encodes each token, see benchmarks/results/transfer.md).")
@click.option("--max-length", type=int, default=128, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--trust-remote-code", is_flag=True, help="Run the model repos' own code (off unless you ask).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder for stitch.safetensors + stitch_config.json.")
@click.option("--overwrite", is_flag=True, help="Replace the files an existing --out holds (without it, a non-empty --out is refused).")
@click.option("--register", "catalog", type=click.Path(dir_okay=False, path_type=Path), help="Add the stitch to this catalog file (use it via SAERL_ZOO_CATALOG).")
@click.option("--name", help="Catalog name of the stitch (with --register).")
@click.option("--model-id", help="Model id the catalog entry is for (what load_sae(..., for_model=) matches). Default: --to.")
def fit_cmd(sae_name, host, target, corpus, text_field, layer, candidate_layers, method, pairing, max_length, batch_size, seed,
            device, trust_remote_code, out, overwrite, catalog, name, model_id):
    """Fit a stitch from model B (--to) into the SAE's host model (--from)."""
    from saerl_zoo.data import read_texts
    from saerl_zoo.models import load_model
    from saerl_zoo.storage import check_output
    from saerl_zoo.transfer.fit import fit_stitch_on_texts
    from saerl_zoo.transfer.register import register_stitch
    from saerl_zoo.zoo.api import load_sae

    if catalog is not None and not name:
        raise click.UsageError("--register needs --name")
    check_output(out, overwrite=overwrite)
    sae = load_sae(sae_name, device=device)
    host_model, host_tokenizer = _load_host(sae_name, host, device, trust_remote_code)
    model, tokenizer = load_model(target, device=device, trust_remote_code=trust_remote_code)
    candidates = [int(x) for x in candidate_layers.split(",")] if candidate_layers else None
    stitch = fit_stitch_on_texts(
        host_model, host_tokenizer, sae, model, tokenizer, read_texts(corpus, text_field), source_layer=layer, candidate_layers=candidates,
        method=method, pairing=pairing, max_length=max_length, batch_size=batch_size, corpus_path=str(corpus), sae_name=sae_name,
        source_model=model_id or target, seed=seed,
    )
    stitch.save(out)
    m = stitch.metrics
    click.echo(f"{method} stitch {target} block {stitch.config.source_layer} -> {stitch.config.target_model} block "
               f"{stitch.config.target_layer}: held-out explained variance {m['explained_variance']:.3f} "
               f"(identity, {m['identity']}: {m['identity_explained_variance']:.3f}) -> {out}")
    if catalog is not None:
        entry = register_stitch(stitch, out, catalog, name=name, sae_name=sae_name, model_id=model_id or target,
                                context_length=max_length, command=" ".join(["saerl-zoo", *sys.argv[1:]]))
        click.echo(f"registered {entry.name} in {catalog}: load_sae({sae_name!r}, for_model={entry.model.id!r}) now applies it")


@transfer.command("eval")
@click.option("--stitch", "stitch_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--sae", "sae_name", help="The host SAE. Default: the one the stitch was fitted for.")
@click.option("--from", "host", help="Host model A. Default: the SAE's catalog host.")
@click.option("--to", "target", help="Model B. Default: the stitch's source model.")
@click.option("--prompts", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Eval prompts (jsonl/parquet). Default: the embedded pool.")
@click.option("--prompt-field", default="prompt", show_default=True)
@click.option("--ground-truth", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="jsonl of per-prompt truth (level, quality) in prompt order. Default: the embedded one with the embedded pool.")
@click.option("--difficulty-probe", help="Folder or catalog name. Default: the catalog's difficulty probe on this SAE.")
@click.option("--quality-probe", help="Folder or catalog name. Default: the catalog's quality probe on this SAE.")
@click.option("--refit-difficulty-labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="jsonl {id, pass_rate}: re-fit the difficulty probe on B's mapped codes (with --refit-quality-labels).")
@click.option("--refit-quality-labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="jsonl {id, label}.")
@click.option("--exclude", "exclude_files", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="jsonl with an id per row: prompts a probe was fitted on, left out of the scores (repeatable). With the "
                   "embedded pool its two labelled subsets, the embedded probes' training labels, are always left out.")
@click.option("--max-length", type=int, default=128, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--trust-remote-code", is_flag=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the report as JSON here.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out (without it, an existing --out is refused).")
@click.option("--force", is_flag=True, help="Run although a model's fingerprint differs from the one the stitch recorded "
                                            "(width and block are still checked).")
def eval_cmd(stitch_dir, sae_name, host, target, prompts, prompt_field, ground_truth, difficulty_probe, quality_probe,
             refit_difficulty_labels, refit_quality_labels, exclude_files, max_length, batch_size, seed, device, trust_remote_code, out,
             overwrite, force):
    """Compare the host's SAE, probes and curriculum with the same run through model B and a stitch."""
    from saerl_zoo.data import align_labels, index_by_id, load_rows
    from saerl_zoo.embedded import default_path
    from saerl_zoo.models import load_model
    from saerl_zoo.storage import check_output, write_json
    from saerl_zoo.transfer.evaluate import GroundTruth, RefitLabels, evaluate_stitch
    from saerl_zoo.transfer.maps import StitchMap
    from saerl_zoo.zoo.api import list_artifacts, load_probe, load_sae

    if out is not None:
        check_output(out, overwrite=overwrite)
    stitch = StitchMap.load(stitch_dir)
    sae_name = sae_name or stitch.config.sae
    sae = load_sae(sae_name, device=device)
    host_model, host_tokenizer = _load_host(sae_name, host, device, trust_remote_code)
    model, tokenizer = load_model(target or stitch.config.source_model, device=device, trust_remote_code=trust_remote_code)
    if (refit_difficulty_labels is None) != (refit_quality_labels is None):
        raise click.UsageError("re-fitting needs both --refit-difficulty-labels and --refit-quality-labels")
    rows = load_rows(prompts or default_path("prompts.jsonl"), prompt_field)
    if ground_truth is None and prompts is None:
        ground_truth = default_path("ground_truth.jsonl")
    probes: dict[str, Any] = {}
    for kind, given in (("difficulty", difficulty_probe), ("quality", quality_probe)):
        found = [a.name for a in list_artifacts(kind=f"{kind}-probe") if a.features == sae_name]
        if given or found:
            probes[kind] = load_probe(given or found[0])
    refit, labelled = None, []
    if refit_difficulty_labels is not None:
        d_index, d_values = align_labels(rows, load_rows(refit_difficulty_labels, None), "pass_rate", bounds=(0, 1))
        q_index, q_values = align_labels(rows, load_rows(refit_quality_labels, None), "label", binary=True)
        refit, labelled = RefitLabels(d_index, 1.0 - d_values, q_index, q_values), [d_index, q_index]
    if prompts is None:  # the embedded probes were fitted on these: scoring them there would flatter both sides
        exclude_files = (*exclude_files, default_path("pass_rates.jsonl"), default_path("quality_labels.jsonl"))
    position = index_by_id(rows, "id", "prompt") if exclude_files else {}
    for path in exclude_files:
        excluded = list(index_by_id(load_rows(path, None), "id", "excluded prompt"))  # ids checked as label ids are
        unknown = [key for key in excluded if key not in position]
        if unknown:
            raise click.UsageError(f"--exclude {path}: {len(unknown)} ids are not among the prompts, e.g. {unknown[0]!r}")
        labelled.append(np.array([position[key] for key in excluded], dtype=np.int64))
    truth = None
    if ground_truth is not None:
        truth_rows = load_rows(ground_truth, None)
        if len(truth_rows) != len(rows):
            raise click.UsageError(f"{len(truth_rows)} ground-truth rows for {len(rows)} prompts")
        truth = GroundTruth.from_rows(truth_rows, exclude=np.concatenate(labelled) if labelled else None)
    report = evaluate_stitch(stitch, sae, host_model, host_tokenizer, model, tokenizer, [r[prompt_field] for r in rows],
                             difficulty_probe=probes.get("difficulty"), quality_probe=probes.get("quality"), truth=truth, refit=refit,
                             max_length=max_length, batch_size=batch_size, seed=seed, force=force)
    if truth is not None:
        report["scored_prompts"] = {"n": int(truth.scored.sum()), "left_out": int((~truth.scored).sum()),
                                    "left_out_from": [str(p) for p in exclude_files] + ([] if refit is None else ["refit labels"])}
    if out is not None:
        write_json(out, report)
    shown = {k: v for k, v in report.items() if k != "stitch"}
    click.echo(json.dumps(shown, indent=2, default=float))


COMMANDS = (transfer,)
