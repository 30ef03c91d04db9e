"""Publishing (dry run and a mocked upload), model cards, verify=True on the reference text, and the CLI."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import make_char_tokenizer, make_tiny_llama
from huggingface_hub import ModelCard
from sae_lens import SAE
from test_zoo_support import D_IN, acts, add_repo, offline_hub, sae_entry, tiny_sae, write_catalog  # noqa: F401

from saerl_zoo.zoo import api, registry
from saerl_zoo.cli import main
from saerl_zoo.zoo.formats import save_sae
from saerl_zoo.zoo.hub import hash_folder
from saerl_zoo.zoo.publishing import publish, validate_card
from saerl_zoo.zoo.registry import CatalogError, read_catalog_file

ENTRY = {
    "model": {"id": "test-org/tiny-llama", "revision": "main"},
    "hook": {"site": "resid_out"},
    "license": "apache-2.0",
    "description": "tiny test SAE on block 1 of a random tiny Llama",
    "metrics": {"l0": 30.0, "explained_variance": 0.5, "dead_fraction": 0.0, "eval_set": "random activations"},
    "preprocessing": {"context_length": 64, "special_tokens": "drop"},
    "training": {"data": "none (random weights)", "tokens": 0, "steps": 0, "seed": 0, "command": "make_tiny_sae(32)"},
    "limitations": ["random weights: for tests only"],
}


@pytest.fixture()
def host_model(offline_hub, tmp_path):
    """A tiny Llama + tokenizer as the Hub repo test-org/tiny-llama in the offline cache."""
    tokenizer = make_char_tokenizer()
    model = make_tiny_llama(len(tokenizer), hidden=D_IN)
    folder = tmp_path / "tiny-llama"
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    add_repo(offline_hub, "test-org/tiny-llama", folder)
    return model, tokenizer


def test_publish_dry_run_writes_the_exact_repo_folder(offline_hub, tmp_path, capsys):
    sae = tiny_sae()
    src = save_sae(sae, tmp_path / "src")
    out = tmp_path / "out"
    catalog = tmp_path / "mine.yaml"
    result = publish(src, "test-org/tiny-sae", entry=ENTRY, name="test/tiny-sae", dry_run=True, out_dir=out, catalog=catalog, reference=False)
    printed = capsys.readouterr().out
    assert "dry run" in printed and "create_repo(repo_id='test-org/tiny-sae'" in printed and "upload_folder(" in printed
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "README.md", "model.layers.1/cfg.json", "model.layers.1/sae_weights.safetensors"]
    # sae-lens loads the published folder unchanged, with identical codes
    assert torch.equal(SAE.load_from_disk(str(out / "model.layers.1")).encode(acts()), sae.encode(acts()))
    # the card parses with huggingface_hub and its metadata validates
    card = ModelCard.load(out / "README.md")
    validate_card(card)
    data = card.data.to_dict()
    assert data["library_name"] == "saelens" and data["base_model"] == "test-org/tiny-llama"
    assert data["base_model_relation"] == "adapter" and data["license"] == "apache-2.0"
    assert {r.metric_type for r in card.data.eval_results} == {"l0", "explained_variance", "dead_fraction"}
    for section in ("## What it is for in SaeRL", "## Host model and hook", "## Training", "## Metrics", "## Limitations", "## Usage"):
        assert section in card.text
    assert 'SAE.from_pretrained("test-org/tiny-sae", "model.layers.1")' in card.text
    # the entry carries sha256s of exactly the uploaded files and is written to the catalog
    art = result.entry
    assert art.files == hash_folder(out / "model.layers.1")
    assert (art.source.type, art.source.repo_id, art.source.path) == ("hub", "test-org/tiny-sae", "model.layers.1")
    assert art.hook.module == "model.layers.1" and art.hook.layer == 1 and art.sae.d_sae == 64
    entries, _ = read_catalog_file(catalog)
    assert [e.name for e in entries] == ["test/tiny-sae"]


def test_published_repo_loads_by_name_and_repo_id(offline_hub, tmp_path, monkeypatch):
    sae = tiny_sae()
    out = tmp_path / "out"
    catalog = tmp_path / "mine.yaml"
    publish(save_sae(sae, tmp_path / "src"), "test-org/tiny-sae", entry=ENTRY, name="test/tiny-sae", dry_run=True, out_dir=out, catalog=catalog, reference=False, echo=lambda *_: None)
    add_repo(offline_hub, "test-org/tiny-sae", out)  # as if uploaded, then downloaded
    monkeypatch.setenv("SAERL_ZOO_CATALOG", str(catalog))
    for loaded in (api.load_sae("test/tiny-sae"), api.load_sae("test-org/tiny-sae", subfolder="model.layers.1")):
        assert torch.equal(loaded.encode(acts()), sae.encode(acts()))
    # sae-lens alone loads the published repo from the Hub (here: the offline cache), as the card says
    assert torch.equal(SAE.from_pretrained("test-org/tiny-sae", "model.layers.1").encode(acts()), sae.encode(acts()))


def test_publish_reports_missing_fields(tmp_path):
    src = save_sae(tiny_sae(), tmp_path / "src")
    entry = copy.deepcopy(ENTRY)
    del entry["metrics"]["eval_set"]
    with pytest.raises(CatalogError, match="field metrics.eval_set"):
        publish(src, "test-org/tiny-sae", entry=entry, dry_run=True, out_dir=tmp_path / "out", reference=False, echo=lambda *_: None)
    with pytest.raises(ValueError, match="ORG/NAME"):
        publish(src, "no-org", entry=ENTRY, dry_run=True, out_dir=tmp_path / "out2")


def test_publish_uploads_with_create_repo_and_upload_folder(offline_hub, tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))
            return huggingface_hub.CommitInfo(commit_url="https://huggingface.co/test-org/tiny-sae/commit/" + "a" * 40, commit_message=kwargs["commit_message"],
                                              commit_description="", oid="a" * 40)

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    result = publish(save_sae(tiny_sae(), tmp_path / "src"), "test-org/tiny-sae", entry=ENTRY, out_dir=tmp_path / "out", commit_message="add tiny SAE", reference=False, echo=lambda *_: None)
    assert [c[0] for c in calls] == ["init", "create_repo", "upload_folder"]
    assert calls[1][2]["exist_ok"] is True
    assert calls[2][1]["commit_message"] == "add tiny SAE" and calls[2][1]["folder_path"] == str(tmp_path / "out")
    assert result.entry.source.revision == "a" * 40  # the entry is pinned to the uploaded commit


def test_publish_probe(offline_hub, tmp_path):
    from test_zoo_load import tiny_probe

    folder = tiny_probe(tmp_path, "quality")
    entry = {k: v for k, v in ENTRY.items() if k not in ("metrics", "description")}
    entry["hook"] = {"module": "model.layers.1", "site": "resid_out", "layer": 1}
    entry["features"] = "test/tiny-sae"
    result = publish(folder, "test-org/tiny-quality", entry=entry, dry_run=True, out_dir=tmp_path / "out", echo=lambda *_: None)
    assert result.entry.kind == "quality-probe" and result.entry.metrics["heldout"] == {"auroc": 0.8}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["README.md", "probe.safetensors", "probe_config.json"]
    card = validate_card(ModelCard.load(tmp_path / "out" / "README.md"))
    assert card.data.library_name == "saerl-zoo" and "## Limitations" in card.text


def test_publish_probe_reads_model_hook_and_preprocessing_from_its_sae(offline_hub, tmp_path):
    """A probe reads its SAE's codes, so it shares the SAE's model, hook and preprocessing: published next to the SAE,
    the entry needs only `features`."""
    from test_zoo_load import tiny_probe

    catalog = tmp_path / "mine.yaml"
    publish(save_sae(tiny_sae(), tmp_path / "sae"), "test-org/tiny-sae", entry=ENTRY, name="test/tiny-sae", dry_run=True,
            out_dir=tmp_path / "sae-out", catalog=catalog, reference=False, echo=lambda *_: None)
    result = publish(tiny_probe(tmp_path), "test-org/tiny-difficulty", entry={"features": "test/tiny-sae"}, dry_run=True,
                     out_dir=tmp_path / "probe-out", catalog=catalog, echo=lambda *_: None)
    sae = {a.name: a for a in read_catalog_file(catalog)[0]}["test/tiny-sae"]
    assert (result.entry.model, result.entry.hook, result.entry.preprocessing) == (sae.model, sae.hook, sae.preprocessing)
    with pytest.raises(CatalogError, match="field model: missing"):  # an SAE no catalog knows: nothing to read from
        publish(tiny_probe(tmp_path / "other"), "test-org/tiny-other", entry={"features": "test/unknown"}, dry_run=True,
                out_dir=tmp_path / "other-out", catalog=catalog, echo=lambda *_: None)


def test_probe_saved_with_diagnostics_among_metrics_publishes_without_them(offline_hub, tmp_path):
    import json

    from test_zoo_load import tiny_probe

    folder = tiny_probe(tmp_path)
    raw = json.loads((folder / "probe_config.json").read_text())
    raw["metrics"].update({"not_converged": 3.0, "final_fit_converged": 1.0})
    raw.pop("fit")
    (folder / "probe_config.json").write_text(json.dumps(raw))
    entry = {**{k: v for k, v in ENTRY.items() if k not in ("metrics", "description")}, "features": "test/tiny-sae",
             "hook": {"module": "model.layers.1", "site": "resid_out", "layer": 1}}
    result = publish(folder, "test-org/tiny-difficulty", entry=entry, dry_run=True, out_dir=tmp_path / "out", echo=lambda *_: None)
    assert result.entry.metrics["heldout"] == {"spearman": 0.5}


def test_verify_catches_a_wrong_hook(host_model, offline_hub, tmp_path, monkeypatch):
    model, tokenizer = host_model
    sae = tiny_sae()
    out = tmp_path / "out"
    catalog = tmp_path / "mine.yaml"
    result = publish(save_sae(sae, tmp_path / "src"), "test-org/tiny-sae", entry=ENTRY, name="test/tiny-sae", dry_run=True, out_dir=out, catalog=catalog, echo=lambda *_: None)
    assert result.entry.metrics["reference"]["n_tokens"] > 0  # measured through the host model from the cache
    add_repo(offline_hub, "test-org/tiny-sae", out)
    monkeypatch.setenv("SAERL_ZOO_CATALOG", str(catalog))
    report = api.check_sae(api.load_sae("test/tiny-sae"), api.get_artifact("test/tiny-sae"))
    assert report["ok"] and report["against"] == "reference"
    api.load_sae("test/tiny-sae", verify=True)
    # the same SAE declared on another block: the reference text exposes it
    entries, _ = read_catalog_file(catalog)
    wrong = entries[0].to_dict()
    wrong["name"] = "test/wrong-hook"
    wrong["hook"] = {"module": "model.layers.0", "site": "resid_out", "layer": 0}
    write_catalog(tmp_path / "wrong.yaml", [wrong])
    monkeypatch.setenv("SAERL_ZOO_CATALOG", str(tmp_path / "wrong.yaml"))
    with pytest.raises(api.VerificationError, match="test/wrong-hook"):
        api.load_sae("test/wrong-hook", verify=True)


# --------------------------------------------------------------------------- CLI


def test_cli_list_info_pull_verify_publish(offline_hub, tmp_path, monkeypatch):
    sae = tiny_sae()
    src = save_sae(sae, tmp_path / "src")
    entry_file = tmp_path / "entry.yaml"
    entry_file.write_text(yaml.safe_dump(ENTRY))
    runner = CliRunner()
    out = tmp_path / "out"
    catalog = tmp_path / "mine.yaml"
    res = runner.invoke(main, ["publish", str(src), "--repo-id", "test-org/tiny-sae", "--name", "test/tiny-sae", "--entry", str(entry_file),
                              "--out", str(out), "--catalog", str(catalog), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "dry run" in res.output and "upload_folder(" in res.output and "catalog entry" in res.output
    add_repo(offline_hub, "test-org/tiny-sae", out)
    monkeypatch.setenv("SAERL_ZOO_CATALOG", str(catalog))

    res = runner.invoke(main, ["list", "--kind", "sae"])
    assert res.exit_code == 0 and "test/tiny-sae" in res.output and "model.layers.1:resid_out" in res.output
    res = runner.invoke(main, ["list", "--model", "no-such-model"])
    assert "no artifacts match" in res.output
    res = runner.invoke(main, ["info", "test/tiny-sae"])
    assert res.exit_code == 0 and "## Metrics" in res.output
    res = runner.invoke(main, ["info", "test/tiny-sea"])
    assert res.exit_code != 0 and "did you mean 'test/tiny-sae'" in res.output
    res = runner.invoke(main, ["pull", "test/tiny-sae"])
    assert res.exit_code == 0 and "sha256 verified" in res.output
    res = runner.invoke(main, ["verify", "test/tiny-sae"])
    assert res.exit_code == 0 and " ok " in res.output
    blob = (api.pull("test/tiny-sae") / "cfg.json").resolve()
    blob.write_text(blob.read_text().replace("64", "65", 1))
    res = runner.invoke(main, ["verify", "test/tiny-sae"])
    assert res.exit_code != 0 and "MISMATCH" in res.output
    res = runner.invoke(main, ["pull", "test/tiny-sae"])
    assert res.exit_code != 0 and "sha256 mismatch" in res.output


# --------------------------------------------------------------------------- stitches


def tiny_stitch(d_source: int = 48, d_target: int = D_IN):
    """A synthetic StitchMap from test/tiny-b (block 1) into the host test/tiny-a of the SAE test/sae."""
    import numpy as np

    from saerl_zoo.transfer.maps import StitchConfig, StitchMap

    rng = np.random.default_rng(0)
    config = StitchConfig(
        method="ridge", source_model="test/tiny-b", source_layer=1, source_hook="model.layers.1", d_source=d_source,
        target_model="test/tiny-a", target_layer=1, target_hook="model.layers.1", d_target=d_target, sae="test/sae",
        pairing="token", corpus={"path": "corpus.txt", "n_texts": 40, "n_pairs": 900}, hyperparameters={"alpha": 10.0},
        metrics={"explained_variance": 0.81234, "identity_explained_variance": -0.4321, "identity": "truncated",
                 "n_test_texts": 8, "n_test_pairs": 180},
    )
    return StitchMap(rng.normal(size=(d_source, d_target)).astype("float32"), rng.normal(size=d_target).astype("float32"), config)


def test_publish_stitch_renders_a_card_and_loads_through_for_model(offline_hub, tmp_path, monkeypatch):
    from conftest import local_sae_entry

    from saerl_zoo.transfer import StitchedSAE
    from saerl_zoo.zoo.formats import detect_format
    from saerl_zoo.zoo.registry import validate_entry

    stitch = tiny_stitch()
    src = stitch.save(tmp_path / "stitch-src")
    assert detect_format(src) == "stitch"
    sae = tiny_sae()
    sae_folder = save_sae(sae, tmp_path / "sae")
    catalog = write_catalog(tmp_path / "catalog.yaml", [local_sae_entry(sae_folder, "test/tiny-a", hash_folder(sae_folder))])
    out = tmp_path / "out"
    runner = CliRunner()
    res = runner.invoke(main, ["publish", str(src), "--repo-id", "test-org/tiny-b-to-a", "--name", "test/tiny-b-to-a",
                               "--out", str(out), "--catalog", str(catalog), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "stitch.safetensors", "stitch_config.json"]
    entries, _ = read_catalog_file(catalog)
    art = {e.name: e for e in entries}["test/tiny-b-to-a"]
    assert validate_entry(art.to_dict()) == art
    assert (art.kind, art.features, art.model.id, art.hook.module, art.hook.layer) == ("stitch", "test/sae", "test/tiny-b", "model.layers.1", 1)
    assert (art.source.type, art.source.format, art.source.repo_id, art.source.path) == ("hub", "stitch", "test-org/tiny-b-to-a", "")
    assert art.metrics["explained_variance"] == 0.8123 and art.metrics["identity_explained_variance"] == -0.4321
    assert art.files == {k: v for k, v in hash_folder(out).items() if k != "README.md"}
    # the card: model B as base model (an adapter of it), held-out EV vs identity, and how to load it
    card = validate_card(ModelCard.load(out / "README.md"))
    data = card.data.to_dict()
    assert (data["base_model"], data["base_model_relation"], data["library_name"]) == ("test/tiny-b", "adapter", "saerl-zoo")
    assert "stitch" in data["tags"]
    assert {r.metric_type for r in card.data.eval_results} == {"explained_variance", "identity_explained_variance"}
    for text in ("## What it is", "`test/tiny-a`, `model.layers.1` (decoder block 1), 32 dims", "token (tokens of both models aligned",
                 "alpha = 10.0", "| this map (ridge) | 0.8123 |", "| identity (no map, widths truncated) | -0.4321 |",
                 'load_sae("test/sae", for_model="test/tiny-b")', 'snapshot_download("test-org/tiny-b-to-a")'):
        assert text in card.text, text
    # as if uploaded: the catalog now resolves the host SAE on model B through the published stitch
    add_repo(offline_hub, "test-org/tiny-b-to-a", out)
    monkeypatch.setenv("SAERL_ZOO_CATALOG", str(catalog))
    registry._CATALOG_CACHE.clear()
    stitched = api.load_sae("test/sae", for_model="test/tiny-b")
    assert isinstance(stitched, StitchedSAE) and stitched.cfg.metadata.stitch["name"] == "test/tiny-b-to-a"
    x = torch.randn(5, 48)
    assert torch.allclose(stitched.encode(x), sae.encode(torch.as_tensor(stitch.apply(x.numpy()))), atol=1e-5)


def test_publish_takes_the_policy_from_the_sae_folder(offline_hub, tmp_path):
    """Publishing reads preprocessing where featurize reads it (issue 17, item 1): the catalog entry says what the folder says."""
    from saerl_zoo.preprocessing import record_preprocessing

    sae = tiny_sae()
    record_preprocessing(sae, context_length=64, outlier_norm_ratio=8.0)
    entry = {k: v for k, v in ENTRY.items() if k != "preprocessing"}
    result = publish(save_sae(sae, tmp_path / "src"), "test-org/tiny-sae", entry=entry, name="test/tiny-sae", dry_run=True,
                     out_dir=tmp_path / "out", catalog=tmp_path / "mine.yaml", reference=False, echo=lambda *_: None)
    pre = result.entry.preprocessing
    assert (pre.outlier_norm_ratio, pre.context_length, pre.special_tokens) == (8.0, 64, "drop")
