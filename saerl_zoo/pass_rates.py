"""Pass-rate labels: k rollouts of each prompt of a seeded subset, scored by a verifier, in resumable shards.

The output is the jsonl `saerl-zoo fit-probe --kind difficulty` reads: one
``{"id", "pass_rate", "k", "rewards"}`` row per labelled prompt, ``pass_rate``
the mean of the k rewards.

Why shards: rollouts are the costly part (hours on a GPU for a 10% subset of
DeepMath), so each finished shard of prompts is written atomically under
``<out>.shards/`` and a killed run, rerun with the same command, skips the
shards it finished. Shard ``s`` samples with seed ``seed + s``, so a resumed
run writes what an uninterrupted one would. The settings that decide the
numbers (inputs, model, verifier and its code, k, temperature, ...) are
recorded beside the shards; a rerun with other settings is refused while
finished shards exist, and ``overwrite`` discards them. The shards folder is
removed once the output is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from saerl_zoo.data import index_by_id, load_rows, where
from saerl_zoo.errors import UserError
from saerl_zoo.generation import Completion, Generator
from saerl_zoo.labelled_subset import choose_subset
from saerl_zoo.probe import labels_needed
from saerl_zoo.storage import atomic_folder, check_output, read_json, write_json, write_jsonl
from saerl_zoo.verifiers import Verifier, VerifierFn, resolve_verifier

PROBE_HELDOUT = 0.2  # fit-probe's held-out share (DifficultyProbe.fit's default): the subset must leave enough to score
SETTINGS = "settings.json"


def shards_folder(out: str | os.PathLike[str]) -> Path:
    """Where the finished shards of a labelling run into ``out`` are kept until ``out`` is written."""
    out = Path(out)
    return out.with_name(out.name + ".shards")


def label_pass_rates(
    model_path: str | os.PathLike[str],
    prompts_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    fraction: float | None = None,
    count: int | None = None,
    k: int = 8,
    verifier: str | VerifierFn = "math",
    backend: str = "auto",
    chat_template: bool | None = None,
    temperature: float = 1.0,
    max_new_tokens: int = 512,
    seed: int = 0,
    shard_size: int = 64,
    batch_size: int = 64,
    prompt_field: str = "prompt",
    device: str = "cpu",
    dtype: str | None = None,
    gguf_file: str | None = None,
    trust_remote_code: bool = False,
    vllm_options: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Label a seeded subset of ``prompts_path`` (default 10%) with pass rates over ``k`` rollouts; write ``out`` (jsonl).

    Every input is checked before the first rollout (prompt ids, the subset's
    size, the verifier and the fields it reads, the chat template, each
    prompt + ``max_new_tokens`` against the model's context), each refused in
    one line. Returns a summary: sizes, cost (rollouts, seconds), the mean
    pass rate and a ``note`` when every pass rate is equal (no signal for a
    difficulty probe).
    """
    started = time.time()
    out = Path(out)
    if out.suffix != ".jsonl":
        raise UserError(f"--out {out} must be a .jsonl file (the labels fit-probe --labels reads)")
    check_output(out, overwrite=overwrite)
    if k < 1 or shard_size < 1 or temperature < 0:
        raise UserError(f"need --k >= 1, a shard size >= 1 and --temperature >= 0, got {k}, {shard_size} and {temperature}")
    rows = load_rows(prompts_path, prompt_field)
    index_by_id(rows, "id", "prompt")
    scorer = resolve_verifier(verifier)
    chosen = rows.subset(choose_subset(len(rows), fraction=fraction, count=count, seed=seed,
                                       minimum=labels_needed(PROBE_HELDOUT, classes=False), source=str(prompts_path),
                                       purpose="a difficulty probe"))

    def name(i: int) -> str:
        return f"prompt {chosen[i]['id']!r} ({where(chosen, i)})"

    scorer.check_rows(chosen, name)
    generator = Generator(model_path, backend=backend, chat_template=chat_template, device=device, dtype=dtype, gguf_file=gguf_file,
                          trust_remote_code=trust_remote_code, batch_size=batch_size, seed=seed, vllm_options=vllm_options)
    prompt_ids = generator.encode([row[prompt_field] for row in chosen])
    generator.check_context(prompt_ids, max_new_tokens, name)

    settings = {
        "model": _model_name(model_path), "gguf_file": gguf_file, "dtype": dtype, "backend": generator.backend,
        "chat_template": generator.chat_template, "verifier": scorer.name, "verifier_source_sha256": scorer.fingerprint,
        "k": k, "temperature": float(temperature), "max_new_tokens": max_new_tokens, "seed": seed, "shard_size": shard_size,
        "fraction": fraction, "count": count, "prompt_field": prompt_field,  # the inputs last: a message names a setting first
        "inputs_sha256": hashlib.sha256(json.dumps([list(chosen), prompt_ids], sort_keys=True, default=str).encode()).hexdigest(),
    }
    folder = shards_folder(out)
    resumed = _open_shards(folder, settings, overwrite)
    starts = range(0, len(chosen), shard_size)
    generated = 0  # prompts rolled out by this run (resumed shards are not)
    try:
        with tqdm(total=len(chosen), unit="prompt", desc="pass rates") as bar:
            for s, start in enumerate(starts):
                positions = range(start, min(start + shard_size, len(chosen)))
                path = folder / f"shard-{s:05d}.jsonl"
                if not path.exists():
                    texts = generator.generate_ids([prompt_ids[i] for i in positions], n=k, temperature=temperature,
                                                   max_new_tokens=max_new_tokens, seed=seed + s)
                    write_jsonl(path, [_label(chosen[i], completions, scorer, name(i), k) for i, completions in zip(positions, texts)])
                    generated += len(positions)
                bar.update(len(positions))
    except BaseException:
        if not any(folder.glob("shard-*.jsonl")):  # nothing finished to resume from: leave nothing behind
            shutil.rmtree(folder, ignore_errors=True)
        raise
    labels = _gather(folder, len(starts), [row["id"] for row in chosen])
    write_jsonl(out, labels)
    shutil.rmtree(folder)
    rates = np.array([row["pass_rate"] for row in labels])
    cut = sum(row.get("cut", 0) for row in labels)  # shards written before cut counts existed have none
    notes = []
    if np.ptp(rates) == 0:
        notes.append(f"all {len(rates)} pass rates are {rates[0]:g}: no signal for a difficulty probe (fit-probe refuses constant "
                     "labels); label again with a larger --k, another subset (--seed, --count) or another --temperature")
    if cut:
        notes.append(f"{cut} of {k * len(labels)} rollouts reached --max-new-tokens {max_new_tokens} before ending and were scored "
                     "as written (an answer still to come counts as wrong): give a larger --max-new-tokens if that is many")
    return {
        "labelled": len(labels), "prompts": len(rows), "k": k, "verifier": scorer.name, "backend": generator.backend,
        "chat_template": generator.chat_template, "mean_pass_rate": float(rates.mean()), "shards": len(starts),
        "shards_resumed": resumed, "rollouts_generated": k * generated, "rollouts_cut": cut,
        "seconds": round(time.time() - started, 1), "out": str(out), "note": " ".join(notes) or None,
    }


def _model_name(model_path: str | os.PathLike[str]) -> str:
    """A local folder as its absolute path (so a rerun from another folder matches), a Hub id as given."""
    path = Path(model_path).expanduser()
    return str(path.resolve()) if path.exists() else str(model_path)


def _open_shards(folder: Path, settings: dict[str, Any], overwrite: bool) -> int:
    """Make or reopen the shards folder for these settings; return how many finished shards it holds.

    Finished shards made with other settings are refused unless ``overwrite``
    (they would mix two labellings); a folder with no finished shard is simply
    started again.
    """
    settings = json.loads(json.dumps(settings))  # as read back: tuples become lists
    if folder.exists():
        finished = len(list(folder.glob("shard-*.jsonl")))
        recorded = read_json(folder / SETTINGS) if (folder / SETTINGS).exists() else {}
        if recorded == settings:
            return finished
        if finished and not overwrite:
            key = next(key for key in [*settings, *recorded] if settings.get(key) != recorded.get(key))
            what = ("from other prompts (the prompt file, or the prompts as the tokenizer reads them, changed)" if key == "inputs_sha256"
                    else f"with {key}={recorded.get(key)!r}, not {settings.get(key)!r}")
            raise UserError(f"{folder} holds {finished} finished shards labelled {what}: rerun with the same settings to resume, "
                            "or give --overwrite to start over")
        shutil.rmtree(folder)
    with atomic_folder(folder) as tmp:
        write_json(tmp / SETTINGS, settings)
    return 0


def _label(row: dict[str, Any], completions: list[Completion], scorer: Verifier, where: str, k: int) -> dict[str, Any]:
    rewards = [scorer.score(c.text, row, where) for c in completions]
    return {"id": row["id"], "pass_rate": float(np.mean(rewards)), "k": k, "rewards": rewards, "cut": sum(c.cut for c in completions)}


def _gather(folder: Path, n_shards: int, ids: list[Any]) -> list[dict[str, Any]]:
    """Every shard's rows in order, checked to be exactly the subset's prompts (a foreign shard is refused)."""
    labels = [row for s in range(n_shards) for row in load_rows(folder / f"shard-{s:05d}.jsonl", prompt_field=None)]
    if [row["id"] for row in labels] != ids:
        raise UserError(f"the shards in {folder} do not hold the labelled prompts in order: give --overwrite to start over")
    return labels
