"""Shared pieces of the benchmarks: machine info, side-by-side timing, result files, test models.

Every figure is reported next to a reference measured in the same run, and
timings of the compared methods are interleaved (A, B, A, B, ...) so a noisy
machine slows both alike; ratios use the median of the repeats.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"


# ---------------------------------------------------------------- machine and result files


def machine_info() -> dict[str, Any]:
    import scipy
    import sklearn
    import torch
    import transformers

    try:
        import sae_lens

        sae_lens_version = sae_lens.__version__
    except Exception:  # pragma: no cover - sae-lens is a core dependency
        sae_lens_version = None
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        affinity = os.cpu_count()
    mem_gib = None
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        pass
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "memory_gib": mem_gib,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "transformers": transformers.__version__,
        "sae_lens": sae_lens_version,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit_learn": sklearn.__version__,
    }


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def figure(
    section: str,
    name: str,
    value: float,
    unit: str,
    *,
    reference: str | None = None,
    reference_value: float | None = None,
    ratio: float | None = None,
    target: str | None = None,
    met: bool | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """One reported number, with what it is compared to (measured in the same run)."""
    if ratio is None and reference_value not in (None, 0) and value is not None:
        ratio = value / reference_value
    return {
        "section": section,
        "figure": name,
        "value": value,
        "unit": unit,
        "reference": reference,
        "reference_value": reference_value,
        "ratio": ratio,
        "target": target,
        "met": met,
        "note": note,
    }


def format_figure(f: dict[str, Any]) -> str:
    line = f"[{f['section']}] {f['figure']}: {fmt(f['value'])} {f['unit']}"
    if f.get("reference"):
        ref = f"{fmt(f['reference_value'])}" if f.get("reference_value") is not None else ""
        line += f"  vs {f['reference']} {ref}".rstrip()
    if f.get("ratio") is not None:
        r = f["ratio"]
        line += f"  → {100 * r:.3g}%" if r < 0.1 else f"  → {r:.2f}×"
    if f.get("target"):
        verdict = {True: "met", False: "MISSED", None: "info"}[f.get("met")]
        line += f"  (target {f['target']}: {verdict})"
    if f.get("note"):
        line += f"  [{f['note']}]"
    return line


def fmt(x: Any) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        if x == 0:
            return "0"
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        if abs(x) >= 10:
            return f"{x:.1f}"
        if abs(x) >= 0.01:
            return f"{x:.3g}"
        return f"{x:.2e}"
    return str(x)


def write_result(out_dir: Path, name: str, result: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=False, default=_json_default) + "\n")
    os.replace(tmp, path)
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# ---------------------------------------------------------------- timing


def interleaved(methods: dict[str, Callable[[], Any]], repeats: int, warmup: bool = True) -> dict[str, list[float]]:
    """Wall times of each method, run round-robin `repeats` times (after one untimed warm-up round)."""
    if warmup:
        for fn in methods.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for r in range(repeats):
        names = list(methods) if r % 2 == 0 else list(methods)[::-1]  # alternate order: no method always goes first
        for name in names:
            start = time.perf_counter()
            methods[name]()
            times[name].append(time.perf_counter() - start)
    return times


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median of per-round ratios num[i] / den[i] (pairs measured back to back)."""
    return float(statistics.median(a / b for a, b in zip(num, den)))


# ---------------------------------------------------------------- stages in a subprocess (peak memory)


def run_stage(module: str, func: str, kwargs: dict[str, Any], timeout: float = 1800) -> dict[str, Any]:
    """Run `module.func(**kwargs)` in a fresh Python and return its JSON result plus its peak RSS.

    A fresh process per stage makes its peak RSS that stage's own (data
    loading and imports included), not the high-water mark of everything before it.
    """
    code = (
        "import json, resource, sys, time, importlib\n"
        "from benchmarks.common import peak_rss_mib\n"
        f"fn = getattr(importlib.import_module({module!r}), {func!r})\n"
        "kwargs = json.loads(sys.argv[1])\n"
        "out = fn(**kwargs)\n"
        "out['peak_rss_mib'] = peak_rss_mib()\n"
        "print('@@RESULT@@' + json.dumps(out))\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(kwargs)], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )
    if proc.returncode != 0:
        raise RuntimeError(f"stage {module}.{func}({kwargs}) failed:\n{proc.stderr[-4000:]}")
    for line in proc.stdout.splitlines():
        if line.startswith("@@RESULT@@"):
            return json.loads(line[len("@@RESULT@@") :])
    raise RuntimeError(f"stage {module}.{func} printed no result:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def peak_rss_mib() -> float:
    """This process's peak resident set size.

    Linux: VmHWM from /proc/self/status, which starts afresh at exec. (ru_maxrss
    does not: a child started from a big parent reports the parent's size.)
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    scale = 1 if sys.platform != "darwin" else 1024  # macOS reports bytes
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / scale


# ---------------------------------------------------------------- models built from configs (nothing downloaded)


def word_tokenizer(vocab_size: int):
    """A fast word-level tokenizer over `vocab_size` ids (w0 w1 ...), BOS prepended like real LM tokenizers."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for i in range(vocab_size - len(specials)):
        vocab[f"w{i}"] = len(specials) + i
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")


def llama_from_config(
    *, vocab_size: int, hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, max_positions: int = 2048, seed: int = 0
):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def topk_sae(d_in: int, d_sae: int, k: int, hook_name: str, seed: int = 0):
    """A sae-lens TopK SAE with random unit-norm directions (the speed of encode does not depend on training)."""
    import torch
    from sae_lens import TopKSAE, TopKSAEConfig

    torch.manual_seed(seed)
    cfg = TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k)
    cfg.metadata.hook_name = hook_name
    sae = TopKSAE(cfg)
    with torch.no_grad():
        w = torch.randn(d_sae, d_in)
        w /= w.norm(dim=1, keepdim=True)
        sae.W_dec.copy_(w)
        sae.W_enc.copy_(w.T)
        sae.b_enc.zero_()
    return sae.eval()


def lognormal_prompts(tokenizer_vocab: int, n: int, *, median_tokens: float, sigma: float, max_tokens: int, seed: int = 0) -> list[str]:
    """Prompts of random words whose token lengths are log-normal (long-tailed, like math prompt pools)."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(np.round(rng.lognormal(math.log(median_tokens), sigma, n)), 4, max_tokens - 1).astype(int)
    return [" ".join(f"w{j}" for j in rng.integers(0, tokenizer_vocab - 4, size=m)) for m in lengths]
