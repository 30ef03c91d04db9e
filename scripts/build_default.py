#!/usr/bin/env python
"""Regenerate the embedded default in ``saerl_zoo/default/``.

The default is a complete, tiny, offline SaeRL setup: a prompt pool with
known structure, a policy LM trained from scratch to be *partly* competent on
it, an SAE on that LM's residual stream, pass-rate and quality labels for
small subsets, and the difficulty / quality probes fitted on them.  Everything
is produced here, deterministically from ``--seed``, on CPU:

    a. pool        prompts.jsonl (id, prompt, answer) + ground_truth.jsonl
    b. tokenizer   byte-level BPE (digits kept single), BOS added on encode
    c. policy LM   tiny Llama trained on clean "prompt answer" texts
    d. labels      pass_rates.jsonl (k rollouts) + quality_labels.jsonl
    e. SAE         sae-lens TopK SAE on block L's output, + sae_metrics.json
    f. probes      difficulty_probe/ + quality_probe/, + build_info.json

The shipped default is the worked-solution test bed of issue 14, and its
policy is an early snapshot of the LM training, chosen by a rule fixed before
any GRPO run (``scripts/testbed_snapshots.py``).  Regenerate it with
(needs the ``build`` extra: reasoning-gym, tokenizers, datasets):

    python scripts/build_default.py --out runs/default --snapshot-every 500 --stop-after lm
    python scripts/testbed_snapshots.py --testbed runs/default --per-cell 12   # chooses step-01000
    rm -rf saerl_zoo/default/model && cp -r runs/default/snapshots/step-01000 saerl_zoo/default/model
    python scripts/build_default.py --reuse-lm                                  # labels, SAE, probes
    python scripts/publish_default.py --update-catalog                          # catalog entries, cards

``--tasks reasoning_gym`` builds the earlier direct-answer default instead.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from saerl_zoo.extras import exit_unless_installed  # noqa: E402
from saerl_zoo.sae_training import block_outputs, sae_sequences, train_sae  # noqa: E402
from saerl_zoo.zoo.api import sae_metrics  # noqa: E402
from saerl_zoo.tasks import (  # noqa: E402
    build_eval_set, build_pool, build_train_set, build_worked_eval_set, build_worked_pool, build_worked_train_set,
    evaluate_against_truth, score,
)

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")  # ids 0, 1, 2
T0 = time.time()


def log(msg: str) -> None:
    print(f"[{time.time() - T0:7.1f}s] {msg}", flush=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------- file helpers


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


def write_json(path: Path, obj: Any, sort_keys: bool = False) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n")


def replace_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Swap a finished folder into place (the old one is removed only after)."""
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final_dir, old)
        os.replace(tmp_dir, final_dir)
        shutil.rmtree(old)
    else:
        os.replace(tmp_dir, final_dir)


def staging_dir(final_dir: Path) -> Path:
    tmp = final_dir.with_name(f".{final_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


# ---------------------------------------------------------------- b. tokenizer


def train_tokenizer(texts: list[str], vocab_size: int, max_len: int = 128):
    """Byte-level BPE with every digit its own token (so numbers are spelled
    digit by digit, which a tiny LM can learn arithmetic on), wrapped as a
    transformers fast tokenizer that prepends BOS like real LMs do."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B:1", special_tokens=[("<bos>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        padding_side="right", model_max_length=max_len,
    )


# ---------------------------------------------------------------- c. policy LM


def make_model(tokenizer, args):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=args.max_len,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(args.seed)
    return LlamaForCausalLM(config)


def encode_examples(tokenizer, texts: list[str]) -> list[list[int]]:
    """BOS + text + EOS token ids (the tokenizer adds BOS itself)."""
    return [ids + [tokenizer.eos_token_id] for ids in tokenizer(texts)["input_ids"]]


def collate(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad a batch; padded positions get label -100 (no loss)."""
    width = max(len(r) for r in rows)
    x = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        x[i, : len(r)] = torch.tensor(r)
    labels = x.masked_fill(x == pad_id, -100)
    return x, labels


def lr_at(step: int, args) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    warmup = max(1, args.lm_steps // 20)
    if step < warmup:
        return args.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, args.lm_steps - warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _lm_settings(args) -> str:
    """What a resumed LM run must share with the interrupted one (as text: torch.load reads it weights-only)."""
    keys = ("seed", "lm_steps", "batch_size", "lr", "hidden", "intermediate", "layers", "heads", "max_len", "vocab_size",
            "n_train", "level_weights", "tasks")
    return json.dumps({k: getattr(args, k) for k in keys}, sort_keys=True)


def train_lm(model, tokenizer, examples: list[list[int]], args, out: Path) -> None:
    """Plain next-token training on "prompt answer" texts (nanoGPT style).

    Every ``--checkpoint-every`` steps the model, optimizer, batch generator and
    running loss go to ``<out>/lm_checkpoint/`` (one atomic folder), so a killed
    build resumes where it stopped with the same batches; with
    ``--snapshot-every`` a loadable policy folder is also kept at
    ``<out>/snapshots/step-NNNNN``, for choosing a starting competence after
    the fact (the cosine schedule still runs over all ``--lm-steps``)."""
    from safetensors.torch import load_model, save_model

    from saerl_zoo.storage import atomic_folder

    gen = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    pad_id = tokenizer.pad_token_id
    checkpoint = out / "lm_checkpoint"
    start, running = 0, None
    if (checkpoint / "state.pt").exists():
        state = torch.load(checkpoint / "state.pt", weights_only=True)
        if state["settings"] != _lm_settings(args):
            sys.exit(f"{checkpoint} is from a run with {state['settings']}, not {_lm_settings(args)}; remove it to start over")
        load_model(model, checkpoint / "model.safetensors")
        opt.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True))
        gen.set_state(state["generator"])
        start, running = state["step"], state["running"]
        log(f"  resuming LM training at step {start} from {checkpoint}")
    model.train()
    for step in range(start, args.lm_steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        idx = torch.randint(len(examples), (args.batch_size,), generator=gen).tolist()
        x, labels = collate([examples[i] for i in idx], pad_id)
        loss = model(input_ids=x, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 250 == 0 or step == args.lm_steps - 1:
            log(f"  lm step {step:5d}/{args.lm_steps}  loss {running:.3f}  lr {lr_at(step, args):.2e}")
        done = step + 1
        if args.snapshot_every and done % args.snapshot_every == 0:
            save_policy(model, tokenizer, out / "snapshots" / f"step-{done:05d}")
        if done % args.checkpoint_every == 0 and done < args.lm_steps:
            with atomic_folder(checkpoint) as tmp:
                save_model(model, str(tmp / "model.safetensors"))
                torch.save(opt.state_dict(), tmp / "optimizer.pt")
                torch.save({"step": done, "settings": _lm_settings(args), "generator": gen.get_state(),
                            "running": running}, tmp / "state.pt")
                tokenizer.save_pretrained(tmp)
    model.eval()


@torch.no_grad()
def complete(model, tokenizer, prompts: list[str], *, k: int = 1, temperature: float = 0.0,
             max_new_tokens: int = 10, batch_size: int = 256, seed: int = 0) -> list[list[str]]:
    """``k`` completions per prompt: greedy if temperature == 0, else plain
    temperature sampling over the full vocabulary.  Prompts are batched in
    order of length (a batch generates until its longest answer ends, and a
    worked solution's length grows with its prompt's), results in input order."""
    torch.manual_seed(seed)
    flat = [p for p in prompts for _ in range(k)]
    order = sorted(range(len(flat)), key=lambda i: len(flat[i]))
    out: list[str] = []
    for start in range(0, len(flat), batch_size):
        batch = [flat[i] for i in order[start : start + batch_size]]
        enc = tokenizer(batch, return_tensors="pt", padding=True, padding_side="left")
        sampling = temperature > 0
        gen = model.generate(
            **enc, max_new_tokens=max_new_tokens, do_sample=sampling,
            temperature=temperature if sampling else None, top_k=0 if sampling else None, top_p=None,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )
        out += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    texts = [""] * len(flat)
    for i, text in zip(order, out):
        texts[i] = text
    return [texts[i * k : (i + 1) * k] for i in range(len(prompts))]


def accuracy_table(model, tokenizer, items: list[dict], truth: list[dict], *, k: int = 1, reduce: str = "mean",
                   **kw) -> dict[str, dict[str, float]]:
    """Per family x level (and per level over all families): the mean score of
    ``k`` completions (``reduce="mean"``), or the share of problems with at least
    one right completion (``reduce="any"``: pass@k)."""
    completions = complete(model, tokenizer, [i["prompt"] for i in items], k=k, **kw)
    return cell_table([[score(c, item["answer"]) for c in comps] for item, comps in zip(items, completions)],
                      truth, reduce=reduce)


def cell_table(scores: list[list[float]], truth: list[dict], *, reduce: str = "mean") -> dict[str, dict[str, float]]:
    """``scores`` (one list per problem) reduced per problem, then averaged per
    family x level and per level over all families ("ALL")."""
    per_problem = {"mean": np.mean, "any": np.max}[reduce]
    cells: dict[tuple[str, int], list[float]] = defaultdict(list)
    for s, t in zip(scores, truth):
        cells[(t["family"], t["level"])].append(float(per_problem(s)))
        cells[("ALL", t["level"])].append(float(per_problem(s)))
    families = list(dict.fromkeys(t["family"] for t in truth))
    levels = sorted({t["level"] for t in truth})
    return {f: {str(lvl): round(float(np.mean(cells[(f, lvl)])), 3) for lvl in levels} for f in [*families, "ALL"]}


def competence(model, tokenizer, items: list[dict], truth: list[dict], *, k: int, max_new_tokens: int,
               seed: int) -> dict[str, dict[str, dict[str, float]]]:
    """Greedy accuracy, sampled accuracy (T=1, ``k`` samples) and pass@k per family x level."""
    sampled = complete(model, tokenizer, [i["prompt"] for i in items], k=k, temperature=1.0,
                       max_new_tokens=max_new_tokens, seed=seed)
    scores = [[score(c, item["answer"]) for c in comps] for item, comps in zip(items, sampled)]
    return {"greedy_accuracy": accuracy_table(model, tokenizer, items, truth, max_new_tokens=max_new_tokens),
            "sampled_accuracy": cell_table(scores, truth), f"pass@{k}": cell_table(scores, truth, reduce="any")}


def print_table(title: str, table: dict[str, dict[str, float]]) -> None:
    log(title)
    levels = list(next(iter(table.values())))
    print(f"    {'family':<26}" + "".join(f"L{lvl:<7}" for lvl in levels))
    for family, row in table.items():
        print(f"    {family:<26}" + "".join(f"{row[lvl]:<8.2f}" for lvl in levels))


# ---------------------------------------------------------------- d. labels


def pass_rates(model, tokenizer, items: list[dict], args) -> list[dict]:
    """Pass rate of the policy on each item: mean score of k sampled rollouts."""
    completions = complete(model, tokenizer, [i["prompt"] for i in items], k=args.k,
                           temperature=1.0, max_new_tokens=args.max_new_tokens, seed=args.seed)
    return [{"id": item["id"], "pass_rate": float(np.mean([score(c, item["answer"]) for c in comps]))}
            for item, comps in zip(items, completions)]


# ---------------------------------------------------------------- e. SAE


# ---------------------------------------------------------------- f. probes


def fit_probes(out: Path, model, tokenizer, sae, items, rates, qlabels, args):
    """Featurize the pool with the library's own featurizer, fit both probes on
    their labelled subsets (targets: 1 - pass rate; quality label), save them."""
    from sklearn.exceptions import ConvergenceWarning

    from saerl_zoo.difficulty import DifficultyProbe
    from saerl_zoo.featurizer import featurize
    from saerl_zoo.quality import QualityProbe

    warnings.filterwarnings("ignore", category=ConvergenceWarning)  # ElasticNetCV's small-alpha end of the path
    sae_info = {"path": "sae", "hook_name": f"model.layers.{args.sae_layer}", "d_sae": args.d_sae, "pooling": "mean"}
    feats = featurize([i["prompt"] for i in items], model, tokenizer, sae, progress=False)
    row = {i["id"]: n for n, i in enumerate(items)}
    d_rows = [row[r["id"]] for r in rates]
    difficulty = DifficultyProbe.fit(feats[d_rows], [1.0 - r["pass_rate"] for r in rates], seed=args.seed, sae=sae_info)
    q_rows = [row[r["id"]] for r in qlabels]
    quality = QualityProbe.fit(feats[q_rows], [r["label"] for r in qlabels], kind="logistic", seed=args.seed, sae=sae_info)
    for name, probe in (("difficulty_probe", difficulty), ("quality_probe", quality)):
        tmp = staging_dir(out / name)
        probe.save(tmp)
        replace_dir(tmp, out / name)
    return difficulty, quality, feats


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "saerl_zoo" / "default")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (results are exact only for the same count; "
                   "the shipped default was built with 1)")
    p.add_argument("--n-pool", type=int, default=2000)
    p.add_argument("--bad-fraction", type=float, default=0.25)
    p.add_argument("--label-fraction", type=float, default=0.10, help="share of the pool with pass rates / quality labels")
    p.add_argument("--n-train", type=int, default=60000, help="clean LM training problems")
    p.add_argument("--n-eval", type=int, default=420, help="held-out problems for the accuracy table")
    p.add_argument("--tasks", choices=["reasoning_gym", "worked"], default="worked",
                   help="task families: reasoning_gym direct answers, or worked solutions (tasks.WORKED_FAMILIES)")
    p.add_argument("--n-eval-per-cell", type=int, default=50, help="worked: held-out problems per family x level")
    p.add_argument("--level-weights", default="3,3,3,3,2,2,2",
                   help="worked: relative share of each level in the LM's training problems")
    p.add_argument("--max-len", type=int, default=160, help="LM context length (tokens)")
    p.add_argument("--vocab-size", type=int, default=384)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--intermediate", type=int, default=384)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--lm-steps", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--checkpoint-every", type=int, default=250, help="LM steps between resumable checkpoints")
    p.add_argument("--snapshot-every", type=int, default=0,
                   help="also keep the policy every N LM steps in <out>/snapshots/ (0: never)")
    p.add_argument("--k", type=int, default=8, help="rollouts per prompt for pass rates")
    p.add_argument("--max-new-tokens", type=int, default=110)
    p.add_argument("--sae-layer", type=int, default=2)
    p.add_argument("--d-sae", type=int, default=1024)
    p.add_argument("--topk", type=int, default=32)
    p.add_argument("--sae-context", type=int, default=48)
    p.add_argument("--sae-tokens", type=int, default=800_000)
    p.add_argument("--sae-batch", type=int, default=1024)
    p.add_argument("--sae-lr", type=float, default=2e-3)
    p.add_argument("--sae-arch", choices=["topk", "batchtopk"], default="topk")
    p.add_argument("--sae-aux", type=float, default=1.0, help="TopK auxiliary (dead-feature) loss coefficient")
    p.add_argument("--sae-dead-window", type=int, default=50, help="steps without firing before the aux loss revives a feature")
    p.add_argument("--reuse-lm", action="store_true", help="load <out>/model instead of retraining tokenizer + LM")
    p.add_argument("--stop-after", choices=["pool", "lm", "labels", "sae", "probes"], default="probes")
    return p.parse_args(argv)


def save_policy(model, tokenizer, final_dir: Path) -> None:
    """safetensors weights + tokenizer, swapped into place in one step.  The
    tokenizer class is recorded as PreTrainedTokenizerFast (not transformers
    5's TokenizersBackend alias) so older transformers load it too, and its
    inputs as ids + mask only: transformers 4.x would add token_type_ids,
    which a Llama's `generate` refuses (TRL passes them on)."""
    tmp = staging_dir(final_dir)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    config = json.loads((tmp / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config["model_input_names"] = ["input_ids", "attention_mask"]
    write_json(tmp / "tokenizer_config.json", config)
    replace_dir(tmp, final_dir)


def task_data(args) -> tuple[list[dict], list[dict], list[str], list[dict], list[dict]]:
    """Pool items + truth, the LM's training texts, and the held-out eval items + truth.

    ``reasoning_gym``: direct answers, pool 15% broken, eval of ``--n-eval``.
    ``worked``: the worked-solution families; the LM trains on "prompt solution"
    texts whose levels follow ``--level-weights``, eval has ``--n-eval-per-cell``
    per family x level, and pool / eval / training texts are disjoint by split.
    """
    if args.tasks == "worked":
        from saerl_zoo.tasks import format_prompt

        items, truth = build_worked_pool(args.n_pool, seed=args.seed, bad_fraction=args.bad_fraction)
        weights = [float(w) for w in args.level_weights.split(",")]
        train = build_worked_train_set(args.n_train, seed=args.seed, level_weights=weights)
        train_texts = [f"{format_prompt(p['question'])} {p['solution']}" for p in train]
        eval_items, eval_truth = build_worked_eval_set(args.n_eval_per_cell, seed=args.seed)
        return items, truth, train_texts, eval_items, eval_truth
    items, truth = build_pool(args.n_pool, seed=args.seed, bad_fraction=args.bad_fraction)
    train_items, _ = build_train_set(args.n_train, seed=args.seed)
    eval_items, eval_truth = build_eval_set(args.n_eval, seed=args.seed)
    return items, truth, [f"{i['prompt']} {i['answer']}" for i in train_items], eval_items, eval_truth


def stage_policy(out: Path, train_texts: list[str], items: list[dict], args):
    """b + c: tokenizer and policy LM (or reuse the saved ones with --reuse-lm)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.reuse_lm and (out / "model" / "model.safetensors").exists():
        log(f"b+c. reusing tokenizer + policy LM from {out / 'model'}")
    else:
        if (out / "lm_checkpoint" / "state.pt").exists():
            log(f"b. tokenizer of the interrupted run in {out / 'lm_checkpoint'}")
            tokenizer = AutoTokenizer.from_pretrained(out / "lm_checkpoint")
        else:
            log(f"b. tokenizer (byte-level BPE, vocab {args.vocab_size})")
            tokenizer = train_tokenizer(train_texts + [i["prompt"] for i in items], args.vocab_size, args.max_len)
        model = make_model(tokenizer, args)
        log(f"c. policy LM: Llama {args.layers}x{args.hidden}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M "
            f"params, {args.lm_steps} steps x {args.batch_size} on {len(train_texts)} clean problems")
        train_lm(model, tokenizer, encode_examples(tokenizer, train_texts), args, out)
        save_policy(model, tokenizer, out / "model")
        shutil.rmtree(out / "lm_checkpoint", ignore_errors=True)
    # always continue from the saved files, so later stages see exactly what ships
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    model = AutoModelForCausalLM.from_pretrained(out / "model").eval()
    return model, tokenizer


def stage_labels(out: Path, model, tokenizer, items: list[dict], truth: list[dict], args):
    """d: pass rates (k rollouts) and quality labels for two random ~10% subsets."""
    rng = random.Random(args.seed)
    n_label = int(args.label_fraction * len(items))
    d_rows = sorted(rng.sample(range(len(items)), n_label))
    q_rows = sorted(rng.sample(range(len(items)), n_label))
    log(f"d. pass rates: {n_label} prompts x {args.k} rollouts; quality labels: {n_label} prompts")
    rates = pass_rates(model, tokenizer, [items[n] for n in d_rows], args)
    qlabels = [{"id": items[n]["id"], "label": truth[n]["quality"]} for n in q_rows]
    write_jsonl(out / "pass_rates.jsonl", rates)
    write_jsonl(out / "quality_labels.jsonl", qlabels)
    summary = {"pass_rate_subset": n_label, "quality_subset": n_label,
               "mean_pass_rate": round(float(np.mean([r["pass_rate"] for r in rates])), 4),
               "quality_bad_labels": sum(1 - q["label"] for q in qlabels)}
    return rates, qlabels, summary


def stage_sae(out: Path, model, tokenizer, train_texts: list[str], items: list[dict], args):
    """e: train the SAE, save it in sae-lens's format, reload it, measure it."""
    from sae_lens import SAE

    log(f"e. SAE: TopK k={args.topk}, d_sae={args.d_sae} on model.layers.{args.sae_layer}, {args.sae_tokens} tokens")
    rows = sae_sequences(tokenizer, train_texts[: len(train_texts) // 2] + [i["prompt"] for i in items], args.sae_context)
    random.Random(args.seed).shuffle(rows)
    sae = train_sae(out / "model", rows, layer=args.sae_layer, d_in=args.hidden, d_sae=args.d_sae, k=args.topk,
                    training_tokens=args.sae_tokens, exclude_token_ids=[tokenizer.pad_token_id, tokenizer.bos_token_id],
                    batch_tokens=args.sae_batch, lr=args.sae_lr, arch=args.sae_arch, aux_loss_coefficient=args.sae_aux,
                    dead_feature_window=args.sae_dead_window,
                    dataset_label="saerl_zoo/default (pool prompts + LM training texts)", seed=args.seed)
    sae.cfg.metadata.model_name = "saerl_zoo/default/model"  # not this machine's absolute path
    tmp = staging_dir(out / "sae")
    sae.save_inference_model(str(tmp))
    # sae-lens writes cfg.json keys in no fixed order; sort them so rebuilds are byte-identical
    write_json(tmp / "cfg.json", json.loads((tmp / "cfg.json").read_text()), sort_keys=True)
    replace_dir(tmp, out / "sae")
    sae = SAE.load_from_disk(str(out / "sae"), device="cpu")

    # held-out text from the same mix: solved clean problems + a fresh pool (with its broken prompts)
    if args.tasks == "worked":  # worked solutions from the half of the LM's texts the SAE did not train on
        texts = train_texts[len(train_texts) // 2 :][: args.n_eval]
        fresh_pool, _ = build_worked_pool(args.n_eval, seed=args.seed + 1, bad_fraction=args.bad_fraction)
    else:
        eval_items, _ = build_eval_set(args.n_eval, seed=args.seed + 1)
        texts = [f"{i['prompt']} {i['answer']}" for i in eval_items]
        fresh_pool, _ = build_pool(args.n_eval, seed=args.seed + 1, bad_fraction=args.bad_fraction)
    heldout = sae_sequences(tokenizer, texts + [i["prompt"] for i in fresh_pool], args.sae_context)
    acts = block_outputs(model, args.sae_layer, heldout, tokenizer.pad_token_id, (tokenizer.bos_token_id,))
    metrics = {k: round(v, 6 if k == "mse" else 4) if isinstance(v, float) else v for k, v in sae_metrics(sae, acts).items()}
    metrics["heldout"] = "unseen clean problems with answers + prompts of a fresh pool (seed + 1), BOS/pad excluded"
    metrics["hook_name"] = f"model.layers.{args.sae_layer}"
    metrics["architecture"] = f"topk (k={args.topk})"
    write_json(out / "sae_metrics.json", metrics)
    log(f"   SAE held-out: {metrics}")
    return sae, metrics


def versions() -> dict[str, str]:
    import datasets
    import reasoning_gym
    import sae_lens
    import sklearn
    import tokenizers
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "sae_lens": sae_lens.__version__,
            "tokenizers": tokenizers.__version__, "datasets": datasets.__version__,
            "reasoning_gym": getattr(reasoning_gym, "__version__", "unknown"),
            "scikit_learn": sklearn.__version__, "numpy": np.__version__}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    exit_unless_installed("build", "scripts/build_default.py")
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    argv = sys.argv[1:] if argv is None else argv
    info: dict[str, Any] = {"command": " ".join(["python scripts/build_default.py", *argv]), "seed": args.seed}

    # a. pool + ground truth; clean LM-training and eval problems come from other seed streams / splits
    log(f"a. {args.tasks} pool of {args.n_pool} prompts ({args.bad_fraction:.0%} low quality)")
    items, truth, train_texts, eval_items, eval_truth = task_data(args)
    write_jsonl(out / "prompts.jsonl", items)
    write_jsonl(out / "ground_truth.jsonl", truth)
    write_jsonl(out / "eval_prompts.jsonl", eval_items)
    write_jsonl(out / "eval_truth.jsonl", eval_truth)
    if args.stop_after == "pool":
        return

    # b + c. tokenizer and policy; its competence per family x level on held-out problems
    model, tokenizer = stage_policy(out, train_texts, items, args)
    tables = competence(model, tokenizer, eval_items, eval_truth, k=args.k, max_new_tokens=args.max_new_tokens,
                        seed=args.seed)
    for name, table in tables.items():
        print_table(f"   {name} on {len(eval_items)} held-out problems (T=1, {args.k} samples where sampled)", table)
    info["lm"] = {"params": sum(p.numel() for p in model.parameters()), "eval_problems": len(eval_items), **tables}
    write_json(out / "competence.json", {"command": info["command"], "k": args.k, "max_new_tokens": args.max_new_tokens,
                                         "seed": args.seed, **info["lm"]})
    if args.stop_after == "lm":
        return

    # d. labels
    rates, qlabels, info["labels"] = stage_labels(out, model, tokenizer, items, truth, args)
    if args.stop_after == "labels":
        return

    # e. SAE
    sae, info["sae"] = stage_sae(out, model, tokenizer, train_texts, items, args)
    if args.stop_after == "sae":
        return

    # f. probes (+ evaluation against the ground truth)
    log("f. featurize the pool, fit difficulty + quality probes")
    difficulty, quality, feats = fit_probes(out, model, tokenizer, sae, items, rates, qlabels, args)
    info["probes"] = {"difficulty_probe_heldout": difficulty.metrics, "quality_probe_heldout": quality.metrics,
                      "nonzero_features_per_prompt": round(float(np.diff(feats.indptr).mean()), 2),
                      "pool_eval": evaluate_against_truth(difficulty.predict(feats), quality.predict(feats), truth)}
    log("   " + json.dumps(info["probes"]))

    info["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    info["build_seconds"] = round(time.time() - T0, 1)
    info["threads"] = args.threads
    info["versions"] = versions()
    info["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"}
    write_json(out / "build_info.json", info)
    log(f"done in {info['build_seconds']}s -> {out}")


if __name__ == "__main__":
    main()
