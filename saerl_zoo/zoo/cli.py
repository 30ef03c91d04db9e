"""The zoo commands: `saerl-zoo list | info | pull | publish | verify`.

Each is a plain click command, registered on the main group one by one
(`for cmd in COMMANDS: main.add_command(cmd)`), whose error handling turns bad
input into one clear line.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import yaml


def _table(rows: list[dict[str, str]], columns: list[str]) -> str:
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


@click.command("list")
@click.option("--kind", type=click.Choice(["sae", "difficulty-probe", "quality-probe", "stitch"]), help="Only this kind of artifact.")
@click.option("--model", help="Only artifacts for host models whose id contains this.")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
def list_cmd(kind, model, as_json):
    """List the zoo's artifacts (built-in, SAERL_ZOO_CATALOG files, pinned Hub catalogs)."""
    from saerl_zoo.zoo.api import list_artifacts

    arts = list_artifacts(kind=kind, model=model)
    if as_json:
        click.echo(json.dumps([a.to_dict() for a in arts], indent=2))
        return
    if not arts:
        click.echo("no artifacts match")
        return
    rows = []
    for a in arts:
        m = a.metrics
        if a.kind == "sae":
            metrics = f"L0 {m['l0']:g}, EV {m['explained_variance']:.3f}"
            width = f"{a.sae.d_sae}" if a.sae else ""
        elif a.kind == "stitch":
            metrics, width = f"EV {m['explained_variance']:.3f} (from {a.hook.module})", ""
        else:
            heldout = m.get("heldout", {})
            keys = sorted(heldout, key=lambda k: (k not in ("spearman", "auroc"), k))[:2]
            metrics = ", ".join(f"{k} {heldout[k]:.3f}" for k in keys if isinstance(heldout[k], (int, float)))
            width = ""
        where = a.source.type if a.source.type in ("package", "local") else (a.source.repo_id or f"sae-lens:{a.source.release}")
        rows.append({"name": a.name, "kind": a.kind, "model": a.model.id, "hook": f"{a.hook.module}:{a.hook.site}", "width": width, "metrics": metrics, "source": where})
    click.echo(_table(rows, ["name", "kind", "model", "hook", "width", "metrics", "source"]))


@click.command("info")
@click.argument("name")
@click.option("--yaml", "as_yaml", is_flag=True, help="Print the catalog entry instead of the card.")
def info_cmd(name, as_yaml):
    """Show an artifact's model card (or its catalog entry)."""
    from saerl_zoo.zoo.api import get_artifact
    from saerl_zoo.zoo.publishing import CARDS_DIR, render_card

    art = get_artifact(name)
    text = None
    if not as_yaml:
        if art.card and (CARDS_DIR / art.card).is_file():
            text = (CARDS_DIR / art.card).read_text()
        else:
            try:
                text = str(render_card(art))
            except FileNotFoundError:
                text = None
    if text is None:
        text = yaml.safe_dump(art.to_dict(), sort_keys=False, width=100)
    click.echo(text)


@click.command("pull")
@click.argument("name")
@click.option("--force", is_flag=True, help="Download again even if cached.")
def pull_cmd(name, force):
    """Download an artifact into the Hugging Face cache and check every sha256."""
    from saerl_zoo.zoo.api import pull

    folder = pull(name, force=force)
    click.echo(f"{name}: ok (sha256 verified) → {folder}")


@click.command("publish")
@click.argument("path")
@click.option("--repo-id", required=True, help="Hub repo to create/upload, ORG/NAME.")
@click.option("--name", help="Catalog name of the published artifact. Default: the catalog name or the repo name.")
@click.option("--entry", "entry_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML with catalog fields the folder cannot tell (model, hook site, metrics, license, ...).")
@click.option("--path-in-repo", help="Folder inside the repo. Default: the hook name for an SAE, the root for a probe or stitch.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Where to write the repo folder (must be empty).")
@click.option("--catalog", type=click.Path(dir_okay=False, path_type=Path), help="Add/update the entry in this catalog file.")
@click.option("--commit-message", help="Commit message of the upload.")
@click.option("--private", is_flag=True, help="Create the repo as private.")
@click.option("--dry-run", is_flag=True, help="Write the exact folder and print the operations; upload nothing.")
def publish_cmd(path, repo_id, name, entry_file, path_in_repo, out_dir, catalog, commit_message, private, dry_run):
    """Publish PATH (a catalog name or an SAE, probe or stitch folder) to the Hub with a model card."""
    from saerl_zoo.zoo.publishing import publish

    entry = yaml.safe_load(entry_file.read_text()) if entry_file else None
    result = publish(path, repo_id, entry=entry, name=name, path_in_repo=path_in_repo, out_dir=out_dir, catalog=catalog,
                     commit_message=commit_message, private=private, dry_run=dry_run, echo=click.echo)
    click.echo("catalog entry:")
    click.echo(yaml.safe_dump({"artifacts": [result.entry.to_dict()]}, sort_keys=False, width=100))


@click.command("verify")
@click.argument("names", nargs=-1)
def verify_cmd(names):
    """Re-hash the local copies (package / HF cache) of catalog artifacts against their sha256s."""
    from saerl_zoo.zoo.api import verify_cache

    rows = verify_cache(list(names) or None)
    shown = [{**r, "detail": r["detail"] if r["status"] != "MISMATCH" else r["detail"].split(": sha256 mismatch for ")[-1].split(" (")[0] + " differs"} for r in rows]
    click.echo(_table(shown, ["name", "status", "detail"]))
    bad = [r for r in rows if r["status"] in ("MISMATCH", "missing file")]
    if bad:
        advice = "; ".join(dict.fromkeys(f"{r['name']}: {r['advice']}" for r in bad))
        raise click.ClickException(f"local files do not match the catalog and will not be used. {advice}")


COMMANDS = (list_cmd, info_cmd, pull_cmd, publish_cmd, verify_cmd)
