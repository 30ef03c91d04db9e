"""The zoo commands: `saerl-zoo list | find | info | pull | publish | verify`.

Each is a plain click command, registered on the main group one by one
(`for cmd in COMMANDS: main.add_command(cmd)`), whose error handling turns bad
input into one clear line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click
import yaml

if TYPE_CHECKING:
    from saerl_zoo.zoo.directory import SaeRow

MAX_IDS_SHOWN = 40  # more sae-lens ids than this are shown one row per release (--ids shows them all)


def _table(rows: list[dict[str, str]], columns: list[str]) -> str:
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _metrics(row: SaeRow) -> str:
    m = row.metrics
    if row.kind == "sae":
        shown = [f"L0 {m['l0']:g}" if isinstance(m.get("l0"), (int, float)) else "",
                 f"EV {m['explained_variance']:.3f}" if isinstance(m.get("explained_variance"), (int, float)) else ""]
        return ", ".join(s for s in shown if s)
    if row.kind == "stitch":
        return f"EV {m['explained_variance']:.3f} (from {row.hook.split(':')[0] if row.hook else '?'})"
    heldout = m.get("heldout", {})
    keys = sorted(heldout, key=lambda k: (k not in ("spearman", "auroc"), k))[:2]
    return ", ".join(f"{k} {heldout[k]:.3f}" for k in keys if isinstance(heldout[k], (int, float)))


def _row(row: SaeRow, **extra: str) -> dict[str, str]:
    return {"name": row.name, "kind": row.kind, "model": row.model, "hook": row.hook or "?", "width": "" if row.d_sae is None else str(row.d_sae),
            "metrics": _metrics(row), "source": row.source, "where": row.where, "status": f"refused: {row.refused}" if row.refused else "ok", **extra}


def _span(values: list[int]) -> str:
    return "" if not values else (str(values[0]) if values[0] == values[-1] else f"{values[0]}-{values[-1]}")


def _by_release(rows: list[SaeRow], extra: dict[str, dict[str, str]]) -> list[dict[str, str]]:
    """One table row per sae-lens release: how many ids, which sites and layers."""
    groups: dict[str, list[SaeRow]] = {}
    for r in rows:
        groups.setdefault(r.release or r.name, []).append(r)
    out = []
    for release, members in groups.items():
        sites = sorted({r.site or "?" for r in members})
        layers = sorted({r.layer for r in members if r.layer is not None})
        widths = sorted({r.d_sae for r in members if r.d_sae is not None})
        refused = sorted({r.refused for r in members if r.refused})
        out.append({**_row(members[0], **extra.get(members[0].name, {})), "name": f"sae-lens:{release}/... ({len(members)} ids)",
                    "hook": f"{','.join(sites)} {'L' + _span(layers) if layers else ''}".strip(), "width": _span(widths), "metrics": "",
                    "status": f"refused: {','.join(refused)}" if refused else "ok"})
    return out


def _print_rows(rows: list[SaeRow], columns: list[str], ids: bool, extra: list[dict[str, str]] | None = None) -> None:
    """Zoo rows one by one; sae-lens rows one by one when few or --ids, else one per release."""
    lens = [r for r in rows if r.source == "sae-lens"]
    collapse = not ids and len(lens) > MAX_IDS_SHOWN
    extras = dict(zip([r.name for r in rows], extra)) if extra else {}
    table = [_row(r, **extras.get(r.name, {})) for r in rows if not (collapse and r.source == "sae-lens")]
    if collapse:
        table += _by_release(lens, extras)
    click.echo(_table(table, columns))
    if collapse:
        click.echo(f"{len(lens)} sae-lens SAEs shown as {len(table) - len(rows) + len(lens)} releases; "
                   "narrow with --model / --hook, or list every id with --ids (or --json)")


@click.command("list")
@click.option("--kind", type=click.Choice(["sae", "difficulty-probe", "quality-probe", "stitch"]), help="Only this kind of artifact.")
@click.option("--model", help="Only artifacts for this host model: its id, its name without the org, or a part of it (any case).")
@click.option("--hook", help="Only this hook: a site (resid_post, mlp_out, attn_out, z, ...), a layer (12), a hook name "
                             "(blocks.12.hook_resid_post) or whole dotted parts of one (attn.hook_z); a module path ending at a "
                             "decoder block (model.layers.12) also matches that block's resid_post.")
@click.option("--source", type=click.Choice(["zoo", "sae-lens", "all"]),
              help="zoo: the catalog; sae-lens: sae-lens's pretrained directory (offline, from its wheel). "
                   "Default: zoo, or all when --model or --hook is given.")
@click.option("--ids", is_flag=True, help="One row per sae-lens SAE id even when there are many (default: one per release).")
@click.option("--json", "as_json", is_flag=True, help="Print every row (each sae-lens id) as JSON.")
def list_cmd(kind, model, hook, source, ids, as_json):
    """List the zoo's artifacts and, with --source, sae-lens's pretrained SAEs."""
    from saerl_zoo.zoo.directory import all_rows, filter_rows

    source = source or ("all" if model or hook else "zoo")
    rows = filter_rows(all_rows(source, kind), model=model, hook=hook)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    if not rows:
        click.echo("no artifacts match")
    else:
        _print_rows(rows, ["name", "kind", "model", "hook", "width", "metrics", "source", "where", "status"], ids)
    if source == "zoo":
        click.echo("more SAEs: sae-lens's pretrained directory (`saerl-zoo list --source sae-lens`), "
                   "or `saerl-zoo find --model MODEL_ID` for one model")


@click.command("find")
@click.option("--model", "model_id", required=True, help="The policy model's Hub id (e.g. Qwen/Qwen2.5-7B-Instruct).")
@click.option("--hook", help="Only this hook (as for `saerl-zoo list --hook`).")
@click.option("--source", type=click.Choice(["zoo", "sae-lens", "all"]), default="all", show_default=True)
@click.option("--include-refused", is_flag=True, help="Also show SAEs load_sae refuses (pickle files, transcoders, unplaceable hooks).")
@click.option("--ids", is_flag=True, help="One row per sae-lens SAE id even when there are many.")
@click.option("--json", "as_json", is_flag=True, help="Print every suggestion as JSON.")
def find_cmd(model_id, hook, source, include_refused, ids, as_json):
    """Suggest SAEs for a model: its own, then its base/instruct sibling's, then its family's at other sizes (via transfer)."""
    from saerl_zoo.zoo.find import TIERS, suggest_saes

    found, refused = suggest_saes(model_id, hook=hook, include_refused=include_refused, source=source)
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in found], indent=2))
        return
    if not found:
        left = f" ({refused} more that load_sae refuses; --include-refused shows them)" if refused else ""
        click.echo(f"no known SAE for {model_id} or its family{left}; train one on your prompts with `saerl-zoo train-sae`")
        return
    for tier, label in TIERS.items():
        members = [s for s in found if s.tier == tier]
        if not members:
            continue
        click.echo(f"{tier}. {label} ({len(members)})")
        _print_rows([s.row for s in members], ["name", "model", "hook", "width", "metrics", "source", "note"], ids,
                    extra=[{"note": s.note} for s in members])
    if refused:
        click.echo(f"{refused} more that load_sae refuses (pickle files, transcoders, hooks it cannot place): --include-refused lists them")


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


COMMANDS = (list_cmd, find_cmd, info_cmd, pull_cmd, publish_cmd, verify_cmd)
