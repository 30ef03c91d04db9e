"""The SaeRL sampler's cost per training step, inside the bundled GRPO loop and for the TRL adapter.

* Bundled loop (`saerl_zoo.grpo`): the loop body of `grpo.train` — ``PromptStream.take``
  (the sampler) then ``train_step`` (sample a group per prompt, score, advantages,
  log-probs, clipped loss, AdamW) — on the embedded tiny policy with its prompt
  pool and ``task_reward``. The sampler's per-step cost is measured two ways:
  the ``take`` calls timed inside the loop, and a whole epoch of ``take`` calls
  (the epoch's order is built when it starts) divided by its steps.
* TRL adapter: ``SaeRLRepeatSampler`` (the sampler ``SaeRLGRPOTrainer`` hands to
  TRL) iterated for one epoch, per generation chunk, against the same step
  (a TRL step on the same model and batch does at least the same work).
* At pool scale: a 1M-prompt ``SaeRLSampler`` (100 clusters, difficulty,
  quality mask): per-step amortised cost and the one-off epoch start.

Cluster labels, difficulty and keep mask are random arrays of the right
shapes: the sampler's cost depends on their sizes, not their values.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from benchmarks.common import figure, median

NAME = "sampler_overhead"


def _signals(n: int, n_clusters: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "clusters": rng.integers(0, n_clusters, n),
        "difficulty": rng.random(n),
        "keep": rng.random(n) > 0.1,
    }


def _policy():
    """The embedded policy and pool; a tiny config Llama on the tasks pool if the default is not built."""
    from saerl_zoo.rewards import task_reward

    try:
        from saerl_zoo.data import load_rows
        from saerl_zoo.embedded import default_path, load_default_model

        model, tokenizer = load_default_model()
        rows = load_rows(default_path("prompts.jsonl"))
        label = "embedded default policy (Llama 4×128, 0.9M params)"
    except FileNotFoundError:
        from benchmarks.common import llama_from_config, word_tokenizer

        tokenizer = word_tokenizer(384)
        model = llama_from_config(vocab_size=384, hidden=128, intermediate=384, layers=4, heads=4, kv_heads=4, max_positions=256)
        rng = np.random.default_rng(0)
        rows = []
        for i in range(2000):
            a, b = (int(x) for x in rng.integers(0, 180, 2))
            rows.append({"id": f"p{i:05d}", "prompt": f"w{a} w{b}", "answer": str(a + b)})
        label = "tiny Llama 4×128 from config (embedded default not built)"
    return model, tokenizer, rows, task_reward, label


def bundled_loop(quick: bool, log=print) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from saerl_zoo.grpo import GRPOConfig, PromptStream, seed_everything, train_step
    from saerl_zoo.sampler import SaeRLSampler

    model, tokenizer, rows, reward_fn, label = _policy()
    config = GRPOConfig(prompts_per_step=8, group_size=8, max_new_tokens=32, lr=1e-5, log=False)
    n = len(rows)
    signals = _signals(n, 32)
    make_sampler = lambda: SaeRLSampler(n, batch_size=config.prompts_per_step, mixing=0.1, seed=0, **signals)  # noqa: E731
    steps = 3 if quick else 12

    seed_everything(0)
    model.eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    stream = PromptStream(make_sampler())
    take_s, step_s = [], []
    for _ in range(steps):  # the body of grpo.train, timed in two parts
        start = time.perf_counter()
        indices = stream.take(config.prompts_per_step)
        mid = time.perf_counter()
        train_step(model, tokenizer, optimizer, [rows[i] for i in indices], reward_fn, config)
        take_s.append(mid - start)
        step_s.append(time.perf_counter() - mid)

    # A whole epoch of takes (order built at its start), per step.
    epoch_stream = PromptStream(make_sampler())
    steps_per_epoch = len(make_sampler()) // config.prompts_per_step
    start = time.perf_counter()
    for _ in range(steps_per_epoch):
        epoch_stream.take(config.prompts_per_step)
    per_step_epoch = (time.perf_counter() - start) / steps_per_epoch

    step = median(step_s)
    in_loop = float(np.mean(take_s))
    figs = [
        figure("sampler/grpo", "GRPO train step (8 prompts × 8 completions, 32 new tokens)", step, "s/step",
               note=label),
        figure("sampler/grpo", "SaeRL sampler per step, timed in the loop (mean of take())", in_loop * 1e3, "ms/step",
               reference="train step", reference_value=step * 1e3, target="< 1%", met=in_loop / step < 0.01,
               note=f"{steps} steps, the first includes building the epoch order"),
        figure("sampler/grpo", "SaeRL sampler per step, a whole epoch of take() / steps", per_step_epoch * 1e3, "ms/step",
               reference="train step", reference_value=step * 1e3, target="< 1%", met=per_step_epoch / step < 0.01,
               note=f"{n} prompts, {steps_per_epoch} steps per epoch"),
    ]
    detail = {"policy": label, "n_prompts": n, "config": {"prompts_per_step": 8, "group_size": 8, "max_new_tokens": 32},
              "train_step_s": step_s, "take_s": take_s, "epoch_take_per_step_s": per_step_epoch,
              "steps_per_epoch": steps_per_epoch, "torch_threads": torch.get_num_threads()}
    return figs, detail, step


def trl_sampler(step_s: float, quick: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from saerl_zoo.adapters.trl import SaeRLRepeatSampler
    from saerl_zoo.sampler import SaeRLSampler

    n = 2000
    num_generations, generation_batch_size, steps_per_generation = 8, 64, 1
    chunk = generation_batch_size // num_generations
    saerl = SaeRLSampler(n, batch_size=chunk, mixing=0.1, seed=0, drop_last=True, **_signals(n, 32))
    sampler = SaeRLRepeatSampler(saerl, mini_repeat_count=num_generations, batch_size=chunk, repeat_count=steps_per_generation)
    rounds = []
    for epoch in range(2 if quick else 5):
        sampler.set_epoch(epoch)
        start = time.perf_counter()
        count = sum(1 for _ in sampler)
        rounds.append(time.perf_counter() - start)
    per_chunk = median(rounds) / sampler.chunks_per_epoch
    figs = [
        figure("sampler/trl", "SaeRLRepeatSampler per generation chunk (a whole epoch / chunks)", per_chunk * 1e3, "ms/chunk",
               reference="GRPO train step on the same batch", reference_value=step_s * 1e3, target="< 1%",
               met=per_chunk / step_s < 0.01,
               note=f"chunk = {chunk} prompts × {num_generations} generations; {count} indices per epoch"),
    ]
    return figs, {"n_prompts": n, "epoch_s": rounds, "chunks_per_epoch": sampler.chunks_per_epoch, "per_chunk_s": per_chunk}


def at_scale(step_s: float, quick: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from saerl_zoo.grpo import PromptStream
    from saerl_zoo.sampler import SaeRLSampler

    n = 100_000 if quick else 1_000_000
    batch = 8
    signals = _signals(n, 100)
    start = time.perf_counter()
    sampler = SaeRLSampler(n, batch_size=batch, mixing=0.1, seed=0, **signals)
    build = time.perf_counter() - start
    stream = PromptStream(sampler)
    start = time.perf_counter()
    stream.take(batch)  # starts the epoch: the order of all n prompts is built here
    first = time.perf_counter() - start
    takes = 2000
    start = time.perf_counter()
    for _ in range(takes):
        stream.take(batch)
    per_take = (time.perf_counter() - start) / takes
    steps_per_epoch = len(sampler) // batch
    amortised = (build + first) / steps_per_epoch + per_take
    figs = [
        figure("sampler/scale", f"SaeRL sampler per step at {n:,} prompts (amortised epoch build + take)", amortised * 1e3,
               "ms/step", reference="GRPO train step (tiny policy)", reference_value=step_s * 1e3, target="< 1%",
               met=amortised / step_s < 0.01),
        figure("sampler/scale", f"epoch start at {n:,} prompts (construct + first take, once per epoch)", build + first, "s",
               reference="GRPO train step (tiny policy)", reference_value=step_s,
               note=f"once per {steps_per_epoch:,} steps"),
    ]
    return figs, {"n_prompts": n, "construct_s": build, "first_take_s": first, "take_s": per_take, "steps_per_epoch": steps_per_epoch}


def run(quick: bool = False, log=print) -> dict[str, Any]:
    from benchmarks.common import format_figure

    figures: list[dict[str, Any]] = []
    details: dict[str, Any] = {}
    figs, details["grpo"], step = bundled_loop(quick, log)
    figures += figs
    figs, details["trl"] = trl_sampler(step, quick)
    figures += figs
    figs, details["scale"] = at_scale(step, quick)
    figures += figs
    for f in figures:
        log("  " + format_figure(f))
    return {"figures": figures, "details": details}
