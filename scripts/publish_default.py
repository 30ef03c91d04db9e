#!/usr/bin/env python
"""Register and publish the embedded default (saerl-tiny-math/*) as zoo artifacts.

    python scripts/publish_default.py --update-catalog   # after build_default.py: refresh the
                                                         # built-in catalog entries (sha256s, metrics)
                                                         # and the rendered cards in cards/
    python scripts/publish_default.py --out runs/publish # dry run (default): write each Hub repo
                                                         # folder and print the operations
    python scripts/publish_default.py --upload --org ORG # really upload (needs HF token + network)

Each artifact is built by scripts/build_default.py (the recipe is in its docstring).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from saerl_zoo.zoo.builtin import HOST_MODEL_ID, PREFIX, default_entries  # noqa: E402
from saerl_zoo.zoo.publishing import CARDS_DIR, publish, render_card  # noqa: E402
from saerl_zoo.zoo.registry import BUILTIN_CATALOG, dump_catalog, read_catalog_file, read_header  # noqa: E402


def update_catalog() -> None:
    """Rewrite the built-in saerl-tiny-math/* entries from saerl_zoo/default and render their cards."""
    fresh = default_entries()
    entries, refs = read_catalog_file(BUILTIN_CATALOG)
    others = [e for e in entries if not e.name.startswith(f"{PREFIX}/")]
    dump_catalog(fresh + others, BUILTIN_CATALOG, header=read_header(BUILTIN_CATALOG), hub_catalogs=refs)
    print(f"wrote {len(fresh)} entries to {BUILTIN_CATALOG}")
    for art in fresh:
        path = CARDS_DIR / art.card
        path.parent.mkdir(parents=True, exist_ok=True)
        render_card(art).save(str(path))
        print(f"rendered {path}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--update-catalog", action="store_true", help="refresh the built-in entries and cards, then stop")
    p.add_argument("--org", default="saerl-zoo", help="Hub organisation (repo ids ORG/saerl-tiny-math-<artifact>)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "publish-default", help="where the repo folders are written")
    p.add_argument("--upload", action="store_true", help="upload for real (default: dry run, nothing leaves the machine)")
    p.add_argument("--catalog", type=Path, help="also write the published (hub) entries into this catalog file")
    args = p.parse_args(argv)
    if args.update_catalog:
        update_catalog()
        return
    from saerl_zoo.zoo.api import get_catalog

    names = [a.name for a in get_catalog().filter() if a.name.startswith(f"{PREFIX}/")]
    if not names:
        sys.exit("the built-in catalog has no saerl-tiny-math entries; run with --update-catalog first")
    model_repo = f"{args.org}/{HOST_MODEL_ID.split('/')[1]}"
    publish_host_model(model_repo, args.out / model_repo.replace("/", "--"), upload=args.upload)
    for name in names:
        repo = f"{args.org}/{name.replace('/', '-')}"
        overrides = {"model": {"id": model_repo}}
        if not name.endswith("/sae"):  # published probes read the published SAE
            overrides["features"] = f"{PREFIX}-hub/sae"
        result = publish(name, repo, name=name.replace(PREFIX, f"{PREFIX}-hub"), entry=overrides,
                         dry_run=not args.upload, out_dir=args.out / repo.replace("/", "--"), catalog=args.catalog)
        print(f"{name} -> {result.repo_id}: {result.folder}")


def publish_host_model(repo_id: str, out: Path, *, upload: bool) -> None:
    """The embedded policy itself, so the artifacts' base_model points at a real repo."""
    import shutil

    from huggingface_hub import HfApi, ModelCard, ModelCardData

    from saerl_zoo.embedded import default_path

    if out.exists() and any(out.iterdir()):
        sys.exit(f"{out} is not empty")
    shutil.copytree(default_path("model"), out, dirs_exist_ok=True)
    data = ModelCardData(library_name="transformers", license="apache-2.0", tags=["saerl-zoo", "tiny-math", "llama"], pipeline_tag="text-generation")
    text = (f"---\n{data.to_yaml()}\n---\n\n# {repo_id}\n\nThe tiny Llama math policy embedded in saerl-zoo, trained from "
            f"scratch on worked solutions (the recipe in scripts/build_default.py's docstring); host model of the {PREFIX}/* SAE and probes.\n")
    ModelCard(text).save(str(out / "README.md"))
    message = "saerl-zoo: publish the embedded tiny math policy"
    if not upload:
        print(f"dry run: wrote {out}; would run create_repo({repo_id!r}, exist_ok=True) and upload_folder({str(out)!r}, commit_message={message!r})")
        return
    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    print(api.upload_folder(repo_id=repo_id, folder_path=str(out), commit_message=message).commit_url)


if __name__ == "__main__":
    main()
