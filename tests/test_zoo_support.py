"""Helpers for the zoo tests: an offline Hugging Face cache laid out the way huggingface_hub lays it out.

`offline_hub` points huggingface_hub at a fresh cache under tmp_path with
HF_HUB_OFFLINE=1 (the environment variables for subprocesses, and the module
constants huggingface_hub read at import time). `add_repo` copies a local
folder into that cache with huggingface_hub's own helpers and layout:
`models--org--name/blobs/<etag>`, `snapshots/<commit>/<path>` symlinks,
`refs/<revision>` and the `trees/<commit>.json` listing, which is exactly what
`snapshot_download` / `hf_hub_download` read when offline.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_sae

D_IN = 32


def _setup_offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    from huggingface_hub import constants

    home = tmp_path / "hf_home"
    cache = home / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.delenv("SAERL_ZOO_CATALOG", raising=False)
    monkeypatch.delenv("SAERL_ZOO_HUB_CATALOGS", raising=False)
    from saerl_zoo.zoo import registry

    registry._CATALOG_CACHE.clear()
    return cache


@pytest.fixture()
def offline_hub(monkeypatch, tmp_path) -> Path:
    return _setup_offline_hub(monkeypatch, tmp_path)


def add_repo(cache: Path, repo_id: str, folder: Path, *, revision: str = "main", prefix: str = "") -> str:
    """Put the files of `folder` (under `prefix/` in the repo) into the HF cache as one commit; return the commit."""
    from huggingface_hub._tree_cache import TreeCacheEntry, write_tree_cache
    from huggingface_hub.file_download import _cache_commit_hash_for_specific_revision, _create_symlink, repo_folder_name
    from huggingface_hub.utils.sha import git_hash

    storage = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    commit = hashlib.sha1(b"".join(p.read_bytes() + str(p.relative_to(folder)).encode() for p in files) + repo_id.encode()).hexdigest()
    entries = {}
    for path in files:
        rel = "/".join(x for x in (prefix, path.relative_to(folder).as_posix()) if x)
        data = path.read_bytes()
        blob_id = git_hash(data)
        if path.suffix == ".safetensors":  # large files are LFS: the etag is their sha256
            etag = hashlib.sha256(data).hexdigest()
            entries[rel] = TreeCacheEntry(size=len(data), blob_id=blob_id, lfs_sha256=etag, lfs_size=len(data))
        else:
            etag = blob_id
            entries[rel] = TreeCacheEntry(size=len(data), blob_id=blob_id)
        blob = storage / "blobs" / etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, blob)
        pointer = storage / "snapshots" / commit / rel
        pointer.parent.mkdir(parents=True, exist_ok=True)
        _create_symlink(str(blob), str(pointer), new_blob=False)
    _cache_commit_hash_for_specific_revision(str(storage), revision, commit)
    write_tree_cache(str(storage), commit, entries)
    return commit


def tiny_sae(seed: int = 0, hook: str = "model.layers.1"):
    return make_tiny_sae(D_IN, 64, hook_name=hook, seed=seed)


def acts(n: int = 20, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(n, D_IN)


def sae_entry(name: str, *, repo_id: str | None = None, path: str = "model.layers.1", files: dict[str, str] | None = None, **over) -> dict:
    """A valid catalog entry for a tiny SAE (hub source unless overridden)."""
    entry = {
        "name": name,
        "kind": "sae",
        "description": "tiny test SAE",
        "model": {"id": "test-org/tiny-llama", "revision": "main"},
        "hook": {"module": "model.layers.1", "site": "resid_out", "layer": 1},
        "sae": {"architecture": "standard", "d_in": D_IN, "d_sae": 64},
        "source": {"type": "hub", "format": "sae-lens", "repo_id": repo_id or "test-org/tiny-sae", "revision": "main", "path": path},
        "files": files or {"cfg.json": "0" * 64},
        "license": "apache-2.0",
        "metrics": {"l0": 30.0, "explained_variance": 0.5, "dead_fraction": 0.0, "eval_set": "random test activations"},
        "preprocessing": {"context_length": 64, "special_tokens": "drop"},
    }
    for key, value in over.items():
        entry[key] = value
    return entry


def write_catalog(path: Path, entries: list[dict], **extra) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"version": 1, "artifacts": entries, **extra}, sort_keys=False))
    return path
