"""`saerl-zoo`: one click group; each command parses, calls one library function, prints.

With no model arguments every command uses the embedded default (a tiny math
policy, its SAE and probes), so it runs offline on a fresh machine.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any

import click

from saerl_zoo.errors import UserError, one_line

OVERWRITE = click.option("--overwrite", is_flag=True, help="Replace the files an existing --out holds (without it, a non-empty --out is refused).")
LM_OPTIONS = [
    click.option("--model", "model_path", help="HF causal LM (folder or Hub id). Default: the embedded tiny policy."),
    click.option("--gguf-file", help="Load --model from this GGUF file inside the folder."),
    click.option("--device", default="cpu", show_default=True),
    click.option("--trust-remote-code", is_flag=True, help="Run the model repo's own code (off unless you ask)."),
]
MODEL_OPTIONS = LM_OPTIONS[:1] + [
    click.option("--sae", "sae_path", help="sae-lens SAE folder for that model. Default: the embedded SAE."),
    click.option("--layer", type=int, help="Decoder block (from 0) whose output an SAE without a recorded hook reads; with a hook it may only repeat the SAE's block."),
] + LM_OPTIONS[1:]
FEATURIZE_OPTIONS = [
    click.option("--pooling", type=click.Choice(["mean", "max"]), default="mean", show_default=True, help="Pool SAE codes over prompt tokens."),
    click.option("--batch-size", "featurize_batch_size", type=int, default=32, show_default=True, help="Prompts per forward pass."),
    click.option("--max-length", type=int, default=512, show_default=True, help="Truncate prompts to this many tokens (at most the model's context)."),
    click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
                 help="Feature cache: finished shards are kept in a subfolder named for the inputs (model, SAE, prompts, "
                      "settings), so a rerun resumes and other inputs get their own. featurize: none unless given; "
                      "curriculum: $SAERL_ZOO_CACHE/features, else ~/.cache/saerl_zoo/features."),
    click.option("--prompt-field", default="prompt", show_default=True, help="Field of each row holding the prompt text."),
]


def _apply(options: list[Any]):
    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def _check_model_args(model_path, sae_path, gguf_file) -> None:
    if model_path is None and (sae_path is not None or gguf_file is not None):
        raise click.UsageError("--sae/--gguf-file need --model: an SAE only fits the model it was trained on")
    if model_path is not None and sae_path is None:
        raise click.UsageError("--model needs --sae: give the SAE trained on that model's residual stream")


def _load_model_and_sae(model_path, sae_path, gguf_file, device, trust_remote_code):
    from saerl_zoo.embedded import default_path
    from saerl_zoo.models import load_model
    from saerl_zoo.zoo.api import load_sae

    model, tokenizer = load_model(
        default_path("model") if model_path is None else model_path, device=device, gguf_file=gguf_file, trust_remote_code=trust_remote_code
    )
    return model, tokenizer, load_sae(default_path("sae") if sae_path is None else sae_path, device=device)


def _default_feature_cache() -> Path:
    """Where `curriculum` keeps feature shards: outside --out, so a refused or resumed --out never holds a cache."""
    from saerl_zoo.storage import cache_root

    return cache_root() / "features"


def _warn(note: str | None) -> None:
    """A library's note on a finished run (prompts cut, a solver that stopped short), as one stderr line."""
    if note:
        click.echo(f"warning: {note}", err=True)


def _prompts_path(prompts: Path | None) -> Path:
    from saerl_zoo.embedded import default_path

    return prompts if prompts is not None else default_path("prompts.jsonl")


class OutlierRatio(click.ParamType):
    """train-sae's --outlier-norm-ratio: 'auto', 'none' (None) or a number."""

    name = "auto|none|RATIO"

    def convert(self, value, param, ctx):
        if value in (None, "auto") or isinstance(value, float):
            return value
        if value == "none":
            return None
        try:
            return float(value)
        except ValueError:
            self.fail(f"expected auto, none or a number, got {value!r}", param, ctx)


DEBUG_ENV = "SAERL_ZOO_DEBUG"
USER_ERRORS = (ValueError, OSError, ImportError)  # bad input, files/permissions/network, a missing optional package
BUG_EXIT_CODE = 70  # EX_SOFTWARE: a fault of saerl-zoo, not of the input (user errors exit 1, usage errors 2)


class _Bug(click.ClickException):
    exit_code = BUG_EXIT_CODE


def _describe(err: BaseException) -> str:
    """One line for a user error: an OSError as `path: reason`, anything else by its message.

    Our own messages are kept whole (their advice comes last); third-party ones are cut to a line's worth.
    """
    if isinstance(err, OSError) and err.strerror and err.filename:
        return f"{err.filename}: {err.strerror}"
    return one_line(err, limit=None if isinstance(err, UserError) else 400) or type(err).__name__


class _Group(click.Group):
    """Every error reaching the CLI becomes one line and an exit code, for every subcommand.

    Bad input (a ValueError such as `UserError`, an OSError, a missing
    package) exits 1 with its message; any other exception is a bug and exits
    70 with a hint to rerun with --debug, which prints the traceback first.
    Errors of nested groups (`transfer`) and of the zoo commands pass through here too.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as err:
            if ctx.params.get("debug"):
                click.echo(traceback.format_exc(), err=True, nl=False)
            if isinstance(err, USER_ERRORS):
                raise click.ClickException(_describe(err)) from err
            raise _Bug(f"unexpected {type(err).__name__}: {one_line(err)} (a bug in saerl-zoo: rerun as `saerl-zoo --debug ...` "
                       f"or with {DEBUG_ENV}=1 for the traceback, and report it)") from err


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="saerl-zoo")
@click.option("--debug", is_flag=True, envvar=DEBUG_ENV, help=f"Print the traceback of an error (also {DEBUG_ENV}=1).")
def main(debug: bool) -> None:
    """SaeRL data engineering for RL post-training.

    Read each prompt through a sparse autoencoder on the policy's residual
    stream, then derive diversity (clusters), difficulty and quality (probes)
    and order the prompt pool into a curriculum for GRPO-style training.

    Typical flow: label → featurize → fit-probe (difficulty, quality) → curriculum.
    `saerl-zoo curriculum --out runs/demo` runs the whole flow on the embedded
    default with nothing downloaded.

    A command refuses an existing --out (a file, or a non-empty folder) unless
    given --overwrite; `reproduce` resumes its --out instead. Errors are one
    line (exit 1; 70 for a bug); --debug shows the traceback.
    """


@main.command()
@click.option("--prompts", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="jsonl/parquet prompt set. Default: the embedded one.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Feature file to write (.safetensors).")
@OVERWRITE
@_apply(MODEL_OPTIONS + FEATURIZE_OPTIONS)
def featurize(prompts, out, overwrite, model_path, sae_path, layer, gguf_file, device, trust_remote_code, pooling, featurize_batch_size, max_length, cache_dir, prompt_field):
    """Compute one pooled sparse SAE code per prompt."""
    _check_model_args(model_path, sae_path, gguf_file)
    from saerl_zoo.data import load_rows
    from saerl_zoo.featurizer import featurize as run
    from saerl_zoo.storage import check_output, save_csr

    check_output(out, overwrite=overwrite)

    rows = load_rows(_prompts_path(prompts), prompt_field)
    model, tokenizer, sae = _load_model_and_sae(model_path, sae_path, gguf_file, device, trust_remote_code)
    X, info = run(
        [r[prompt_field] for r in rows], model, tokenizer, sae, layer=layer, pooling=pooling,
        batch_size=featurize_batch_size, max_length=max_length, cache_dir=cache_dir, return_info=True,
    )
    save_csr(out, X, {"pooling": pooling, "layer": str(layer), "max_length": str(info.max_length), "truncated": str(info.n_truncated)})
    click.echo(f"wrote {X.shape[0]} × {X.shape[1]} features ({X.nnz / X.shape[0]:.1f} active per prompt) to {out}")
    _warn(info.truncation_note())


@main.command("fit-probe")
@click.option("--features", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True, help="Output of `featurize`.")
@click.option("--prompts", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="The prompt set the features were made from (rows carry ids). Default: the embedded one.")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="jsonl of {id, <label-field>} for a labelled subset; quality rows with a `defect` field (a kind or null) add a held-out AUROC per kind.")
@click.option("--kind", type=click.Choice(["difficulty", "quality"]), required=True)
@click.option("--label-field", help="Label field. Default: pass_rate (difficulty) or label (quality).")
@click.option("--pass-rate/--raw-difficulty", default=True, show_default=True, help="Difficulty labels are pass rates (probe predicts 1 - pass rate) or already difficulties.")
@click.option("--estimator", type=click.Choice(["logistic", "ridge"]), default="logistic", show_default=True, help="Quality probe: logistic on 0/1 labels or ridge on a score.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder for probe.safetensors + probe_config.json.")
@OVERWRITE
def fit_probe(features, prompts, labels, kind, label_field, pass_rate, estimator, seed, out, overwrite):
    """Fit a difficulty or quality probe on a labelled subset and report held-out metrics."""
    from saerl_zoo.probe_files import fit_probe_files
    from saerl_zoo.storage import check_output

    check_output(out, overwrite=overwrite)
    probe = fit_probe_files(features, _prompts_path(prompts), labels, kind, label_field=label_field, pass_rate=pass_rate,
                            estimator=estimator, seed=seed)
    probe.save(out)
    click.echo(f"{kind} probe on {probe.config.n_train + probe.config.n_heldout} labels, held-out {json.dumps(probe.metrics)} → {out}")
    _warn(probe.convergence_note())


@main.command("cluster")
@click.option("--features", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True, help="Output of `featurize`.")
@click.option("--k", "n_clusters", type=int, help="Number of clusters. Default: sqrt(n/2), between 2 and 100.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder for the centres and labels.")
@OVERWRITE
def cluster_cmd(features, n_clusters, seed, out, overwrite):
    """k-means clusters in SAE feature space (the diversity property)."""
    from saerl_zoo.diversity import cluster
    from saerl_zoo.storage import check_output, load_csr

    check_output(out, overwrite=overwrite)

    result = cluster(load_csr(features), n_clusters, seed=seed)
    result.save(out)
    sizes = result.config.sizes
    click.echo(f"{len(sizes)} clusters, sizes {min(sizes)}..{max(sizes)} → {out}")


@main.command()
@click.option("--prompts", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="jsonl/parquet prompt set. Default: the embedded one.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder for the ordered dataset, curriculum and report.")
@OVERWRITE
@_apply(MODEL_OPTIONS + FEATURIZE_OPTIONS)
@click.option("--difficulty-probe", type=click.Path(exists=True, file_okay=False, path_type=Path), help="Default: the embedded probe when using the embedded model.")
@click.option("--quality-probe", type=click.Path(exists=True, file_okay=False, path_type=Path), help="Default: the embedded probe when using the embedded model.")
@click.option("--no-difficulty", is_flag=True, help="Ablation: random order inside clusters.")
@click.option("--no-quality", is_flag=True, help="Ablation: keep every prompt.")
@click.option("--no-clusters", is_flag=True, help="Ablation: one cluster (a pure easy → hard curriculum).")
@click.option("--k", "n_clusters", type=int, help="Number of clusters. Default: sqrt(n/2), between 2 and 100.")
@click.option("--quality-threshold", type=float, help="Keep prompts scoring at least this (default 0.5 for a logistic probe).")
@click.option("--keep-fraction", type=float, help="Keep this best fraction by quality instead of a threshold.")
@click.option("--train-batch-size", "batch_size", type=int, default=8, show_default=True, help="Prompts per training step (global batch).")
@click.option("--mixing", type=click.FloatRange(0, 1), default=0.1, show_default=True, help="Share of each batch exchanged with its neighbour (0 = pure clusters, 1 = shuffled).")
@click.option("--stages", type=click.IntRange(min=1), help="Difficulty stages served easiest first (quantiles of predicted difficulty; 1 = unpaced). Default: 5 with a difficulty probe, else 1.")
@click.option("--num-steps", type=click.IntRange(min=1), help="Training steps of the run: pace by a competence schedule instead of stages, so the run sweeps easy → hard within these steps.")
@click.option("--competence", type=click.Choice(["linear", "sqrt"]), default="linear", show_default=True, help="With --num-steps: how the easiest fraction allowed grows to 1.")
@click.option("--initial-competence", type=click.FloatRange(0, 1), default=0.01, show_default=True, help="With --num-steps: the fraction allowed at the first step.")
@click.option("--ground-truth", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="jsonl of {id, level}: adds true-level figures to the report (never used to order). Default: the embedded one with the embedded prompts.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["jsonl", "parquet"]), default="jsonl", show_default=True)
def curriculum(prompts, out, overwrite, model_path, sae_path, layer, gguf_file, device, trust_remote_code, pooling, featurize_batch_size, max_length, cache_dir, prompt_field,
               difficulty_probe, quality_probe, no_difficulty, no_quality, no_clusters, n_clusters, quality_threshold, keep_fraction, batch_size, mixing,
               stages, num_steps, competence, initial_competence, ground_truth, seed, fmt):
    """Order a prompt set into a SaeRL curriculum: ordered dataset + report (table and plot)."""
    _check_model_args(model_path, sae_path, gguf_file)
    from saerl_zoo.curriculum import build_curriculum, true_levels, write_ordered_dataset, write_report
    from saerl_zoo.data import load_rows
    from saerl_zoo.difficulty import DifficultyProbe
    from saerl_zoo.embedded import default_path
    from saerl_zoo.featurizer import FeaturizeInfo
    from saerl_zoo.quality import QualityProbe
    from saerl_zoo.storage import check_output

    check_output(out, overwrite=overwrite)
    rows = load_rows(_prompts_path(prompts), prompt_field)
    model, tokenizer, sae = _load_model_and_sae(model_path, sae_path, gguf_file, device, trust_remote_code)
    if model_path is None:
        difficulty_probe = difficulty_probe or default_path("difficulty_probe")
        quality_probe = quality_probe or default_path("quality_probe")
    result = build_curriculum(
        [r[prompt_field] for r in rows], model, tokenizer, sae,
        layer=layer, pooling=pooling, featurize_batch_size=featurize_batch_size, max_length=max_length,
        cache_dir=cache_dir or _default_feature_cache(),
        difficulty_probe=None if no_difficulty or difficulty_probe is None else DifficultyProbe.load(difficulty_probe),
        quality_probe=None if no_quality or quality_probe is None else QualityProbe.load(quality_probe),
        use_clusters=not no_clusters, n_clusters=n_clusters, quality_threshold=quality_threshold, keep_fraction=keep_fraction,
        batch_size=batch_size, mixing=mixing, seed=seed,
        stages=stages, num_steps=num_steps, competence=competence, initial_competence=initial_competence,
        provenance={"prompts": str(_prompts_path(prompts)), "difficulty_probe_path": str(difficulty_probe), "quality_probe_path": str(quality_probe)},
    )
    result.save(out / "curriculum")
    ordered = write_ordered_dataset(rows, result, out / f"ordered.{fmt}")
    ground_truth = ground_truth or (default_path("ground_truth.jsonl") if prompts is None else None)
    report = write_report(result, out, true_levels(rows, ground_truth) if ground_truth else None)
    click.echo(f"kept {int(result.keep.sum())} of {len(result)} prompts → {ordered}")
    _warn(FeaturizeInfo(**result.provenance["featurize"]).truncation_note())
    click.echo(f"report: {report['markdown']}, plot: {report['plot']}")


PASS_RATE_ONLY = ("model_path", "gguf_file", "device", "trust_remote_code", "k", "verifier", "backend", "chat_template",
                  "temperature", "max_new_tokens", "batch_size", "shard_size")
QUALITY_ONLY = ("human_labels",)


@main.command()
@click.option("--kind", type=click.Choice(["pass-rate", "quality"]), required=True,
              help="pass-rate: k rollouts per prompt scored by a verifier (difficulty labels); quality: quality labels.")
@click.option("--prompts", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="jsonl/parquet prompt set with ids. Default: the embedded one.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Labels to write (.jsonl, what fit-probe --labels reads).")
@OVERWRITE
@click.option("--fraction", type=float, help="Label this share of the prompts, a seeded subset. Default: 0.1 (the paper labels at most 10%).")
@click.option("--count", type=int, help="Label this many prompts instead of a share.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the subset (and the rollouts).")
@click.option("--prompt-field", default="prompt", show_default=True, help="Field of each row holding the prompt text.")
@_apply(LM_OPTIONS)
@click.option("--k", type=click.IntRange(min=1), default=8, show_default=True, help="pass-rate: rollouts per prompt.")
@click.option("--verifier", default="math", show_default=True,
              help="pass-rate: math (math-verify against the row's answer), task (the embedded tasks' scorer), or module:function "
                   "of your own, called as fn(completion, row) and returning a score in [0, 1] (the current folder is searched).")
@click.option("--backend", type=click.Choice(["auto", "transformers", "vllm"]), default="auto", show_default=True,
              help="pass-rate: auto uses vLLM when it is installed and --device is CUDA, else transformers.")
@click.option("--chat-template/--no-chat-template", default=None,
              help="pass-rate: wrap each prompt in the model's chat template as a user turn. Default: when the model has one.")
@click.option("--temperature", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="pass-rate: sampling temperature (exact softmax, no top-k/top-p; 0 = greedy).")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=512, show_default=True,
              help="pass-rate: tokens per rollout; each prompt plus these must fit the model's context.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="pass-rate: completions per generate call (transformers).")
@click.option("--shard-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="pass-rate: prompts per resumable shard; a killed run, rerun as it was, skips finished shards.")
@click.option("--human-labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="quality: jsonl of {id, label} from people.")
@click.pass_context
def label(ctx, kind, prompts, out, overwrite, fraction, count, seed, prompt_field, model_path, gguf_file, device, trust_remote_code,
          k, verifier, backend, chat_template, temperature, max_new_tokens, batch_size, shard_size, human_labels):
    """Make the labels the probes learn from, for a seeded subset of the prompts (10% unless --fraction/--count).

    pass-rate: each prompt's pass rate over --k rollouts of --model, scored by
    --verifier; resumable (rerun the same command after a kill). quality: half
    of the subset kept as good, half broken by synthetic defects (truncated,
    off-topic, near-duplicate, corrupted numbers), plus any --human-labels;
    the output is both the prompt set and the labels for fit-probe.
    """
    from click.core import ParameterSource

    foreign = PASS_RATE_ONLY if kind == "quality" else QUALITY_ONLY
    given = [p for p in ctx.command.params if p.name in foreign and ctx.get_parameter_source(p.name) != ParameterSource.DEFAULT]
    if given:
        raise click.UsageError(f"{'/'.join(given[0].opts + given[0].secondary_opts)} does not apply to --kind {kind}")
    if kind == "quality":
        from saerl_zoo.quality_labels import label_quality

        summary = label_quality(_prompts_path(prompts), out, fraction=fraction, count=count, seed=seed, prompt_field=prompt_field,
                                human_labels=human_labels, overwrite=overwrite)
        note = summary.pop("note", None)
        click.echo(json.dumps(summary, default=str))
        _warn(note)
        return
    from saerl_zoo.embedded import default_path
    from saerl_zoo.pass_rates import label_pass_rates

    s = label_pass_rates(
        default_path("model") if model_path is None else model_path, _prompts_path(prompts), out, fraction=fraction, count=count,
        k=k, verifier=verifier, backend=backend, chat_template=chat_template, temperature=temperature, max_new_tokens=max_new_tokens,
        seed=seed, shard_size=shard_size, batch_size=batch_size, prompt_field=prompt_field, device=device, gguf_file=gguf_file,
        trust_remote_code=trust_remote_code, overwrite=overwrite,
    )
    click.echo(f"labelled {s['labelled']} of {s['prompts']} prompts, {s['k']} rollouts each ({s['verifier']} verifier, {s['backend']}, "
               f"chat template {'on' if s['chat_template'] else 'off'}): mean pass rate {s['mean_pass_rate']:.3f}; "
               f"{s['rollouts_generated']} rollouts in {s['seconds']:g} s ({s['shards_resumed']} of {s['shards']} shards resumed), "
               f"{s['rollouts_cut']} cut at --max-new-tokens → {out}")
    _warn(s["note"])


@main.command("train-sae")
@click.option("--model", "model_path", required=True, help="HF causal LM (folder or Hub id) whose activations the SAE reads.")
@click.option("--prompts", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True, help="jsonl/parquet prompt set to train on.")
@click.option("--prompt-field", default="prompt", show_default=True, help="Field of each row holding the prompt text.")
@click.option("--corpus", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="More text to train on: jsonl/parquet (--text-field) or .txt (one text per line).")
@click.option("--text-field", default="text", show_default=True, help="Field of each --corpus row holding the text.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder for the SAE, sae_metrics.json, zoo_entry.yaml and README.md.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out folder whole (without it, a non-empty --out is refused).")
@click.option("--hook", help="Module to train on (model.layers.6, blocks.6.hook_resid_post, ...). Default: the middle decoder block's output.")
@click.option("--arch", type=click.Choice(["topk", "batchtopk"]), default="topk", show_default=True)
@click.option("--k", type=click.IntRange(min=1), default=32, show_default=True, help="Active latents per token.")
@click.option("--d-sae", type=click.IntRange(min=2), help="Latents. Default: 8 x the model's width.")
@click.option("--training-tokens", type=click.IntRange(min=1), required=True, help="Token budget (refused below 100 per latent or 100 steps).")
@click.option("--context", type=click.IntRange(min=2), default=256, show_default=True, help="Tokens per text (one text per row).")
@click.option("--heldout-fraction", type=float, default=0.1, show_default=True, help="Share of prompts (and corpus texts) held out for the metrics.")
@click.option("--batch-tokens", type=click.IntRange(min=1), default=4096, show_default=True, help="Tokens per training step.")
@click.option("--lr", type=float, default=2e-4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--model-id", help="Hub id recorded as the host model (default: --model); give it when --model is a local copy.")
@click.option("--outlier-norm-ratio", type=OutlierRatio(), default="auto", show_default=True,
              help="Attention sinks: tokens above this many times their text's median norm are dropped by every reader "
                   "(and skipped in training when they sit at the first token). auto: 10 if the model has any; none: keep all.")
@click.option("--b-dec-init", type=click.Choice(["geometric-median", "mean", "zero"]), default="geometric-median", show_default=True,
              help="Where the decoder bias starts: the geometric median (robust to a few high-norm tokens) or the mean "
                   "of 256 training texts' activations, or zero (sae-lens's start).")
@click.option("--gguf-file", help="Load --model from this GGUF file inside the folder.")
@click.option("--trust-remote-code", is_flag=True, help="Run the model repo's own code (off unless you ask).")
def train_sae_cmd(model_path, prompts, prompt_field, corpus, text_field, out, overwrite, hook, arch, k, d_sae, training_tokens, context,
              heldout_fraction, batch_tokens, lr, seed, device, model_id, outlier_norm_ratio, b_dec_init, gguf_file, trust_remote_code):
    """Train a TopK SAE (sae-lens) on your prompts into a zoo-ready folder, with held-out metrics and a model card."""
    from saerl_zoo.data import load_rows, read_texts
    from saerl_zoo.sae_folder import ENTRY_NAME, train_sae_folder

    result = train_sae_folder(
        model_path, [row[prompt_field] for row in load_rows(prompts, prompt_field)], out, training_tokens=training_tokens,
        corpus=read_texts(corpus, text_field) if corpus is not None else (), hook=hook, arch=arch, k=k, d_sae=d_sae,
        context=context, heldout_fraction=heldout_fraction, batch_tokens=batch_tokens, lr=lr, seed=seed, device=device,
        model_id=model_id, outlier_norm_ratio=outlier_norm_ratio, b_dec_init=b_dec_init, gguf_file=gguf_file,
        trust_remote_code=trust_remote_code, overwrite=overwrite, echo=click.echo,
    )
    m = result.metrics
    click.echo(f"wrote {out}: L0 {m['l0']:.1f}, explained variance {m['explained_variance']:.3f}, dead fraction "
               f"{m['dead_fraction']:.3f} on {m['n_tokens']:,} held-out tokens")
    click.echo(result.budget)
    for note in result.warnings:
        _warn(note)
    click.echo(f"publish: saerl-zoo publish {out} --repo-id ORG/NAME --entry {out / ENTRY_NAME} --dry-run")


def _csv(kind):
    def parse(ctx, param, value):
        if value is None:
            return None
        try:
            return tuple(kind(v) for v in value.split(",") if v.strip())
        except ValueError as err:
            raise click.BadParameter(str(err)) from err

    return parse


def _arm_seeds(ctx, param, value):
    if value is None:
        return None
    try:
        pairs = [item.split("=") for item in value.split(",") if item.strip()]
        return {arm.strip(): int(count) for arm, count in pairs}
    except ValueError:
        raise click.BadParameter(f"expected arm=count pairs, e.g. vanilla=5,saerl=5; got {value!r}") from None


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/reproduce"), show_default=True,
              help="Job folder for runs, checkpoints and the report: an existing one is resumed (never refused or wiped), "
                   "so rerunning the same command continues where it stopped.")
@click.option("--quick", is_flag=True, help="Every arm, 2 seeds (vanilla 3), a few steps: a smoke test of the whole pipeline (minutes).")
@click.option("--data", type=click.Path(exists=True, file_okay=False), help="Folder with scripts/build_default.py's layout "
              "(pool, labels, ground truth, model, sae, optionally eval_prompts/eval_truth.jsonl). Default: the embedded default.")
@click.option("--arms", callback=_csv(str), help="Comma-separated arms (default: the issue-14 set; 'vanilla' is required).")
@click.option("--seeds", type=int, help="Seeds per arm (runs use seeds 0..N-1). Default: 3.")
@click.option("--arm-seeds", callback=_arm_seeds, help="Seed counts for single arms, e.g. vanilla=5,saerl=5 (the default).")
@click.option("--steps", "num_steps", type=int, help="GRPO steps per run.")
@click.option("--prompts-per-step", type=int)
@click.option("--group-size", type=int)
@click.option("--lr", type=float)
@click.option("--eval-every", type=int)
@click.option("--n-eval", type=int, help="Held-out clean problems in all, equal per family x level. Default: the data folder's whole set.")
@click.option("--max-new-tokens", type=int, help="Only for a data folder that does not record its completion length; "
              "a value other than the folder's is refused.")
@click.option("--policy", help="Train this model instead of the data folder's policy (scorer transfer: the folder's model still scores).")
@click.option("--device", help="Device for the runs, e.g. cuda.")
@click.option("--jobs", type=int, help="Runs in parallel (processes, one torch thread each).")
def reproduce(out, quick, **overrides):
    """SaeRL vs vanilla GRPO, ablations and baselines; writes report.md/json + plots to --out.

    Arms (saerl_zoo.reproduce.ARMS): vanilla, saerl (paced), each component
    alone, saerl unpaced, the reverse (hard → easy) control, the
    true-level oracle, random filtering of the same count, online feedback,
    an online pass-rate filter (DAPO oversampling), and vanilla / saerl with
    Dr. GRPO; opt-in: saerl_competence, saerl without each component,
    saerl on raw activations. Interrupted runs resume from checkpoints.
    """
    from saerl_zoo.reproduce import QUICK, ReproConfig, run_reproduction

    given = {k: v for k, v in overrides.items() if v is not None}
    config = ReproConfig(out_dir=str(out), **{**(QUICK if quick else {}), **given})
    flags = {"num_steps": "steps"}

    def shown(value):
        if isinstance(value, dict):
            return ",".join(f"{k}={v}" for k, v in value.items())
        return ",".join(map(str, value)) if isinstance(value, tuple) else value

    command = " ".join(["saerl-zoo reproduce", f"--out {out}", *(["--quick"] if quick else []),
                        *(f"--{flags.get(k, k).replace('_', '-')} {shown(v)}" for k, v in given.items())])
    report = run_reproduction(config, command=command)
    arms = report["arms"]
    click.echo(f"SaeRL {arms['saerl']['final_mean']:.3f} vs vanilla {arms['vanilla']['final_mean']:.3f} final accuracy"
               if "saerl" in arms else f"vanilla final accuracy {arms['vanilla']['final_mean']:.3f}")
    click.echo(f"report: {out / 'report.md'}")


@main.command()
@click.option("--model", "model_path", required=True, help="The policy: HF causal LM (folder or Hub id).")
@click.option("--prompts", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="jsonl/parquet prompt set with ids (and an answer field for the verifier).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for every stage's output; rerun the same command to resume (finished stages are skipped).")
@click.option("--model-id", help="Hub id to look published SAEs up by, when --model is a local folder.")
@_apply(LM_OPTIONS[1:])
@click.option("--prompt-field", default="prompt", show_default=True, help="Field of each row holding the prompt text.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--sae", default="auto", show_default=True,
              help="auto: a published SAE on this model or its base/instruct twin (see `find`), else train one; train: always "
                   "train; or any SAE name or folder load_sae reads.")
@click.option("--sae-hook", help="Hook point for the SAE (train-sae's --hook). Default: the middle decoder block.")
@click.option("--sae-training-tokens", type=click.IntRange(min=1), default=2_000_000, show_default=True, help="train-sae's token budget.")
@click.option("--sae-context", type=click.IntRange(min=2), default=256, show_default=True, help="train-sae's tokens per text.")
@click.option("--sae-d-sae", type=click.IntRange(min=1), help="train-sae's --d-sae (default 8 x d_model).")
@click.option("--sae-k", type=click.IntRange(min=1), help="train-sae's --k (active latents per token).")
@click.option("--sae-batch-tokens", type=click.IntRange(min=1), help="train-sae's --batch-tokens.")
@click.option("--sae-outlier-norm-ratio", type=OutlierRatio(), default="auto", show_default=True,
              help="train-sae's --outlier-norm-ratio (attention sinks).")
@click.option("--corpus", type=click.Path(exists=True, dir_okay=False), help="Extra text (jsonl with text, or .txt) to train the SAE on.")
@click.option("--fraction", type=float, help="Share of the prompts labelled with pass rates (default 0.1).")
@click.option("--count", type=int, help="Number of prompts labelled with pass rates, instead of a share.")
@click.option("--k", type=click.IntRange(min=1), default=8, show_default=True, help="Rollouts per labelled prompt.")
@click.option("--verifier", default="math", show_default=True, help="math, task, or module:function (see `label --help`).")
@click.option("--temperature", type=click.FloatRange(min=0), default=1.0, show_default=True)
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--chat-template/--no-chat-template", default=None, help="Wrap prompts in the model's chat template when labelling. Default: when it has one.")
@click.option("--backend", type=click.Choice(["auto", "transformers", "vllm"]), default="auto", show_default=True)
@click.option("--quality-count", type=int, help="Prompts sampled for synthetic quality labels (default 10%).")
@click.option("--human-labels", type=click.Path(exists=True, dir_okay=False), help="jsonl of {id, label} quality labels from people, added to the synthetic ones.")
@click.option("--train-batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Prompts per RL step the curriculum is cut for.")
@click.option("--stages", type=click.IntRange(min=1), help="Difficulty stages (see `curriculum --help`).")
@click.option("--num-steps", type=click.IntRange(min=1), help="Pace by competence over this many RL steps (see `curriculum --help`).")
@click.option("--max-length", type=int, default=512, show_default=True, help="Tokens of each prompt the SAE reads.")
def prepare(model_path, prompts, out, model_id, gguf_file, device, trust_remote_code, prompt_field, seed, sae, sae_hook,
            sae_training_tokens, sae_context, sae_d_sae, sae_k, sae_batch_tokens, sae_outlier_norm_ratio, corpus, fraction, count, k, verifier, temperature, max_new_tokens, chat_template,
            backend, quality_count, human_labels, train_batch_size, stages, num_steps, max_length):
    """Model + prompts → SAE, labels, probes and curriculum, skipping stages already done.

    The same path as the five commands `train-sae` (or `find`), `label --kind
    pass-rate`, `label --kind quality`, `featurize` + `fit-probe`, and
    `curriculum`; prepare.json in --out records each stage's settings and time.
    """
    from saerl_zoo.prepare import PrepareConfig, prepare as run

    config = PrepareConfig(
        model=model_path, prompts=str(prompts), out=str(out), model_id=model_id, gguf_file=gguf_file, device=device,
        trust_remote_code=trust_remote_code, prompt_field=prompt_field, seed=seed, sae=sae, sae_hook=sae_hook,
        sae_training_tokens=sae_training_tokens, sae_context=sae_context, sae_d_sae=sae_d_sae, sae_k=sae_k,
        sae_batch_tokens=sae_batch_tokens, sae_outlier_norm_ratio=sae_outlier_norm_ratio, corpus=corpus, label_fraction=fraction,
        label_count=count, k=k, verifier=verifier, temperature=temperature, max_new_tokens=max_new_tokens,
        chat_template=chat_template, backend=backend, quality_count=quality_count, human_labels=human_labels,
        train_batch_size=train_batch_size, stages=stages, num_steps=num_steps, max_length=max_length,
    )
    run(config, echo=click.echo)
    click.echo(f"curriculum: {out / 'curriculum' / 'ordered.jsonl'}; stages and timings: {out / 'prepare.json'}")


@main.command()
@click.argument("name")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write. Default: $SAERL_ZOO_CACHE/packaged_models/NAME (reused once written).")
def materialize(name, out):
    """Convert a pip-installed GGUF model NAME (the real-models extra; smollm2-135m-instruct or gemma3-270m, see
    saerl_zoo.packaged_models.PACKAGED_MODELS) to a plain safetensors folder and print its path.

    Every --model option takes the folder, e.g. saerl-zoo prepare --model "$(saerl-zoo materialize smollm2-135m-instruct)".
    """
    from saerl_zoo.packaged_models import materialize as convert

    click.echo(str(convert(name, out)))


def _register_zoo_commands() -> None:
    from saerl_zoo.transfer.cli import COMMANDS as TRANSFER_COMMANDS
    from saerl_zoo.zoo.cli import COMMANDS

    for command in (*COMMANDS, *TRANSFER_COMMANDS):
        main.add_command(command)


_register_zoo_commands()

if __name__ == "__main__":
    main()
