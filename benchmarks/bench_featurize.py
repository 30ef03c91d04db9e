"""Featurize throughput against the physical limit and against the sae-lens route.

For each model, on the same prompts, layer and batch size, timed round-robin:

* ``bare forward``   — the physical limit: pre-tokenised, length-sorted batches
  through the model, stopped right after the hooked block (no SAE, no pooling,
  no tokenisation in the timed part). Target: featurize ≥ 0.9× of it.
* ``featurize``      — ``saerl_zoo.featurizer`` as shipped (tokenise, sort by
  length, forward to the layer, encode real tokens, pool, CSR).
* ``featurize naive``— the same code with batches in the given order
  (``shard_size = batch_size``): the gain of length-sorted batching.
* ``sae-lens route`` — what a user writes without saerl-zoo: the HF model in
  sae-lens's ``HookedProxyLM`` (what ``sae_lens.load_model.load_model(
  "AutoModelForCausalLM", path)`` returns), ``run_with_cache`` of the full
  forward, ``sae.encode`` of the cached residual stream, masked mean pooling,
  CSR; batches in the given order. Target: featurize ≥ 2× of it.
* ``sae-lens + stop_at_layer`` — the same with sae-lens's own early stop
  (``run_with_cache(..., stop_at_layer=)``), for the breakdown.

Both routes must give the same features (checked: max abs difference).

Timing: the methods take turns chunk by chunk (a few batches each), so load
from other processes on a shared machine hits them alike; each figure's ratio
is the median over rounds of the per-round time ratio.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from benchmarks.common import (
    figure,
    lognormal_prompts,
    llama_from_config,
    median,
    paired_ratio,
    topk_sae,
    word_tokenizer,
)
from saerl_zoo.featurizer import decoder_layers, featurize
from saerl_zoo.hooks import capture, resolve

NAME = "featurize"


# ---------------------------------------------------------------- setups


def embedded_setup(n_prompts: int) -> dict[str, Any]:
    """The embedded default policy, its SAE and prompt pool (falls back to a tiny config model if absent)."""
    try:
        from saerl_zoo.data import load_rows
        from saerl_zoo.embedded import default_path, load_default_model
        from saerl_zoo.zoo.api import load_sae

        model, tokenizer = load_default_model()
        sae = load_sae(default_path("sae"))
        prompts = [r["prompt"] for r in load_rows(default_path("prompts.jsonl"))]
        model_path = str(default_path("model"))
        label = "embedded default (Llama 4×128, TopK SAE d_sae=1024 on block 2)"
    except FileNotFoundError:
        tokenizer = word_tokenizer(384)
        model = llama_from_config(vocab_size=384, hidden=128, intermediate=384, layers=4, heads=4, kv_heads=4, max_positions=128)
        sae = topk_sae(128, 1024, 32, "model.layers.2")
        prompts = lognormal_prompts(384, 2000, median_tokens=12, sigma=0.4, max_tokens=64)
        model_path = None
        label = "tiny Llama 4×128 from config (embedded default not built), TopK SAE d_sae=1024"
    reps = max(1, math.ceil(n_prompts / len(prompts)))
    prompts = (prompts * reps)[:n_prompts]
    layer = 2
    return {"key": "embedded", "label": label, "model": model, "tokenizer": tokenizer, "sae": sae, "layer": layer,
            "prompts": prompts, "batch_size": 64, "max_length": 128, "model_path": model_path, "chunk_batches": 4}


def llama_setup(quick: bool, n_prompts: int, d_sae: int | None = None) -> dict[str, Any]:
    """A SmolLM-135M-shaped Llama (30 × 576, GQA 9/3, vocab 49152) with random weights, SAE on block 15.

    Quick mode uses an 8 × 256 model instead, to stay within seconds.
    """
    if quick:
        vocab, hidden, inter, layers, heads, kv, layer = 8192, 256, 768, 8, 4, 2, 4
    else:
        vocab, hidden, inter, layers, heads, kv, layer = 49152, 576, 1536, 30, 9, 3, 15
    d_sae = d_sae or 8 * hidden
    model = llama_from_config(vocab_size=vocab, hidden=hidden, intermediate=inter, layers=layers, heads=heads, kv_heads=kv)
    params = sum(p.numel() for p in model.parameters())
    tokenizer = word_tokenizer(vocab)
    sae = topk_sae(hidden, d_sae, 64, f"model.layers.{layer}")
    # Long-tailed lengths like math prompt pools: median 64 tokens, a tail to 512.
    prompts = lognormal_prompts(vocab, n_prompts, median_tokens=64, sigma=0.8, max_tokens=512, seed=1)
    key = "llama-mini" if quick else ("llama-135m" if d_sae == 8 * hidden else f"llama-135m-dsae{d_sae}")
    label = (f"Llama {layers}×{hidden} from config ({params / 1e6:.0f}M params, random weights), "
             f"TopK SAE d_sae={d_sae} (k=64) on block {layer}")
    return {"key": key, "label": label, "model": model, "tokenizer": tokenizer, "sae": sae, "layer": layer,
            "prompts": prompts, "batch_size": 8 if quick else 16, "max_length": 512, "model_path": None, "params": params}


# ---------------------------------------------------------------- the methods


def _lengths(tokenizer: Any, prompts: list[str], max_length: int) -> np.ndarray:
    return np.asarray([len(x) for x in tokenizer(prompts, truncation=True, max_length=max_length)["input_ids"]])


def _padded_tokens(lengths: np.ndarray, order: np.ndarray, batch_size: int) -> int:
    return int(sum(lengths[order[i : i + batch_size]].max() * len(order[i : i + batch_size]) for i in range(0, len(order), batch_size)))


def make_bare_forward(setup: dict[str, Any], prompts: list[str], pretokenized: bool = False):
    """Length-sorted batches (featurize's own order) through the model, stopped after the hooked block; no SAE.

    By default the prompts are tokenised inside the timed part (text in, residual
    stream out: the limit for featurizing text); with `pretokenized` the padded
    batches are built beforehand and only the forward is timed.
    """
    model, tok, bs, ml = setup["model"], setup["tokenizer"], setup["batch_size"], setup["max_length"]
    point = resolve(model, setup["sae"], setup["layer"])  # the very point featurize reads
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
        ids = tok(prompts, truncation=True, max_length=ml, return_attention_mask=False)["input_ids"]
        order = np.argsort(np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)), kind="stable")[::-1]
        out = []
        for i in range(0, len(prompts), bs):
            rows = [ids[j] for j in order[i : i + bs]]
            width = max(map(len, rows))
            x = np.full((len(rows), width), pad_id, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, seq in enumerate(rows):
                x[r, : len(seq)] = seq
                mask[r, : len(seq)] = 1
            out.append((torch.from_numpy(x), torch.from_numpy(mask)))
        return out

    ready = batches() if pretokenized else None

    def run() -> None:
        with torch.inference_mode():
            for ids, mask in ready if ready is not None else batches():
                capture(model, point, ids, mask)

    return run


def make_featurize(setup: dict[str, Any], prompts: list[str], naive: bool = False):
    kwargs = dict(layer=setup["layer"], batch_size=setup["batch_size"], max_length=setup["max_length"], progress=False)
    if naive:
        kwargs["shard_size"] = setup["batch_size"]  # one batch per shard: batches in the given order
    out: dict[str, sp.csr_matrix] = {}

    def run() -> None:
        out["X"] = featurize(prompts, setup["model"], setup["tokenizer"], setup["sae"], **kwargs)

    return run, out


def make_proxy(setup: dict[str, Any], all_hooks: bool = False):
    """sae-lens's wrapper of the HF model: what a user of sae-lens runs the model through."""
    from sae_lens.load_model import HookedProxyLM, load_model

    hook = f"model.layers.{setup['layer']}"
    if all_hooks and setup.get("model_path"):
        # Exactly what a user gets from sae-lens's loader: every submodule hooked.
        proxy = load_model("AutoModelForCausalLM", setup["model_path"], device="cpu")
    else:
        # The same class, hooked only where the SAE reads (faster than the default: a stricter reference).
        # A copy of the model: HookedProxyLM leaves its forward hooks on the module it wraps.
        proxy = HookedProxyLM(copy.deepcopy(setup["model"]), setup["tokenizer"], hook_names=None if all_hooks else [hook])
    return proxy.eval()


def make_saelens_route(setup: dict[str, Any], proxy: Any, prompts: list[str], stop_early: bool = False):
    """The route without saerl-zoo: sae-lens's HookedProxyLM, run_with_cache, sae.encode, masked mean pooling."""
    hook = f"model.layers.{setup['layer']}"
    sae, tok, bs, ml = setup["sae"], setup["tokenizer"], setup["batch_size"], setup["max_length"]
    out: dict[str, sp.csr_matrix] = {}

    def run() -> None:
        rows = []
        with torch.inference_mode():
            for i in range(0, len(prompts), bs):
                enc = tok(prompts[i : i + bs], return_tensors="pt", padding=True, padding_side="right", truncation=True,
                          max_length=ml, return_special_tokens_mask=True)
                kwargs: dict[str, Any] = {"names_filter": [hook]}
                if stop_early:
                    kwargs["stop_at_layer"] = setup["layer"] + 1
                _, cache = proxy.run_with_cache(enc["input_ids"], **kwargs)
                codes = sae.encode(cache[hook])  # batch × seq × d_sae
                mask = (enc["attention_mask"].bool() & ~enc["special_tokens_mask"].bool()).to(codes.dtype)
                pooled = (codes * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
                rows.append(sp.csr_matrix(pooled.numpy()))
        out["X"] = sp.vstack(rows, format="csr")

    return run, out


# ---------------------------------------------------------------- one model


def encode_flops_share(setup: dict[str, Any]) -> float:
    """SAE encode multiply-adds per token over those of the blocks up to the hooked one (weights only)."""
    blocks = decoder_layers(setup["model"])[: setup["layer"] + 1]
    forward = sum(p.numel() for b in blocks for p in b.parameters() if p.dim() == 2)
    return float(setup["sae"].cfg.d_in * setup["sae"].cfg.d_sae / forward)


def bench_model(setup: dict[str, Any], repeats: int, log=print) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Time every method on the same prompts, interleaved chunk by chunk.

    The pool is cut into chunks of `chunk_batches` batches and, within a round,
    the methods take turns on each chunk (order alternating), so a burst of
    load from another process lands on all methods alike; a method's round
    time is the sum over chunks. Length-sorted methods (bare forward,
    featurize) get the pool's length-sorted order cut into chunks (exactly the
    batches featurize forms within a shard); the given-order methods (naive
    batching, the sae-lens route) get the given order cut into chunks.
    """
    key, prompts = setup["key"], setup["prompts"]
    n = len(prompts)
    lengths = _lengths(setup["tokenizer"], prompts, setup["max_length"])
    tokens = int(lengths.sum())
    bs = setup["batch_size"]
    sorted_order = np.argsort(lengths, kind="stable")[::-1]
    pad_sorted = _padded_tokens(lengths, sorted_order, bs)
    pad_naive = _padded_tokens(lengths, np.arange(n), bs)
    per = bs * setup.get("chunk_batches", 1)
    chunks = {
        True: [sorted_order[i : i + per] for i in range(0, n, per)],  # length-sorted
        False: [np.arange(i, min(n, i + per)) for i in range(0, n, per)],  # given order
    }

    proxy = make_proxy(setup)
    proxy_all = make_proxy(setup, all_hooks=True) if setup.get("model_path") else None
    factories = {  # name: (uses the length-sorted order, ps -> (run, out))
        "bare": (True, lambda ps: (make_bare_forward(setup, ps), None)),
        "forward_only": (True, lambda ps: (make_bare_forward(setup, ps, pretokenized=True), None)),
        "featurize": (True, lambda ps: make_featurize(setup, ps)),
        "naive": (False, lambda ps: make_featurize(setup, ps, naive=True)),
        "saelens": (False, lambda ps: make_saelens_route(setup, proxy, ps)),
        "saelens_stop": (False, lambda ps: make_saelens_route(setup, proxy, ps, stop_early=True)),
    }
    if proxy_all is not None:
        factories["saelens_all_hooks"] = (False, lambda ps: make_saelens_route(setup, proxy_all, ps))

    log(f"  {key}: {setup['label']}; {n} prompts, {tokens} tokens (median {int(np.median(lengths))}, "
        f"max {int(lengths.max())}), batch {bs}, {len(chunks[True])} chunks of {per} prompts, {repeats} rounds")
    for _, make in factories.values():  # warm-up on one batch: lazy inits, allocator
        make(prompts[:bs])[0]()
    runs = {name: [make([prompts[i] for i in idx]) for idx in chunks[srt]] for name, (srt, make) in factories.items()}
    names = list(factories)
    times: dict[str, list[float]] = {name: [0.0] * repeats for name in names}
    for r in range(repeats):
        for c in range(len(chunks[True])):
            for name in names if (r + c) % 2 == 0 else names[::-1]:
                start = time.perf_counter()
                runs[name][c][0]()
                times[name][r] += time.perf_counter() - start
    med = {m: median(t) for m, t in times.items()}

    def assemble(name: str) -> sp.csr_matrix:
        srt = factories[name][0]
        rows = np.concatenate(chunks[srt])
        X = sp.vstack([out["X"] for _, out in runs[name]], format="csr")
        return X[np.argsort(rows)]

    feat_out, route_out = {"X": assemble("featurize")}, {"X": assemble("saelens")}
    diff = float(abs(feat_out["X"] - route_out["X"]).max())
    share = encode_flops_share(setup)
    section = f"featurize/{key}"
    figs = [
        figure(section, "bare forward to the hooked block, tokenisation included (physical limit)", n / med["bare"], "prompts/s",
               note=f"{tokens / med['bare']:.0f} tokens/s"),
        figure(section, "bare forward, pre-tokenised (forward only)", n / med["forward_only"], "prompts/s",
               note=f"{tokens / med['forward_only']:.0f} tokens/s"),
        figure(section, "featurize", n / med["featurize"], "prompts/s", reference="bare forward (tokenisation included)",
               reference_value=n / med["bare"], ratio=paired_ratio(times["bare"], times["featurize"]), target="≥ 0.9×",
               met=paired_ratio(times["bare"], times["featurize"]) >= 0.9,
               note=f"{tokens / med['featurize']:.0f} tokens/s; SAE encode = {100 * share:.1f}% of the truncated forward's "
                    f"multiply-adds, so ≤ {1 / (1 + share):.2f}× even with free top-k and pooling"),
        figure(section, "featurize", n / med["featurize"], "prompts/s", reference="sae-lens route (full forward, run_with_cache + encode)",
               reference_value=n / med["saelens"], ratio=paired_ratio(times["saelens"], times["featurize"]), target="≥ 2×",
               met=paired_ratio(times["saelens"], times["featurize"]) >= 2, note=f"sae-lens route {tokens / med['saelens']:.0f} tokens/s"),
        figure(section, "featurize", n / med["featurize"], "prompts/s", reference="bare forward, pre-tokenised",
               reference_value=n / med["forward_only"], ratio=paired_ratio(times["forward_only"], times["featurize"])),
        figure(section, "featurize", n / med["featurize"], "prompts/s", reference="sae-lens route with stop_at_layer",
               reference_value=n / med["saelens_stop"], ratio=paired_ratio(times["saelens_stop"], times["featurize"])),
        figure(section, "length-sorted batching (featurize)", n / med["featurize"], "prompts/s",
               reference="naive batching (given order)", reference_value=n / med["naive"],
               ratio=paired_ratio(times["naive"], times["featurize"]), target="> 1× (a gain)",
               met=paired_ratio(times["naive"], times["featurize"]) > 1,
               note=f"padded tokens {pad_sorted} sorted vs {pad_naive} naive ({tokens} real)"),
    ]
    if "saelens_all_hooks" in times:
        figs.append(figure(section, "featurize", n / med["featurize"], "prompts/s",
                           reference="sae-lens load_model default (every submodule hooked)",
                           reference_value=n / med["saelens_all_hooks"], ratio=paired_ratio(times["saelens_all_hooks"], times["featurize"])))
    detail = {
        "label": setup["label"],
        "n_prompts": n,
        "tokens": tokens,
        "median_tokens": float(np.median(lengths)),
        "max_tokens": int(lengths.max()),
        "batch_size": bs,
        "layer": setup["layer"],
        "d_sae": int(setup["sae"].cfg.d_sae),
        "params": setup.get("params") or sum(p.numel() for p in setup["model"].parameters()),
        "sae_encode_share_of_truncated_forward_flops": encode_flops_share(setup),
        "ideal_ratio_by_flops": 1 / (1 + encode_flops_share(setup)),
        "padded_tokens": {"sorted": pad_sorted, "naive": pad_naive},
        "max_abs_diff_featurize_vs_saelens": diff,
        "seconds": times,
        "timing": "per round: sum over chunks, methods interleaved chunk by chunk",
        "median_seconds": med,
        "prompts_per_s": {m: n / t for m, t in med.items()},
        "tokens_per_s": {m: tokens / t for m, t in med.items()},
    }
    return figs, detail


METHOD_LABELS = {
    "bare": "bare forward to the hooked block, tokenisation included (physical limit)",
    "forward_only": "bare forward, pre-tokenised",
    "featurize": "**featurize** (saerl-zoo)",
    "naive": "featurize, naive batching (given order)",
    "saelens": "sae-lens route: HookedProxyLM full forward + run_with_cache + encode",
    "saelens_stop": "sae-lens route with stop_at_layer",
    "saelens_all_hooks": "sae-lens route, load_model default (every submodule hooked)",
}


def markdown(details: dict[str, Any]) -> str:
    parts = []
    for key, d in details.items():
        share = d["sae_encode_share_of_truncated_forward_flops"]
        parts.append(
            f"**{key}** — {d['label']}; {d['n_prompts']} prompts, {d['tokens']:,} tokens (median {d['median_tokens']:.0f}, "
            f"max {d['max_tokens']}), batch {d['batch_size']}; SAE encode = {100 * share:.1f}% of the truncated "
            f"forward's multiply-adds (ideal featurize/bare ≤ {1 / (1 + share):.2f}); featurize vs sae-lens features: "
            f"max |Δ| = {d['max_abs_diff_featurize_vs_saelens']:.1e}\n"
        )
        parts.append("| method | prompts/s | tokens/s | featurize speed-up over it |")
        parts.append("|---|---:|---:|---:|")
        feat = d["seconds"]["featurize"]
        for method, times in d["seconds"].items():
            ratio = float(np.median([a / b for a, b in zip(times, feat)]))
            parts.append(f"| {METHOD_LABELS.get(method, method)} | {d['prompts_per_s'][method]:,.1f} | "
                         f"{d['tokens_per_s'][method]:,.0f} | {ratio:.2f}× |")
        parts.append("")
    return "\n".join(parts)


def run(quick: bool = False, log=print) -> dict[str, Any]:
    from benchmarks.common import format_figure

    figures: list[dict[str, Any]] = []
    details: dict[str, Any] = {}
    plan = [
        (lambda: embedded_setup(128 if quick else 2000), 2 if quick else 3),
        (lambda: llama_setup(quick, 24 if quick else 64), 2 if quick else 2),
    ]
    for make, repeats in plan:
        setup = make()
        figs, detail = bench_model(setup, repeats, log)
        for f in figs:
            log("  " + format_figure(f))
        figures += figs
        details[setup["key"]] = detail
        del setup
    return {"figures": figures, "details": details, "markdown": markdown(details)}
