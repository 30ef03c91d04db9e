"""Where a catalog artifact's files are on this machine, and whether they are intact.

Every reader of SAE, probe and stitch files (:mod:`saerl_zoo.zoo.formats`,
:mod:`saerl_zoo.probe`, :mod:`saerl_zoo.transfer.maps`) calls
:func:`check_catalog_files` before opening a folder, so the catalog's sha256s
guard every route to a file. This module sits below those readers and below
:mod:`saerl_zoo.zoo.api` (which loads through them): it depends only on the
registry and the hub, so imports run one way.
"""

from __future__ import annotations

import os
from pathlib import Path

from saerl_zoo.zoo.hub import cached_snapshot, sae_lens_lookup, safe_join, storage_folder, verify_files
from saerl_zoo.zoo.registry import Artifact, get_catalog

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the saerl_zoo package folder


def package_folder(rel: str) -> Path:
    """A folder shipped inside the saerl_zoo package (paths may not leave it)."""
    return safe_join(PACKAGE_ROOT, rel)


def local_copy(art: Artifact) -> tuple[Path, Path] | None:
    """(folder, the boundary its files must stay in) of an artifact's files on this machine; None when not cached.

    Package and local entries are always here; Hub and sae-lens entries are
    looked up in the Hugging Face cache without any network call.
    """
    src = art.source
    if src.type == "package":
        return package_folder(src.path), PACKAGE_ROOT
    if src.type == "local":
        root = local_root(art)
        return safe_join(root, src.path), root
    repo_id, path, revision = src.repo_id, src.path, src.revision
    if src.type == "sae-lens":
        info = sae_lens_lookup(src.release, src.sae_id)
        repo_id, path, revision = info["repo_id"], info["path"], None
    snapshot = cached_snapshot(repo_id, revision)
    if snapshot is None:
        return None
    return safe_join(snapshot, path, within=storage_folder(snapshot)), storage_folder(snapshot)


def repair_advice(art: Artifact) -> str:
    """How to get a clean copy of a corrupt artifact: from where it came, which `pull --force` only is for Hub files."""
    if art.source.type == "package":
        return f"it ships inside saerl-zoo, so restore the package: {restore_package_command(package_folder(art.source.path))}"
    if art.source.type == "local":
        return f"restore it from your own copy, or refit it and update its entry in {art.origin}"
    return f"delete it or fetch a clean copy with `saerl-zoo pull {art.name} --force`"


def restore_package_command(folder: Path) -> str:
    """The command that puts back `folder`, shipped in the package: git in a source checkout, else pip."""
    import json
    from importlib import metadata

    source = PACKAGE_ROOT.parent
    if (source / ".git").exists():  # an editable install or PYTHONPATH: reinstalling would not touch these files
        return f"git -C {source} checkout -- {folder.relative_to(source).as_posix()}"
    try:
        dist = metadata.distribution("saerl-zoo")
    except metadata.PackageNotFoundError:
        return "reinstall saerl-zoo"
    origin = json.loads(dist.read_text("direct_url.json") or "{}")  # PEP 610: how it was installed
    if origin.get("url") and not origin.get("dir_info", {}).get("editable"):
        return f'pip install --force-reinstall --no-deps "saerl-zoo @ {origin["url"]}"'
    return f'pip install --force-reinstall --no-deps "saerl-zoo=={dist.version}"'


def check_catalog_files(folder: str | os.PathLike[str]) -> None:
    """If `folder` holds the local copy of a catalog artifact, check its files' sha256 before anything reads them.

    Why: the catalog's sha256s must guard every route to a file it knows — its
    name, the package folder's path (`default_path("sae")`), a path into the
    Hugging Face cache — not only loads by name. Each SAE, probe and stitch
    reader calls this first. Digests are kept per file version
    (`sha256_file`), so after the first load a check costs a `stat` per file.
    """
    real = Path(folder).resolve()
    in_hub_cache = "snapshots" in real.parts
    for art in get_catalog().filter():
        if not art.files or (art.source.type in ("hub", "sae-lens") and not in_hub_cache):
            continue
        try:
            copy = local_copy(art)
        except (KeyError, ValueError):  # an entry whose files have no place here (e.g. a local one listed from a dict)
            continue
        if copy is not None and copy[0].resolve() == real:
            verify_files(copy[0], art.files, where=f"artifact {art.name!r}", advice=repair_advice(art), within=copy[1])


def local_root(art: Artifact) -> Path:
    """The folder a `local` entry's path is relative to: that of the catalog file listing it."""
    origin = Path(art.origin)
    if not art.origin or not origin.is_file():
        raise ValueError(f"artifact {art.name!r} has a local source, which only a catalog file (not {art.origin or 'a dict'}) can list")
    return origin.resolve().parent
