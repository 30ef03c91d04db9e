"""Data-parallel featurization: one slice of the prompt pool per rank, a shared cache, a merge.

A pool of 10^5-10^6 prompts is cut into the shards `featurize` already uses
(``shard_size`` prompts each, cached as ``shard-00000.safetensors`` ... next
to a ``manifest.json``, in the cache's subfolder for these inputs). Rank r of W computes shards r, r + W, r + 2W, ... and
writes each one atomically into the shared cache folder; after a barrier,
:func:`merge_cache` stacks all shards into the full matrix. The folder is the
very cache `featurize` reads, so:

* a killed job resumes: shards already in the folder are skipped, whichever
  rank or run wrote them;
* ``featurize(prompts, ..., cache_dir=folder)`` on one process afterwards
  loads the result without computing anything;
* the features equal those of a one-process `featurize` with the same
  ``shard_size``, whatever the number of ranks (a shard's batches only depend
  on its own prompts).

Rank and world size come from ``torch.distributed`` when a process group is
initialised, else from the ``RANK`` / ``WORLD_SIZE`` environment variables
that ``torchrun`` and ``accelerate launch`` set. Run it on a multi-GPU node
with the module's command line::

    torchrun --nproc-per-node 8 -m saerl_zoo.distributed \\
        --model Qwen/Qwen2.5-1.5B-Instruct --sae ./sae --prompts pool.jsonl \\
        --cache-dir /shared/feats-cache --out pool.features.safetensors

Each rank puts its model on ``cuda:LOCAL_RANK``; the gloo process group is
used only for barriers, so NCCL is not needed.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from saerl_zoo.featurizer import POOLINGS, FeaturizeJob, Pooling, shard_path
from saerl_zoo.storage import load_csr, read_json, save_csr

__all__ = ["featurize_distributed", "merge_cache", "rank_and_world", "shards_of_rank", "main"]

MANIFEST = "manifest.json"


def rank_and_world() -> tuple[int, int]:
    """This process's (rank, world size): from torch.distributed if initialised, else RANK/WORLD_SIZE, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={world} are inconsistent")
    return rank, world


def shards_of_rank(n_prompts: int, shard_size: int, rank: int, world_size: int) -> list[int]:
    """The cache shards rank `rank` computes: round-robin, so ranks get interleaved slices of the pool."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    return list(range(rank, math.ceil(n_prompts / shard_size), world_size))


def merge_cache(cache_dir: str | os.PathLike[str]) -> sp.csr_matrix:
    """Stack every shard of one featurize cache folder into the full (n_prompts × d_sae) CSR matrix.

    `cache_dir` is the folder of one input set (the `<cache root>/<key>` that
    `FeaturizeJob.cache` names), the one holding manifest.json and the shards.
    """
    cache_dir = Path(cache_dir)
    manifest = read_json(cache_dir / MANIFEST)
    n, size = int(manifest["n_prompts"]), int(manifest["shard_size"])
    n_shards = math.ceil(n / size)
    missing = [s for s in range(n_shards) if not shard_path(cache_dir, s).exists()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {n_shards} shards are missing in {cache_dir} (first: {missing[:5]}); "
            "run the remaining ranks (or featurize_distributed again) to compute them"
        )
    shards = []
    for s in range(n_shards):
        shard = load_csr(shard_path(cache_dir, s))
        expected = min(size, n - s * size)
        if shard.shape[0] != expected or shard.shape[1] != int(manifest["d_sae"]):
            raise ValueError(f"{shard_path(cache_dir, s)} has shape {shard.shape}, expected ({expected}, {manifest['d_sae']})")
        shards.append(shard)
    return sp.vstack(shards, format="csr")


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def featurize_distributed(
    prompts: Sequence[str],
    model: torch.nn.Module,
    tokenizer: Any,
    sae: Any,
    *,
    cache_dir: str | os.PathLike[str],
    layer: int | None = None,
    pooling: Pooling = "mean",
    batch_size: int = 32,
    max_length: int = 512,
    shard_size: int = 4096,
    rank: int | None = None,
    world_size: int | None = None,
    merge: bool = True,
    progress: bool = True,
) -> sp.csr_matrix | None:
    """`featurize` with the shards split across ranks; every rank passes the full prompt list.

    This rank computes its shards (see :func:`shards_of_rank`) into the shared
    ``cache_dir``, skipping those already there. With ``merge`` it then waits
    for all ranks (a barrier when a process group is initialised) and returns
    the full matrix; without, it returns None once its own shards are written.
    Without a process group, run the merge yourself once every rank is done:
    :func:`merge_cache` (or ``featurize(..., cache_dir=...)``).
    """
    job = FeaturizeJob.prepare(prompts, model, tokenizer, sae, layer, pooling, batch_size, max_length, shard_size, cache_dir)
    env_rank, env_world = rank_and_world()
    rank = env_rank if rank is None else int(rank)
    world_size = env_world if world_size is None else int(world_size)
    # Every rank checked the manifest in prepare (same inputs give the same
    # fingerprint on every rank, so a concurrent first write is the same file twice).
    todo = [s for s in shards_of_rank(len(job.prompts), shard_size, rank, world_size) if not job.shard_path(s).exists()]
    total = sum(len(job.shard_texts(s)) for s in todo)
    with job.running(), tqdm(total=total, desc=f"featurize rank {rank}/{world_size}", unit="prompt", disable=not progress) as bar:
        for s in todo:
            job.compute_shard(s, bar)
    if not merge:
        return None
    _barrier()
    return merge_cache(job.cache)


# ---------------------------------------------------------------- command line (for torchrun / accelerate launch)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="torchrun --nproc-per-node N -m saerl_zoo.distributed",
        description="Featurize a prompt pool data-parallel: one slice of the shards per rank, a shared cache, rank 0 merges.",
    )
    p.add_argument("--model", required=True, help="HF causal LM folder or Hub id")
    p.add_argument("--sae", required=True, help="sae-lens SAE folder / zoo name for that model")
    p.add_argument("--prompts", required=True, type=Path, help="jsonl or parquet prompt set")
    p.add_argument("--prompt-field", default="prompt")
    p.add_argument("--cache-dir", required=True, type=Path, help="shared folder for the shards (all ranks must see it)")
    p.add_argument("--out", type=Path, help="feature file rank 0 writes after the merge (.safetensors)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out (without it, an existing --out is refused)")
    p.add_argument("--layer", type=int)
    p.add_argument("--pooling", choices=POOLINGS, default="mean")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--shard-size", type=int, default=4096)
    p.add_argument("--device", default="auto", help="auto = cuda:LOCAL_RANK when CUDA is available, else cpu")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="model dtype (auto: bfloat16 on GPU, float32 on CPU)")
    p.add_argument("--threads", type=int, help="torch CPU threads per rank (default: torch's)")
    p.add_argument("--trust-remote-code", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    from saerl_zoo.data import load_rows
    from saerl_zoo.models import load_model
    from saerl_zoo.storage import check_output
    from saerl_zoo.zoo.api import load_sae

    if args.out is not None:
        check_output(args.out, overwrite=args.overwrite)

    if args.threads:
        torch.set_num_threads(args.threads)
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    started_group = False
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo", timeout=timedelta(hours=12))  # barriers only
        started_group = True
    try:
        device = args.device
        if device == "auto":
            device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(args.dtype)
        if dtype is None:
            dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        rows = load_rows(args.prompts, args.prompt_field)
        model, tokenizer = load_model(args.model, device=device, dtype=dtype, trust_remote_code=args.trust_remote_code)
        sae = load_sae(args.sae, device=device)
        rank, world = rank_and_world()
        X = featurize_distributed(
            [r[args.prompt_field] for r in rows], model, tokenizer, sae, cache_dir=args.cache_dir, layer=args.layer,
            pooling=args.pooling, batch_size=args.batch_size, max_length=args.max_length, shard_size=args.shard_size,
            progress=rank == 0,
        )
        if rank == 0:
            if args.out is not None:
                save_csr(args.out, X, {"pooling": args.pooling, "layer": str(args.layer), "world_size": str(world)})
            print(f"{X.shape[0]} × {X.shape[1]} features ({X.nnz / X.shape[0]:.1f} active per prompt) from {world} ranks"
                  + (f" → {args.out}" if args.out else ""), flush=True)
    finally:
        if started_group:
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
