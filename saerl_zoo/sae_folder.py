"""`saerl-zoo train-sae`: an SAE trained on the user's own prompts, written as a zoo-ready folder.

The folder holds the SAE in sae-lens's format (`cfg.json` +
`sae_weights.safetensors`, so `load_sae(folder)` and sae-lens both load it),
`sae_metrics.json` (L0, explained variance and dead fraction on held-out
tokens), `zoo_entry.yaml` (the catalog entry: what `saerl-zoo publish --entry`
and a user catalog read) and `README.md` (the model card from
`cards/templates/sae.md`). The hook is recorded as the Hugging Face module the
SAE was trained on, with its site and the preprocessing it was trained with,
so every reader (`featurize`, `verify`, `transfer`) places the same tensor.

The training itself is :func:`saerl_zoo.sae_training.train_sae` (sae-lens's
runner, offline); this module decides what to train on, refuses a budget too
small to mean anything before anything heavy is loaded, measures the result
and says what the budget bought.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from saerl_zoo.errors import UserError

ARCHS = ("topk", "batchtopk")
EXPANSION = 8  # default d_sae = 8 x d_model: the usual small width of residual-stream SAEs (sae-lens's GPT-2 SAEs: 32x)
DEFAULT_K = 32
DEFAULT_BATCH_TOKENS = 4096  # sae-lens's default train_batch_size_tokens
STORE_BATCH_PROMPTS, BUFFER_BATCHES = 32, 20  # sae-lens's defaults (its buffer holds BUFFER_BATCHES x row-length tokens)
BUFFER_TRAIN_BATCHES = 4  # ... raised so that it holds at least this many training batches, for mixing
SINK_SAMPLE_ROWS = 64  # training rows measured for attention sinks before training
CENTER_SAMPLE_ROWS = 256  # training rows whose activations' centre (B_DEC_INITS) starts the decoder bias
B_DEC_INITS = ("geometric-median", "mean", "zero")  # where the decoder bias starts: that sample's centre, or sae-lens's zero
DEAD_FEATURE_WINDOW = 50  # steps without firing after which sae-lens counts a latent dead (train_sae's default)
MIN_WINDOWS = 2  # a run must last at least this many dead-feature windows (see check_budget)
MIN_TOKENS_PER_LATENT = 100  # ... and see at least this many tokens per latent
TYPICAL_TOKENS_PER_LATENT = 1000  # the budget note prices this many tokens per latent (see budget_note)
DEAD_WARN = 0.20  # warn above this dead fraction on held-out tokens
EV_WARN = 0.70  # warn below this explained variance on held-out tokens
MAX_METRIC_TOKENS = 65_536  # held-out tokens measured: metrics hold tokens x d_sae codes in memory at once
SAE_FILES = ("cfg.json", "sae_weights.safetensors")
ENTRY_NAME = "zoo_entry.yaml"
METRICS_NAME = "sae_metrics.json"


class BudgetError(UserError):
    """A token budget too small for the SAE to mean anything."""


@dataclasses.dataclass
class TrainedSae:
    """What `train_sae_folder` made: the folder, its held-out metrics and the one-line notes to show."""

    folder: Path
    metrics: dict[str, Any]
    warnings: list[str]
    budget: str


def check_budget(training_tokens: int, d_sae: int, batch_tokens: int, dead_feature_window: int = DEAD_FEATURE_WINDOW) -> None:
    """Refuse a budget too small to be meaningful (`BudgetError`, one line), before any model is loaded.

    Two rules, both needed:

    * at least ``MIN_WINDOWS`` dead-feature windows of steps. A TopK SAE
      revives latents that have not fired for ``dead_feature_window`` steps
      (sae-lens's AuxK loss); before the first window ends no latent can be
      counted dead, so a shorter run never revives one, and a run of two
      windows spends at least half its steps with revival on;
    * at least ``MIN_TOKENS_PER_LATENT`` tokens per latent. Each latent is a
      direction fitted from the tokens it fires on (on average tokens x k /
      d_sae of them). 100 per latent is 24x below the smallest published
      budget we know (~2,400, see `budget_note`); below it a run is a smoke
      test of the pipeline, not a dictionary of the data (at 100 per latent our
      tiny-model runs already leave 20-30% of the latents dead on held-out text).
    """
    if training_tokens < 1 or batch_tokens < 1 or d_sae < 1:
        raise BudgetError("training tokens, batch tokens and d_sae must be positive")
    steps = training_tokens // batch_tokens
    need_steps = MIN_WINDOWS * dead_feature_window
    if steps < need_steps:
        raise BudgetError(
            f"--training-tokens {training_tokens:,} is {steps} steps of {batch_tokens:,} tokens, fewer than {need_steps} "
            f"({MIN_WINDOWS} dead-feature windows of {dead_feature_window} steps): give at least {need_steps * batch_tokens:,} "
            "tokens, or a smaller --batch-tokens")
    need_tokens = MIN_TOKENS_PER_LATENT * d_sae
    if training_tokens < need_tokens:
        raise BudgetError(
            f"--training-tokens {training_tokens:,} is {training_tokens / d_sae:.0f} tokens per latent for {d_sae:,} latents, "
            f"fewer than {MIN_TOKENS_PER_LATENT}: give at least {need_tokens:,} tokens, or a smaller --d-sae")


def budget_note(training_tokens: int, d_sae: int, seconds: float) -> str:
    """What the budget bought, next to published runs, and what a larger one would take at this run's speed.

    Published TopK / sae-lens runs train on thousands of tokens per latent:
    OpenAI's 16M-latent TopK SAE on GPT-4 saw 40B tokens (~2,400 per latent;
    Gao et al. 2024), and sae-lens's GPT-2 small residual SAEs (gpt2-small-res-jb)
    300M tokens for 24,576 latents (~12,000 per latent).
    """
    per_latent = training_tokens / d_sae
    larger = TYPICAL_TOKENS_PER_LATENT * d_sae
    note = (f"budget: {training_tokens:,} tokens = {per_latent:,.0f} per latent ({d_sae:,} latents) in {seconds:.0f} s; "
            "published TopK runs use ~2,400 (OpenAI, 16M latents) to ~12,000 (sae-lens GPT-2 small) per latent")
    if per_latent < TYPICAL_TOKENS_PER_LATENT:
        rate = training_tokens / max(seconds, 1e-9)
        note += (f"; {TYPICAL_TOKENS_PER_LATENT:,} per latent needs --training-tokens {larger:,} "
                 f"(~{_duration(larger / rate)} at this run's {rate:,.0f} tokens/s)")
    return note


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def quality_warnings(metrics: dict[str, Any]) -> list[str]:
    """One line per held-out metric past its threshold.

    * dead fraction above ``DEAD_WARN`` (20%): a fifth of the dictionary never
      fires, so clusters and probes read a smaller code than its width says;
      TopK SAEs trained with the AuxK loss keep dead latents to a few percent.
      (Few held-out tokens also count rare latents as dead: the message says
      how many tokens it was measured on.)
    * explained variance below ``EV_WARN`` (0.7): the code misses more than 30%
      of the activations' variance, so prompts that differ in what it misses
      look alike; residual-stream TopK SAEs reach 0.8-0.9 at k = 32.
    """
    out = []
    if metrics["dead_fraction"] > DEAD_WARN:
        out.append(f"{metrics['dead_fraction']:.0%} of the {metrics['d_sae']:,} latents never fired on the {metrics['n_tokens']:,} "
                   f"held-out tokens (above {DEAD_WARN:.0%}): train on more tokens, or give a smaller --d-sae")
    if metrics["explained_variance"] < EV_WARN:
        out.append(f"explained variance on the held-out tokens is {metrics['explained_variance']:.3f} (below {EV_WARN}): "
                   "train on more tokens, or give a larger --k or --d-sae")
    return out


def split_texts(texts: Sequence[str], heldout_fraction: float, seed: int, what: str) -> tuple[list[str], list[str]]:
    """(train, held-out): a seeded permutation's first round(fraction x n) texts are held out."""
    if not 0 < heldout_fraction < 1:
        raise UserError(f"--heldout-fraction must be between 0 and 1, got {heldout_fraction}")
    n_held = round(heldout_fraction * len(texts))
    if n_held < 1 or n_held >= len(texts):
        raise UserError(f"{len(texts)} {what} cannot be split {heldout_fraction:g} held out: "
                        "each side needs at least one; give more texts or another --heldout-fraction")
    order = np.random.default_rng(seed).permutation(len(texts))
    return [texts[i] for i in order[n_held:]], [texts[i] for i in order[:n_held]]


def metric_rows(rows: list[list[int]], excluded: Sequence[int], max_tokens: int = MAX_METRIC_TOKENS) -> list[list[int]]:
    """The first held-out rows holding at least `max_tokens` real tokens (all rows when they hold fewer).

    `sae_metrics` encodes every token at once (tokens x d_sae floats: 65k tokens
    x 16k latents is 4 GB), so a large held-out set is measured on its first
    rows, in the seeded order of the split; `n_tokens` records how many.
    """
    drop, total = set(excluded), 0
    for i, row in enumerate(rows):
        total += sum(1 for t in row if t not in drop)
        if total >= max_tokens:
            return rows[: i + 1]
    return rows


def trim_padding(rows: list[list[int]], pad_id: int) -> list[list[int]]:
    """Rows cut after their last column that is not all padding.

    One text per row, right-padded to `--context`: when every text is shorter,
    the tail columns are pads only, which sae-lens would run through the model
    and then drop. Cutting them trains on exactly the same tokens at the same
    positions (attention is causal), for less compute.
    """
    width = max((max((i + 1 for i, t in enumerate(row) if t != pad_id), default=0) for row in rows), default=0)
    return [row[: max(width, 1)] for row in rows]


def _site(point: Any) -> str:
    """The zoo's site of a point train-sae can train on: a module's output (sae-lens hooks outputs only)."""
    from saerl_zoo.hooks import HookError
    from saerl_zoo.zoo.formats import sparsify_hook

    if point.read == "output" and not point.spec.center:
        if point.block is not None:
            return "resid_out"
        if point.spec.site in ("mlp_out", "attn_out"):
            return point.spec.site
        site = sparsify_hook(point.module_name)[2]
        if site != "resid_out":
            return site
    raise HookError(f"hook {point.spec.hook}: reads {point.module_name} ({point.read}); train-sae trains on the output of a "
                    "decoder block, its MLP or its attention (e.g. model.layers.L or blocks.L.hook_resid_post)")


def _hook_point(model: Any, hook: str | None) -> Any:
    """The point to train on: `hook` through the one hook resolver, or the output of the middle decoder block."""
    from saerl_zoo.hooks import bind, decoder_layers, parse_hook

    if hook is None:
        blocks = decoder_layers(model)
        name = next(n for n, m in model.named_modules() if m is blocks[len(blocks) // 2])
        hook = name
    return bind(parse_hook(hook), model)


def _model_config(model: str, gguf_file: str | None, trust_remote_code: bool) -> Any:
    """The text config (width, depth) without loading weights: enough to size and check the budget."""
    from transformers import AutoConfig

    from saerl_zoo.models import ModelLoadError

    try:
        config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code,
                                            **({"gguf_file": gguf_file} if gguf_file else {}))
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"model {model}: its config does not load: {err}") from err
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _entry_name(out: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", out.resolve().name).strip("-.") or "sae"
    return name if name[0].isalnum() else f"sae-{name}"


def train_sae_folder(
    model: str,
    prompts: Sequence[str],
    out: str | Path,
    *,
    training_tokens: int,
    corpus: Sequence[str] = (),
    hook: str | None = None,
    arch: str = "topk",
    k: int = DEFAULT_K,
    d_sae: int | None = None,
    context: int = 256,
    heldout_fraction: float = 0.1,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    lr: float = 2e-4,
    store_batch_prompts: int = STORE_BATCH_PROMPTS,
    buffer_batches: int = BUFFER_BATCHES,
    seed: int = 0,
    device: str = "cpu",
    model_id: str | None = None,
    outlier_norm_ratio: float | str | None = "auto",
    b_dec_init: str = "geometric-median",
    gguf_file: str | None = None,
    trust_remote_code: bool = False,
    overwrite: bool = False,
    echo: Callable[[str], Any] = print,
) -> TrainedSae:
    """Train an `arch` SAE on `prompts` (+ `corpus`) at `hook` of `model` and write the zoo-ready folder `out`.

    Prompts and corpus texts are each split train / held-out by a seeded
    permutation (`heldout_fraction`); training reads one text per row of
    `context` tokens, special tokens and padding excluded (as `featurize`
    reads prompts). `hook` is any name the hook resolver reads (a module path
    such as `model.layers.6`, or `blocks.6.hook_resid_post`); by default the
    output of the middle decoder block. `d_sae` defaults to 8 x d_model.
    `model_id` is recorded as the host model (default: `model`); give the Hub
    id when `model` is a local copy. `outlier_norm_ratio` defines attention
    sinks (tokens above this many times their text's median norm; "auto":
    `SINK_NORM_RATIO` if a sample of the training rows has any, None: never
    drop). One SAE-sized sink per text would dominate the loss, so the ratio is
    recorded with the SAE (every reader drops those tokens, and the held-out
    metrics drop them too), and when the sinks sit at every row's first token,
    as in a model without BOS, training skips that position; sae-lens's runner
    cannot drop tokens by norm, so sinks elsewhere are trained on and named in
    the warnings. `b_dec_init` starts the decoder bias at the mean or the
    geometric median of a sample of training activations (see
    `sae_training.train_sae`), or with "zero" where sae-lens starts it. With `overwrite` an existing `out` is
    replaced whole: an SAE folder is one artifact, and a file left from another
    run must not sit next to the new weights. sae-lens's activation buffer holds
    `buffer_batches` x `store_batch_prompts` rows (more rows shuffle better
    and take more memory). A refused budget (`check_budget`) or output is
    refused before the model loads; the folder appears whole or not at all.
    """
    from saerl_zoo.storage import check_output

    out = Path(out)
    check_output(out, overwrite=overwrite)
    if arch not in ARCHS:
        raise UserError(f"--arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    if context < 2:
        raise UserError(f"--context must be at least 2 tokens, got {context}")
    if outlier_norm_ratio not in (None, "auto") and (isinstance(outlier_norm_ratio, (bool, str)) or not outlier_norm_ratio > 1):
        raise UserError(f"--outlier-norm-ratio must be 'auto', 'none' or a number above 1, got {outlier_norm_ratio!r}")
    if b_dec_init not in B_DEC_INITS:
        raise UserError(f"--b-dec-init must be one of {', '.join(B_DEC_INITS)}, got {b_dec_init!r}")
    config = _model_config(model, gguf_file, trust_remote_code)
    d_in = int(config.hidden_size)
    d_sae = d_sae or EXPANSION * d_in
    if not 0 < k < d_sae:
        raise UserError(f"--k must be between 1 and d_sae - 1 ({d_sae - 1}), got {k}")
    check_budget(training_tokens, d_sae, batch_tokens)
    train, heldout = split_texts(list(prompts), heldout_fraction, seed, "prompts")
    if corpus:
        more_train, more_heldout = split_texts(list(corpus), heldout_fraction, seed, "corpus texts")
        train, heldout = train + more_train, heldout + more_heldout

    from saerl_zoo.models import load_model, special_token_ids
    from saerl_zoo.preprocessing import record_preprocessing
    from saerl_zoo.sae_training import geometric_median, sae_sequences, site_activations, train_sae
    from saerl_zoo.storage import atomic_folder, write_json

    lm, tokenizer = load_model(model, device=device, gguf_file=gguf_file, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    point = _hook_point(lm, hook)
    site = _site(point)
    excluded = sorted(special_token_ids(tokenizer) | {tokenizer.pad_token_id})
    rows = trim_padding(sae_sequences(tokenizer, train, context), tokenizer.pad_token_id)
    real = sum(1 for row in rows for t in row if t not in excluded)
    # prompts come first in `rows`, then corpus texts: the samples are drawn from all of them
    order = np.random.default_rng(seed).permutation(len(rows))
    ratio, sinks = _attention_sinks(outlier_norm_ratio, lm, point, [rows[i] for i in sorted(order[:SINK_SAMPLE_ROWS])],
                                    tokenizer.pad_token_id, tuple(excluded), echo)
    skip = sinks.skip_leading if sinks else 0
    center = None  # where b_dec starts (train_sae)
    if b_dec_init != "zero":
        sample = site_activations(lm, point, [rows[i] for i in sorted(order[:CENTER_SAMPLE_ROWS])], tokenizer.pad_token_id,
                                  tuple(excluded), batch_size=32, outlier_norm_ratio=ratio)
        center = sample.mean(0) if b_dec_init == "mean" else geometric_median(sample)
    echo(f"train-sae: {arch} k={k}, d_sae={d_sae:,} on {point.module_name} ({site}) of {model_id or model}; "
         f"{training_tokens:,} tokens from {len(train):,} texts ({real:,} tokens, {training_tokens / max(real, 1):.1f} passes), "
         f"{len(heldout):,} held out")
    started = time.time()
    sae = train_sae(
        model, rows, hook_name=point.module_name, model=lm, tokenizer=tokenizer, d_in=d_in, d_sae=d_sae, k=k,
        training_tokens=training_tokens, exclude_token_ids=excluded, batch_tokens=batch_tokens, lr=lr, arch=arch,
        dead_feature_window=DEAD_FEATURE_WINDOW, store_batch_size_prompts=store_batch_prompts,
        n_batches_in_buffer=max(buffer_batches, math.ceil(BUFFER_TRAIN_BATCHES * batch_tokens / len(rows[0]))), dataset_label=f"saerl-zoo train-sae: {len(train)} texts",
        device=device, seed=seed, skip_leading=skip, b_dec_init=center,
    )
    seconds = time.time() - started
    meta = sae.cfg.metadata
    meta.model_name = model_id or model
    meta.context_size = context  # rows were cut to the longest text (see trim_padding): positions up to `context` were allowed
    meta.hook_site = site
    meta.hook_layer = point.spec.layer
    meta.seqpos_slice = (None,)  # the skipped first position holds the sinks readers drop by `ratio`: none is cut by position
    record_preprocessing(sae, context_length=context, outlier_norm_ratio=ratio)
    with atomic_folder(out) as tmp:
        sae.save_inference_model(str(tmp))
        saved = _load_and_check(tmp, lm, point, device)
        measured = metric_rows(sae_sequences(tokenizer, heldout, context), excluded)
        acts = site_activations(lm, point, measured, tokenizer.pad_token_id, tuple(excluded), batch_size=32,
                                outlier_norm_ratio=ratio)
        metrics = _metrics(saved, acts, training_tokens, seconds, len(measured))
        warnings = quality_warnings(metrics) + sink_warnings(sinks)
        budget = budget_note(training_tokens, d_sae, seconds)
        entry = _entry(out, tmp, model, model_id or model, point, site, saved, metrics, warnings, train=len(train), context=context,
                       training_tokens=training_tokens, batch_tokens=batch_tokens, lr=lr, seed=seed, corpus=bool(corpus), b_dec_init=b_dec_init,
                       outlier_norm_ratio=ratio, skipped_positions=skip)
        write_json(tmp / METRICS_NAME, metrics)
        _write_entry_and_card(tmp, entry)
    return TrainedSae(out, metrics, warnings, budget)


def _attention_sinks(setting: float | str | None, lm: Any, point: Any, rows: list[list[int]], pad_id: int,
                     excluded: tuple[int, ...], echo: Callable[[str], Any]) -> tuple[float | None, Any]:
    """The sink ratio to record (None: keep every token) and the sinks measured on `rows`, a sample of the training rows."""
    from saerl_zoo.sae_training import SINK_NORM_RATIO, find_attention_sinks

    if setting is None:
        return None, None
    ratio = SINK_NORM_RATIO if setting == "auto" else float(setting)
    sinks = find_attention_sinks(lm, point, rows, pad_id, excluded, ratio)
    if not sinks.found:
        return (None if setting == "auto" else ratio), sinks
    echo(f"train-sae: attention sinks (norm > {ratio:g}x their text's median) at the first token of {sinks.at_first} and at "
         f"{sinks.elsewhere} later positions of {sinks.rows} sampled texts; readers drop them"
         + (f", and training skips the first {sinks.skip_leading} position(s)" if sinks.skip_leading else ""))
    return ratio, sinks


def sink_warnings(sinks: Any) -> list[str]:
    """A warning for the sinks training could not skip (sae-lens's runner drops tokens by id and position only)."""
    if sinks is None or not sinks.found:
        return []
    missed = sinks.elsewhere + (0 if sinks.skip_leading else sinks.at_first)
    if not missed:
        return []
    return [f"{missed} of {sinks.tokens:,} sampled training tokens are attention sinks (norm > {sinks.ratio:g}x their text's "
            "median) that training could not skip; they weigh on the reconstruction loss (readers and the metrics drop them)."]


def _load_and_check(folder: Path, model: Any, point: Any, device: str) -> Any:
    """The saved SAE as every reader loads it; its recorded hook must resolve to the point it was trained on."""
    from saerl_zoo.hooks import resolve
    from saerl_zoo.zoo.api import load_sae

    saved = load_sae(folder, device=device)
    placed = resolve(model, saved)
    if (placed.module_name, placed.read) != (point.module_name, point.read):  # a bug: the recorded hook reads another tensor
        raise RuntimeError(f"the saved SAE's hook resolves to {placed.describe()}, not the trained {point.describe()}")
    return saved


def _metrics(sae: Any, acts: Any, training_tokens: int, seconds: float, heldout_texts: int) -> dict[str, Any]:
    from saerl_zoo.zoo.api import sae_metrics

    if len(acts) == 0:
        raise UserError("the held-out texts hold no tokens besides special tokens: give more prompts or a larger --heldout-fraction")
    m = sae_metrics(sae, acts)
    return {**{key: round(v, 6) if isinstance(v, float) else v for key, v in m.items()},
            "heldout_texts": heldout_texts, "training_tokens": training_tokens,
            "tokens_per_latent": round(training_tokens / m["d_sae"], 1), "train_seconds": round(seconds, 1)}


def _entry(out: Path, folder: Path, model: str, model_id: str, point: Any, site: str, sae: Any, metrics: dict[str, Any],
           warnings: list[str], **training: Any) -> dict[str, Any]:
    """The catalog entry of the folder (a `local` source named for it, for a catalog file next to it);
    `_write_entry_and_card` validates it."""
    from saerl_zoo.zoo.hub import hash_folder, sha256_file

    cfg = sae.cfg
    k = {"k": int(cfg.k)} if hasattr(cfg, "k") else {}  # a BatchTopK SAE is saved for inference as JumpReLU (no k)
    tokenizer_json = Path(model).expanduser() / "tokenizer.json"
    name = _entry_name(out)
    where = "prompts and corpus texts" if training.pop("corpus") else "prompts"
    entry = {
        "name": name,
        "kind": "sae",
        "description": (f"{cfg.architecture()} SAE ({f'k={cfg.k}, ' if k else ''}{cfg.d_sae} latents) on {point.module_name} ({site}) of {model_id}, "
                        f"trained with saerl-zoo train-sae on {training['train']} {where}."),
        "model": {"id": model_id},
        "hook": {"module": point.module_name, "site": site, "layer": point.spec.layer},  # _site admits block / MLP / attention outputs only
        "sae": {"architecture": cfg.architecture(), "d_in": int(cfg.d_in), "d_sae": int(cfg.d_sae), **k},
        "source": {"type": "local", "format": "sae-lens", "path": name},
        "files": hash_folder(folder, SAE_FILES),
        "license": "apache-2.0",
        "metrics": {**{key: metrics[key] for key in ("l0", "explained_variance", "dead_fraction", "mse", "n_tokens")},
                    "eval_set": f"{metrics['n_tokens']} held-out tokens of {metrics['heldout_texts']} held-out {where}"},
        "preprocessing": {"context_length": training["context"], "special_tokens": "drop", "normalization_scale": 1.0,
                          **({"outlier_norm_ratio": training["outlier_norm_ratio"]} if training["outlier_norm_ratio"] else {}),
                          **({"tokenizer_sha256": sha256_file(tokenizer_json)} if tokenizer_json.is_file() else {})},
        "training": {"data": f"{training['train']} {where} (one per row)", "tokens": training["training_tokens"],
                     "steps": training["training_tokens"] // training["batch_tokens"], "batch_tokens": training["batch_tokens"],
                     "lr": training["lr"], "b_dec_init": training["b_dec_init"], "seed": training["seed"],
                     "seconds": metrics["train_seconds"],
                     **({"skipped_leading_positions": training["skipped_positions"]} if training["skipped_positions"] else {}),
                     "trainer": f"sae-lens {cfg.metadata.get('sae_lens_training_version', '')} LanguageModelSAETrainingRunner"},
        "limitations": [f"{metrics['tokens_per_latent']:g} training tokens per latent.", *warnings],
        "tags": ["train-sae"],
    }
    return entry


def _write_entry_and_card(folder: Path, entry: dict[str, Any]) -> None:
    """`zoo_entry.yaml` (what `publish --entry` reads) and the model card publishing renders from the same entry."""
    import yaml

    from saerl_zoo.zoo.publishing import render_card, validate_card
    from saerl_zoo.zoo.registry import validate_entry

    (folder / ENTRY_NAME).write_text(yaml.safe_dump(entry, sort_keys=False, width=100))
    card = validate_card(render_card(validate_entry(entry, str(folder / ENTRY_NAME))))
    card.save(str(folder / "README.md"))

