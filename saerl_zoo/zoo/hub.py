"""Files of zoo artifacts: fetching through the Hugging Face cache, sha256 checks, safe paths, sae-lens releases' Hub location.

Downloads go through `huggingface_hub.snapshot_download`, so they land in the
standard cache (`HF_HOME` / `HF_HUB_CACHE`), honour `HF_HUB_OFFLINE` (then
only the cache is read) and pin revisions. Only safetensors, JSON, YAML and
Markdown files are ever requested or opened: pickle checkpoints (`.pt`, `.bin`,
`.pkl`, `.ckpt`) are never downloaded nor loaded. Every path taken from a
catalog, a repo or a caller is checked to stay inside its folder.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from saerl_zoo.errors import UserError
from saerl_zoo.zoo.registry import CatalogError, check_relative_path

SAFE_SUFFIXES = (".safetensors", ".json", ".yaml", ".yml", ".md", ".txt", ".model", ".jinja")
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt", ".npy", ".joblib")
ALLOWED_PATTERNS = ["*.safetensors", "*.json", "*.yaml", "*.yml", "*.md", "*.txt", "*.model", "*.jinja"]


class IntegrityError(UserError):
    """A file whose sha256 does not match the catalog: it is not used."""


class UnsafePathError(UserError):
    """A name or path that would leave the folder it must stay in."""


_DIGESTS: dict[tuple[str, int, int, int, int, int], str] = {}


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """sha256 of a file, hashed once per version of it in this process.

    Every load of a catalog artifact checks its files (whichever route it comes
    by), so repeated loads must cost a `stat`, not a re-read: the digest is kept
    per real path, inode, size, mtime and ctime, and any write changes those.
    """
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(chunk):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def hash_folder(folder: str | os.PathLike[str], files: Iterable[str] | None = None) -> dict[str, str]:
    """sha256 of each (or of the given) regular file under `folder`, keyed by '/'-separated relative path."""
    folder = Path(folder)
    if files is None:
        rels = (p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
        files = sorted(r.as_posix() for r in rels if not any(part.startswith(".") for part in r.parts))
    return {rel: sha256_file(safe_join(folder, rel)) for rel in files}


def safe_relative(path: str | None, what: str = "path") -> str:
    """Validate a caller-given path inside a repo/cache folder ('' or None = the root)."""
    if path is None:
        return ""
    path = str(path).strip("/") if not str(path).startswith("/") else str(path)
    try:
        return check_relative_path(path, what)
    except CatalogError as err:
        raise UnsafePathError(str(err)) from None


def safe_join(root: str | os.PathLike[str], rel: str, *, within: str | os.PathLike[str] | None = None) -> Path:
    """`root / rel`, refusing `..`, absolute parts and links that resolve outside `within` (default: root).

    Hugging Face snapshots are symlinks into the repo's `blobs/` folder, so for a
    snapshot `within` is the repo's storage folder, not the snapshot itself.
    """
    rel = safe_relative(rel)
    root = Path(root)
    path = root / rel if rel else root
    boundary = Path(within if within is not None else _default_boundary(root)).resolve()
    real = path.resolve()
    if real != boundary and boundary not in real.parents:
        raise UnsafePathError(f"{path} resolves to {real}, outside {boundary}; refusing to read it")
    return path


def _default_boundary(root: Path) -> Path:
    """The folder paths under `root` must stay in: the repo storage folder for a HF snapshot, else root."""
    for parent in [root, *root.parents]:
        if parent.parent.name == "snapshots" and parent.parent.parent.name.startswith(("models--", "datasets--", "spaces--")):
            return parent.parent.parent
    return root


def verify_files(folder: str | os.PathLike[str], files: dict[str, str], *, where: str, advice: str,
                 within: str | os.PathLike[str] | None = None) -> None:
    """Check that every listed file exists under `folder` with the listed sha256.

    `advice` ends the error: how to get a clean copy, which depends on where the
    artifact comes from (reinstall the package, or pull again from the Hub).
    """
    for rel, expected in sorted(files.items()):
        path = safe_join(folder, rel, within=within)
        if not path.is_file():
            raise FileNotFoundError(f"{where}: file {rel} is missing from {folder}; {advice}")
        got = sha256_file(path)
        if got != expected:
            raise IntegrityError(
                f"{where}: sha256 mismatch for {rel} ({path}): the catalog says {expected}, the file has {got}. "
                f"The file was changed or corrupted and is not used; {advice}"
            )


def refuse_pickles(folder: Path, what: str) -> None:
    """Raise if a folder holds weights only as pickle files (which are never loaded)."""
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES) if folder.is_dir() else []
    safetensors = [p for p in folder.iterdir() if p.suffix == ".safetensors"] if folder.is_dir() else []
    if pickles and not safetensors:
        raise ValueError(
            f"{what} in {folder} holds only pickle files ({', '.join(pickles)}); saerl-zoo never loads pickle files "
            "because they can run code. Convert them to safetensors first."
        )


def storage_folder(snapshot: Path) -> Path:
    """`.../models--org--name` for `.../models--org--name/snapshots/<commit>`."""
    return snapshot.parent.parent if snapshot.parent.name == "snapshots" else snapshot


def download_snapshot(
    repo_id: str,
    *,
    revision: str | None = None,
    subfolder: str = "",
    filenames: Iterable[str] | None = None,
    force_download: bool = False,
) -> Path:
    """Fetch (or find in the HF cache) the safe files of one folder of a Hub repo; return that folder."""
    from huggingface_hub import snapshot_download

    subfolder = safe_relative(subfolder, "subfolder")
    prefix = f"{subfolder}/" if subfolder else ""
    if filenames is not None:
        patterns = [prefix + safe_relative(f, "file name") for f in filenames]
    else:
        patterns = [prefix + p for p in ALLOWED_PATTERNS]
    snapshot = Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns, force_download=force_download))
    return safe_join(snapshot, subfolder, within=storage_folder(snapshot))


def cached_snapshot(repo_id: str, revision: str | None) -> Path | None:
    """The cached snapshot folder of a repo revision, without any network call (None if absent)."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    storage = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")
    revision = safe_relative(revision or "main", "revision")
    commit = revision
    ref = storage / "refs" / revision
    if ref.is_file():
        commit = ref.read_text().strip()
    snapshot = storage / "snapshots" / commit
    return snapshot if snapshot.is_dir() else None


def sae_lens_lookup(release: str, sae_id: str) -> dict[str, Any]:
    """Resolve a sae-lens registry release/id offline: repo, folder, converter, expected metrics."""
    import difflib

    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    if release not in directory:
        close = difflib.get_close_matches(release, list(directory), n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"{release!r} is not a release in sae-lens's pretrained registry{hint}")
    info = directory[release]
    if sae_id not in info.saes_map:
        close = difflib.get_close_matches(sae_id, list(info.saes_map), n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"sae-lens release {release!r} has no SAE {sae_id!r}{hint}")
    return {
        "release": release,
        "sae_id": sae_id,
        "repo_id": info.repo_id,
        "path": info.saes_map[sae_id],
        "model": info.model,
        "converter": info.conversion_func or "sae_lens",
        "l0": info.expected_l0.get(sae_id),
        "explained_variance": info.expected_var_explained.get(sae_id),
        "norm_scaling_factor": info.norm_scaling_factor.get(sae_id),
        "config_overrides": dict(info.config_overrides or {}),
    }
