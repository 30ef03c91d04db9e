"""Data-parallel featurization: 2 CPU ranks (gloo) give exactly the features of one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import saerl_zoo.featurizer as fz
from conftest import PROMPTS, make_char_tokenizer, make_tiny_llama, make_topk_sae
from saerl_zoo.distributed import featurize_distributed, merge_cache, shards_of_rank
from saerl_zoo.featurizer import featurize
from saerl_zoo.models import load_model
from saerl_zoo.storage import load_csr, save_csr
from saerl_zoo.zoo.api import load_sae

ROOT = Path(__file__).resolve().parents[1]
POOL = [f"{p} (variant {i})" for i in range(3) for p in PROMPTS]  # 21 prompts
SHARD = 4  # 6 shards: rank 0 gets 0, 2, 4 and rank 1 gets 1, 3, 5


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """A tiny model, tokenizer and TopK SAE saved to disk, as a multi-process job would load them."""
    folder = tmp_path_factory.mktemp("artifacts")
    tokenizer = make_char_tokenizer()
    model = make_tiny_llama(len(tokenizer))
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    make_topk_sae(32).save_model(folder / "sae")
    return folder


@pytest.fixture()
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # ranks run one thread each: same kernels as the reference
    yield
    torch.set_num_threads(old)


def single_process(artifacts) -> np.ndarray:
    model, tokenizer = load_model(artifacts / "model")
    return featurize(POOL, model, tokenizer, load_sae(artifacts / "sae"), batch_size=3, shard_size=SHARD, progress=False).toarray()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_worker(rank: int, world: int, port: int, artifacts: str, cache: str, out: str) -> None:
    """One torchrun-like rank: gloo process group from the environment, featurize its shards, merge."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    try:
        model, tokenizer = load_model(Path(artifacts) / "model")
        X = featurize_distributed(POOL, model, tokenizer, load_sae(Path(artifacts) / "sae"), cache_dir=cache,
                                  batch_size=3, shard_size=SHARD, progress=False)
        save_csr(Path(out) / f"rank{rank}.safetensors", X)
    finally:
        torch.distributed.destroy_process_group()


def test_shards_are_split_round_robin_and_cover_the_pool():
    owned = [shards_of_rank(21, 4, r, 3) for r in range(3)]
    assert owned == [[0, 3], [1, 4], [2, 5]]
    assert sorted(s for o in owned for s in o) == list(range(6))
    with pytest.raises(ValueError):
        shards_of_rank(21, 4, 3, 3)


def test_two_gloo_ranks_equal_one_process(tmp_path, artifacts, one_thread):
    cache, out = tmp_path / "cache", tmp_path / "out"
    out.mkdir()
    torch.multiprocessing.spawn(_rank_worker, args=(2, _free_port(), str(artifacts), str(cache), str(out)), nprocs=2, join=True)

    want = single_process(artifacts)
    for rank in (0, 1):  # every rank got the merged matrix
        np.testing.assert_array_equal(load_csr(out / f"rank{rank}.safetensors").toarray(), want)
    # each rank wrote its own shards into the shared cache, in featurize's layout: one folder for these inputs
    (folder,) = cache.iterdir()
    assert sorted(p.name for p in folder.glob("shard-*")) == [f"shard-{s:05d}.safetensors" for s in range(6)]
    assert json.loads((folder / "manifest.json").read_text())["shard_size"] == SHARD
    np.testing.assert_array_equal(merge_cache(folder).toarray(), want)


def test_cache_is_featurize_compatible_and_resumable(tmp_path, artifacts, one_thread, monkeypatch):
    """Ranks run one after the other with no process group; plain featurize then reads their cache."""
    model, tokenizer = load_model(artifacts / "model")
    sae = load_sae(artifacts / "sae")
    cache = tmp_path / "cache"
    kwargs = dict(cache_dir=cache, batch_size=3, shard_size=SHARD, world_size=2, progress=False)

    assert featurize_distributed(POOL, model, tokenizer, sae, rank=0, merge=False, **kwargs) is None
    (folder,) = cache.iterdir()
    assert sorted(p.name for p in folder.glob("shard-*")) == [f"shard-{s:05d}.safetensors" for s in (0, 2, 4)]
    with pytest.raises(FileNotFoundError, match="3 of 6 shards are missing"):
        merge_cache(folder)

    merged = featurize_distributed(POOL, model, tokenizer, sae, rank=1, **kwargs)  # no process group: no barrier
    want = single_process(artifacts)
    np.testing.assert_array_equal(merged.toarray(), want)

    def no_compute(*_args, **_kwargs):
        raise AssertionError("featurize recomputed a shard the ranks had cached")

    monkeypatch.setattr(fz, "_encode_batch", no_compute)
    np.testing.assert_array_equal(
        featurize(POOL, model, tokenizer, sae, batch_size=3, shard_size=SHARD, cache_dir=cache, progress=False).toarray(), want
    )
    again = featurize_distributed(POOL, model, tokenizer, sae, rank=0, **kwargs)  # resume: nothing left to do
    np.testing.assert_array_equal(again.toarray(), want)
    monkeypatch.undo()  # other inputs (max pooling) get a folder of their own, next to the first
    featurize_distributed(POOL, model, tokenizer, sae, rank=0, pooling="max", merge=False, **kwargs)
    assert len(list(cache.iterdir())) == 2 and len(list(folder.glob("shard-*"))) == 6


def test_torchrun_command_line(tmp_path, artifacts):
    prompts = tmp_path / "pool.jsonl"
    prompts.write_text("".join(json.dumps({"id": i, "prompt": p}) + "\n" for i, p in enumerate(POOL)))
    out = tmp_path / "features.safetensors"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
        "-m", "saerl_zoo.distributed", "--model", str(artifacts / "model"), "--sae", str(artifacts / "sae"),
        "--prompts", str(prompts), "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
        "--batch-size", "3", "--shard-size", str(SHARD), "--threads", "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "from 2 ranks" in proc.stdout
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        want = single_process(artifacts)
    finally:
        torch.set_num_threads(old)
    np.testing.assert_array_equal(load_csr(out).toarray(), want)
