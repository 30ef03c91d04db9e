"""The zoo catalog: schema validation, sources (built-in, user files, pinned Hub catalogs), name lookup."""

from __future__ import annotations

import copy
import os

import pytest
from test_zoo_support import add_repo, offline_hub, sae_entry, write_catalog  # noqa: F401

from saerl_zoo.zoo.registry import (
    BUILTIN_CATALOG,
    Catalog,
    CatalogError,
    HubCatalogRef,
    UnknownArtifactError,
    check_relative_path,
    read_catalog_file,
    upsert_entry,
    validate_entry,
)


def test_builtin_catalog_is_valid():
    entries, refs = read_catalog_file(BUILTIN_CATALOG)
    names = [e.name for e in entries]
    assert len(names) == len(set(names))
    for e in entries:
        assert e.source.type == "package" or e.source.repo_id


def test_valid_entry_round_trips():
    art = validate_entry(sae_entry("t/sae"), "test")
    assert art.hook.site == "resid_out" and art.preprocessing.normalization_scale == 1.0
    assert validate_entry(art.to_dict(), "again") == art


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: e.pop("license"), "field license: missing"),
        (lambda e: e["hook"].pop("site"), "field hook.site: missing"),
        (lambda e: e["hook"].update(layer="1"), "field hook.layer: expected an integer"),
        (lambda e: e["hook"].update(site="residual"), "field hook.site: 'residual' is not one of"),
        (lambda e: e.update(kind="transcoder"), "field kind: 'transcoder' is not one of"),
        (lambda e: e["metrics"].pop("l0"), "field metrics.l0"),
        (lambda e: e["metrics"].pop("eval_set"), "field metrics.eval_set"),
        (lambda e: e["preprocessing"].update(normalization_scale="x"), "field preprocessing.normalization_scale: expected a number"),
        (lambda e: e["files"].update({"w.safetensors": "abc"}), "field files.w.safetensors"),
        (lambda e: e["source"].pop("revision"), "field source.revision"),
        (lambda e: e.pop("sae"), "field sae"),
        (lambda e: e.update(licence="mit"), "field licence: unknown field (did you mean 'license'?)"),
        (lambda e: e.update(name="bad name!"), "field name"),
    ],
)
def test_bad_entry_is_rejected_naming_entry_and_field(mutate, field):
    entry = sae_entry("t/bad")
    mutate(entry)
    with pytest.raises(CatalogError) as err:
        validate_entry(entry, "my.yaml")
    assert "catalog my.yaml" in str(err.value)
    assert "entry 't/bad'" in str(err.value) or "bad name!" in str(err.value)
    assert field in str(err.value)


def test_probe_entry_needs_its_sae_and_labels():
    probe = sae_entry("t/probe", kind="difficulty-probe", metrics={"heldout": {"spearman": 0.4}, "labels": "1 - pass rate"})
    probe.pop("sae")
    probe["source"]["format"] = "probe"
    with pytest.raises(CatalogError, match="field features"):
        validate_entry(probe, "c")
    probe["features"] = "t/sae"
    assert validate_entry(probe, "c").kind == "difficulty-probe"
    del probe["metrics"]["labels"]
    with pytest.raises(CatalogError, match="field metrics.labels"):
        validate_entry(probe, "c")


@pytest.mark.parametrize("path", ["../x", "a/../../b", "/etc/passwd", "C:/x", "a//b", "a\\b", "./a"])
def test_paths_that_leave_the_folder_are_refused(path):
    with pytest.raises(CatalogError):
        check_relative_path(path, "here")
    entry = sae_entry("t/sae")
    entry["files"] = {path: "0" * 64}
    with pytest.raises(CatalogError, match="entry 't/sae'"):
        validate_entry(entry, "c")
    entry = sae_entry("t/sae", path=path)
    with pytest.raises(CatalogError, match="field source.path"):
        validate_entry(entry, "c")


def test_catalog_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nartifacts: [1, 2]\n")
    with pytest.raises(CatalogError, match="bad.yaml"):
        read_catalog_file(bad)
    bad.write_text("version: 7\nartifacts: []\n")
    with pytest.raises(CatalogError, match="schema version 7"):
        read_catalog_file(bad)
    dup = write_catalog(tmp_path / "dup.yaml", [sae_entry("t/a"), sae_entry("t/a")])
    with pytest.raises(CatalogError, match="listed twice"):
        read_catalog_file(dup)


def test_user_catalogs_from_env_and_paths_override_in_order(tmp_path, monkeypatch):
    a = write_catalog(tmp_path / "a.yaml", [sae_entry("t/one"), sae_entry("t/shared", description="from a")])
    b = write_catalog(tmp_path / "b.yaml", [sae_entry("t/two"), sae_entry("t/shared", description="from b")])
    monkeypatch.setenv("SAERL_ZOO_CATALOG", os.pathsep.join([str(a), str(b)]))
    cat = Catalog.load(fetch_hub=False)
    assert {"t/one", "t/two", "t/shared"} <= set(cat.names())
    assert cat.get("t/shared").description == "from b"
    assert cat.get("t/shared").origin == str(b)
    c = write_catalog(tmp_path / "c.yaml", [sae_entry("t/shared", description="from c")])
    assert Catalog.load([c], fetch_hub=False).get("t/shared").description == "from c"


def test_unknown_name_suggests_closest(tmp_path):
    cat = Catalog([validate_entry(sae_entry(n), "c") for n in ("saerl-tiny-math/sae", "saerl-tiny-math/difficulty-probe", "other/sae")])
    with pytest.raises(UnknownArtifactError) as err:
        cat.get("saerl-tiny-math/sea")
    assert "did you mean 'saerl-tiny-math/sae'" in str(err.value)
    with pytest.raises(UnknownArtifactError, match="difficulty-probe"):
        cat.get("saerl-tiny-math/difficulty_probe")


def test_filter_by_kind_and_model():
    probe = sae_entry("t/probe", kind="quality-probe", features="t/sae", metrics={"heldout": {"auroc": 0.9}, "labels": "0/1"})
    probe.pop("sae")
    probe["source"]["format"] = "probe"
    other = sae_entry("t/qwen")
    other["model"] = {"id": "Qwen/Qwen2.5-1.5B-Instruct"}
    cat = Catalog([validate_entry(e, "c") for e in (sae_entry("t/sae"), probe, other)])
    assert [a.name for a in cat.filter(kind="sae")] == ["t/qwen", "t/sae"]
    assert [a.name for a in cat.filter(model="qwen")] == ["t/qwen"]
    assert [a.name for a in cat.filter(kind="quality-probe")] == ["t/probe"]
    with pytest.raises(ValueError, match="unknown kind"):
        cat.filter(kind="model")


def test_hub_catalog_pinned_by_revision_loads_offline(offline_hub, tmp_path, monkeypatch):
    folder = tmp_path / "catrepo"
    folder.mkdir()
    write_catalog(folder / "catalog.yaml", [sae_entry("hub/sae")])
    commit = add_repo(offline_hub, "test-org/zoo-catalog", folder)
    monkeypatch.setenv("SAERL_ZOO_HUB_CATALOGS", f"test-org/zoo-catalog@{commit}:catalog.yaml")
    cat = Catalog.load()
    assert cat.get("hub/sae").origin.startswith(f"hub:test-org/zoo-catalog@{commit}")
    # a catalog file may list Hub catalogs too; an unavailable one is skipped with a warning
    user = write_catalog(tmp_path / "user.yaml", [], hub_catalogs=[{"repo_id": "test-org/missing", "revision": "v1"}])
    monkeypatch.delenv("SAERL_ZOO_HUB_CATALOGS")
    with pytest.warns(UserWarning, match="test-org/missing"):
        Catalog.load([user])


def test_hub_catalog_refs_must_be_pinned():
    with pytest.raises(CatalogError):
        HubCatalogRef.parse("test-org/zoo-catalog")
    with pytest.raises(CatalogError):
        HubCatalogRef.parse("test-org/zoo-catalog@main:../catalog.yaml")
    assert HubCatalogRef.parse("o/r@abc").path == "catalog.yaml"


def test_upsert_entry_adds_then_replaces(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("# my catalog\nversion: 1\nartifacts: []\n")
    art = validate_entry(sae_entry("t/sae"), "c")
    upsert_entry(path, art)
    changed = copy.deepcopy(art)
    changed.description = "new"
    upsert_entry(path, changed)
    entries, _ = read_catalog_file(path)
    assert [e.description for e in entries] == ["new"]
    assert path.read_text().startswith("# my catalog\n")
