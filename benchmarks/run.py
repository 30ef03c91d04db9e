"""Run the benchmarks: ``python -m benchmarks.run [--quick] [--only NAME[,NAME]] [--out DIR] [--threads N]``.

Sections (``--only`` takes these names):

* ``featurize``        — featurize vs the bare forward to the hooked layer and vs the sae-lens route;
* ``scale``            — clustering / probes / sampler from 10^4 to 10^6 prompts (time, peak memory);
* ``sampler_overhead`` — the SaeRL sampler's cost per step in the GRPO loop and the TRL adapter.

Every figure is printed next to the reference measured in the same run, and
each section writes ``<out>/<name>.json`` (figures, raw timings, command, date,
machine); ``<out>/README.md`` summarises every section found in ``<out>``.
Full runs write to ``benchmarks/results/`` (committed), ``--quick`` runs to
``benchmarks/results/quick/``.

Threads: ``featurize`` and ``sampler_overhead`` run with ``--threads`` torch
threads (default 1). On a shared 2-core machine two OpenMP threads made the
tiny models' many small ops up to 20× slower whenever another process held a
core, which would distort ratios; one thread measures every method alike. The
``scale`` section keeps the libraries' defaults (its k-means is single-threaded
scipy; scikit-learn uses its OpenMP pool).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, fmt, format_figure, machine_info, now, write_result

SECTIONS = {
    "featurize": "benchmarks.bench_featurize",
    "scale": "benchmarks.bench_scale",
    "sampler_overhead": "benchmarks.bench_training",
}
ALIASES = {"sampler": "sampler_overhead", "training": "sampler_overhead", "curriculum": "scale"}
THREADED = {"featurize", "sampler_overhead"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes: the whole run takes about a minute")
    p.add_argument("--only", help=f"comma-separated sections: {', '.join(SECTIONS)}")
    p.add_argument("--out", type=Path, help="results folder (default benchmarks/results, or benchmarks/results/quick with --quick)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for featurize and sampler_overhead (default 1)")
    return p.parse_args(argv)


def selected(only: str | None) -> list[str]:
    if not only:
        return list(SECTIONS)
    names = []
    for raw in only.split(","):
        name = ALIASES.get(raw.strip(), raw.strip())
        if name not in SECTIONS:
            raise SystemExit(f"unknown section {raw!r}; choose from {', '.join(SECTIONS)}")
        names.append(name)
    return names


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.run " + " ".join(sys.argv[1:] if argv is None else argv)
    machine = machine_info()
    print(f"{command.strip()}  |  {now()}  |  {machine['platform']}, {machine['cpus_usable']} CPUs, torch {machine['torch']}")

    import torch

    default_threads = torch.get_num_threads()
    for name in selected(args.only):
        module = importlib.import_module(SECTIONS[name])
        threads = args.threads if name in THREADED else default_threads
        torch.set_num_threads(threads)
        print(f"\n== {name} ({'quick' if args.quick else 'full'}, torch threads {threads}) ==", flush=True)
        start = time.perf_counter()
        result = module.run(quick=args.quick, log=lambda msg: print(msg, flush=True))
        torch.set_num_threads(default_threads)
        result.update(
            name=name,
            command=command.strip(),
            date=now(),
            quick=args.quick,
            seconds=time.perf_counter() - start,
            torch_threads=threads,
            machine=machine,
        )
        for artifact, path in result.pop("artifacts", {}).items():
            shutil.copyfile(path, out / artifact)
            result.setdefault("files", []).append(artifact)
        write_result(out, name, result)
        print(f"-- {name}: {result['seconds']:.0f}s → {out / (name + '.json')}", flush=True)
    summary = write_summary(out)
    print(f"\nsummary → {summary}")
    return 0


def _figure_rows(figures: list[dict[str, Any]]) -> list[str]:
    rows = ["| section | figure | value | reference | ratio | target |", "|---|---|---:|---|---:|---|"]
    for f in figures:
        ref = f"{f['reference']} ({fmt(f['reference_value'])})" if f.get("reference") else ""
        ratio = "" if f.get("ratio") is None else _ratio(f["ratio"])
        verdict = {True: "met", False: "**missed**", None: ""}[f.get("met")]
        target = f"{f['target']} {verdict}".strip() if f.get("target") else ""
        value = f"{fmt(f['value'])} {f['unit']}".strip()
        note = f" — {f['note']}" if f.get("note") else ""
        rows.append(f"| {f['section']} | {f['figure']}{note} | {value} | {ref} | {ratio} | {target} |")
    return rows


def _ratio(r: float) -> str:
    return f"{100 * r:.3g}%" if r < 0.1 else f"{r:.2f}×"


def write_summary(out: Path) -> Path:
    """README.md in `out`: every section's JSON found there, its figures and tables."""
    lines = ["# saerl-zoo benchmark results", ""]
    found = [(name, out / f"{name}.json") for name in SECTIONS if (out / f"{name}.json").exists()]
    for name, path in found:
        r = json.loads(path.read_text())
        m = r["machine"]
        lines += [
            f"## {name}",
            "",
            f"- command: `{r['command']}` ({'quick' if r['quick'] else 'full'} run, {r['seconds']:.0f} s, torch threads {r['torch_threads']})",
            f"- date: {r['date']}",
            f"- machine: {m['platform']}; {m['cpus_usable']} usable CPUs of {m['cpu_count']}; {m.get('memory_gib')} GiB; "
            f"Python {m['python']}, torch {m['torch']}, transformers {m['transformers']}, sae-lens {m['sae_lens']}, "
            f"scikit-learn {m['scikit_learn']}, scipy {m['scipy']}, numpy {m['numpy']}; GPU: {m['cuda'] or 'none'}",
            "",
        ]
        lines += _figure_rows(r["figures"])
        lines.append("")
        if r.get("markdown"):
            lines += [r["markdown"], ""]
        for f in r.get("files", []):
            if f.endswith(".png"):
                lines += [f"![{f}]({f})", ""]
    path = out / "README.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, path)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
