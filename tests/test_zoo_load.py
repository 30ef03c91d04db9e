"""Loading SAEs and probes by catalog name, Hub repo id (offline HF cache), local folder, sparsify layout, sae-lens registry."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from sae_lens import SAE
from sparsify_reference import load_sparsify, save_sparsify_run, sparsify_codes
from test_zoo_support import D_IN, acts, add_repo, offline_hub, sae_entry, tiny_sae, write_catalog  # noqa: F401

from saerl_zoo.zoo import api
from saerl_zoo.zoo.formats import load_sparsify_folder, save_sae
from saerl_zoo.zoo.hub import sae_lens_lookup
from saerl_zoo.zoo.hub import IntegrityError, UnsafePathError, hash_folder, safe_join
from saerl_zoo.zoo.registry import UnknownArtifactError


def same_codes(a, b, x=None):
    x = acts() if x is None else x
    with torch.no_grad():
        return torch.equal(a.encode(x), b.encode(x))


@pytest.fixture()
def sae_dir(tmp_path):
    sae = tiny_sae()
    return sae, save_sae(sae, tmp_path / "sae")


def test_sae_lens_loads_what_saerl_zoo_saves(sae_dir):
    sae, folder = sae_dir
    assert sorted(p.name for p in folder.iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    assert same_codes(sae, SAE.load_from_disk(str(folder)))
    assert same_codes(sae, api.load_sae(folder))
    assert same_codes(sae, api.load_sae(str(folder)))


def test_load_by_repo_id_from_offline_cache(offline_hub, tmp_path, sae_dir):
    sae, folder = sae_dir
    commit = add_repo(offline_hub, "test-org/tiny-sae", folder, prefix="model.layers.1")
    for kwargs in ({}, {"revision": "main"}, {"revision": commit}):
        loaded = api.load_sae("test-org/tiny-sae", subfolder="model.layers.1", **kwargs)
        assert same_codes(sae, loaded)
    # a multi-hookpoint repo without subfolder says which subfolders exist
    with pytest.raises(ValueError, match="model.layers.1"):
        api.load_sae("test-org/tiny-sae")
    # nothing cached for an unknown repo: the offline error of huggingface_hub
    with pytest.raises(Exception, match="(?i)offline|cache|local"):
        api.load_sae("test-org/not-cached", subfolder="x")


def test_load_by_catalog_name_checks_sha256(offline_hub, tmp_path, sae_dir, monkeypatch):
    sae, folder = sae_dir
    add_repo(offline_hub, "test-org/tiny-sae", folder, prefix="model.layers.1")
    cat = write_catalog(tmp_path / "cat.yaml", [sae_entry("test/tiny-sae", files=hash_folder(folder))])
    monkeypatch.setenv("SAERL_ZOO_CATALOG", str(cat))
    loaded = api.load_sae("test/tiny-sae")
    assert same_codes(sae, loaded)
    assert loaded.cfg.metadata.zoo_name == "test/tiny-sae"
    assert loaded.cfg.metadata.hook_name == "model.layers.1"
    pulled = api.pull("test/tiny-sae")
    assert str(pulled).startswith(str(offline_hub)) and pulled.name == "model.layers.1"
    assert [r["status"] for r in api.verify_cache(["test/tiny-sae"])] == ["ok"]
    with pytest.raises(UnknownArtifactError, match="did you mean 'test/tiny-sae'"):
        api.load_sae("test/tiny-sea")


def test_tampered_file_is_refused_and_not_used(offline_hub, tmp_path, sae_dir, monkeypatch):
    sae, folder = sae_dir
    add_repo(offline_hub, "test-org/tiny-sae", folder, prefix="model.layers.1")
    cat = write_catalog(tmp_path / "cat.yaml", [sae_entry("test/tiny-sae", files=hash_folder(folder))])
    monkeypatch.setenv("SAERL_ZOO_CATALOG", str(cat))
    weights = api.pull("test/tiny-sae") / "sae_weights.safetensors"
    blob = weights.resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF  # flip bits of one weight in the cached blob
    blob.write_bytes(bytes(data))
    loaded_before = []
    monkeypatch.setattr("saerl_zoo.zoo.formats.load_folder", lambda *a, **k: loaded_before.append(a))
    with pytest.raises(IntegrityError, match=r"sha256 mismatch for sae_weights.safetensors"):
        api.load_sae("test/tiny-sae")
    assert loaded_before == []  # the SAE was never built from the tampered file
    assert [r["status"] for r in api.verify_cache(["test/tiny-sae"])] == ["MISMATCH"]


def test_catalog_shape_mismatch_is_an_error(offline_hub, tmp_path, sae_dir, monkeypatch):
    sae, folder = sae_dir
    add_repo(offline_hub, "test-org/tiny-sae", folder, prefix="model.layers.1")
    entry = sae_entry("test/tiny-sae", files=hash_folder(folder))
    entry["sae"]["d_sae"] = 128
    monkeypatch.setenv("SAERL_ZOO_CATALOG", str(write_catalog(tmp_path / "c.yaml", [entry])))
    with pytest.raises(ValueError, match="d_sae=128"):
        api.load_sae("test/tiny-sae")


def test_normalization_scale_is_folded_on_load(offline_hub, tmp_path, sae_dir, monkeypatch):
    sae, folder = sae_dir
    add_repo(offline_hub, "test-org/tiny-sae", folder, prefix="model.layers.1")
    entry = sae_entry("test/scaled", files=hash_folder(folder))
    entry["preprocessing"]["normalization_scale"] = 2.5
    monkeypatch.setenv("SAERL_ZOO_CATALOG", str(write_catalog(tmp_path / "c.yaml", [entry])))
    loaded = api.load_sae("test/scaled")
    x = acts()
    with torch.no_grad():  # raw activations into the folded SAE == scaled activations into the original
        torch.testing.assert_close(loaded.encode(x), sae.encode(x * 2.5))


@pytest.mark.parametrize("bad", ["../../etc", "/abs/path", "a/../../b"])
def test_escaping_names_and_subfolders_are_refused(offline_hub, sae_dir, bad):
    _, folder = sae_dir
    with pytest.raises((UnsafePathError, UnknownArtifactError)):
        api.load_sae(bad if bad.startswith("/") else f"{bad}/sae")
    with pytest.raises(UnsafePathError):
        api.load_sae(folder, subfolder=bad)
    with pytest.raises(UnsafePathError):
        api.load_sae("test-org/tiny-sae", subfolder=bad)


def test_symlink_out_of_the_folder_is_refused(tmp_path):
    outside = tmp_path / "secret.json"
    outside.write_text("{}")
    root = tmp_path / "root"
    root.mkdir()
    (root / "cfg.json").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="outside"):
        safe_join(root, "cfg.json")


def test_pickle_only_folder_is_refused(tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    torch.save({"W_enc": torch.zeros(2, 2)}, folder / "sae.pt")
    (folder / "cfg.json").write_text("{}")
    with pytest.raises(ValueError, match="never loads pickle"):
        api.load_sae(folder)


# --------------------------------------------------------------------------- sparsify


def test_sparsify_folder_converts_and_encodes_as_sparsify_does(tmp_path):
    """A run saved by sparsify itself: the zoo's reader gives the codes of sparsify's own `load_many` + `encode`."""
    folders = save_sparsify_run(tmp_path / "run", ("layers.1", "layers.2"), d_in=D_IN, model="test-org/tiny-llama", ctx_len=48)
    from sparsify import Sae

    refs = Sae.load_many(str(tmp_path / "run"), local=True)
    assert sorted(refs) == sorted(folders)
    x = acts()
    for hp in folders:
        sae = api.load_sae(tmp_path / "run", subfolder=hp)
        assert type(sae).__name__ == "TopKSAE"
        with torch.no_grad():
            torch.testing.assert_close(sae.encode(x), sparsify_codes(refs[hp], x))
        meta = sae.cfg.metadata
        assert (meta.hook_name, meta.model_name, meta.context_size) == (hp, "test-org/tiny-llama", 48)
        # and what saerl-zoo saves from it loads in sae-lens with the same codes
        saved = save_sae(sae, tmp_path / "converted" / hp)
        assert same_codes(sae, SAE.load_from_disk(str(saved)), x)
    with pytest.raises(ValueError, match="layers.1, layers.2"):
        api.load_sae(tmp_path / "run")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sparsify_width_from_expansion_factor(tmp_path, dtype):
    """num_latents=0 means d_in x expansion_factor, as sparsify reads it; a bf16 run stays bf16."""
    folder = save_sparsify_run(tmp_path / "run", num_latents=0, expansion_factor=3, d_in=D_IN, dtype=dtype)["layers.1"]
    sae, ref = load_sparsify_folder(folder), load_sparsify(folder)
    assert sae.cfg.d_sae == ref.num_latents == 3 * D_IN and sae.W_enc.dtype == dtype
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(acts().to(dtype)), sparsify_codes(ref, acts()))


def test_sparsify_layout_from_the_hub_cache(offline_hub, tmp_path, monkeypatch):
    import fnmatch

    import huggingface_hub

    folder = save_sparsify_run(tmp_path / "run", d_in=D_IN)["layers.1"]
    torch.save({"state": {}}, tmp_path / "run" / "optimizer_0.pt")  # sparsify's trainer saves this pickle: it must never be loaded
    add_repo(offline_hub, "EleutherAI/sae-tiny", tmp_path / "run")
    requested = []
    real = huggingface_hub.snapshot_download

    def spy(*args, **kwargs):
        requested.extend(kwargs.get("allow_patterns") or [])
        return real(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", spy)
    sae = api.load_sae("EleutherAI/sae-tiny", subfolder="layers.1")
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(acts()), sparsify_codes(load_sparsify(folder), acts()))
    # only safe file types are ever requested: pickles (optimizer_0.pt, *.bin) are not downloaded
    assert requested and all(p.startswith("layers.1/") for p in requested)
    for pickled in ("layers.1/optimizer_0.pt", "layers.1/ae.pt", "layers.1/pytorch_model.bin", "layers.1/x.pkl"):
        assert not any(fnmatch.fnmatch(pickled, p) for p in requested)


@pytest.mark.parametrize("cfg, reason", [({"transcode": True}, "transcoder"), ({"skip_connection": True}, "skip connection"),
                                         ({"activation": "groupmax", "num_latents": 42}, "activation 'groupmax'")])
def test_sparsify_layouts_without_a_sae_lens_equivalent_are_refused(tmp_path, cfg, reason):
    folder = save_sparsify_run(tmp_path / "run", d_in=D_IN, **cfg)["layers.1"]
    with pytest.raises(ValueError, match=reason):
        load_sparsify_folder(folder)


# --------------------------------------------------------------------------- sae-lens registry


def test_sae_lens_registry_lookup_offline():
    info = sae_lens_lookup("gpt2-small-res-jb", "blocks.8.hook_resid_pre")
    assert info["repo_id"] == "jbloom/GPT2-Small-SAEs-Reformatted"
    assert info["path"] == "blocks.8.hook_resid_pre" and info["converter"] == "sae_lens"
    with pytest.raises(KeyError, match="did you mean 'gpt2-small-res-jb'"):
        sae_lens_lookup("gpt2-small-res-jbb", "blocks.8.hook_resid_pre")
    with pytest.raises(KeyError, match="blocks.8.hook_resid_pre"):
        sae_lens_lookup("gpt2-small-res-jb", "blocks.8.hook_resid_pree")


def test_sae_lens_release_loads_from_the_cache(offline_hub, sae_dir):
    """A release/id of sae-lens's registry resolves to its repo + folder and loads from the HF cache."""
    sae, folder = sae_dir
    add_repo(offline_hub, "jbloom/GPT2-Small-SAEs-Reformatted", folder, prefix="blocks.8.hook_resid_pre")
    assert same_codes(sae, api.load_sae("gpt2-small-res-jb", sae_id="blocks.8.hook_resid_pre"))
    assert same_codes(sae, api.load_sae("sae-lens:gpt2-small-res-jb/blocks.8.hook_resid_pre"))


def test_sae_lens_pickle_releases_are_refused():
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    from saerl_zoo.zoo.formats import pickle_converters

    bad = pickle_converters()
    release = next(r for r, info in get_pretrained_saes_directory().items() if info.conversion_func in bad)
    sae_id = next(iter(get_pretrained_saes_directory()[release].saes_map))
    with pytest.raises(ValueError, match="never loads pickle"):
        api.load_sae(release, sae_id=sae_id)


# --------------------------------------------------------------------------- probes


def tiny_probe(tmp_path, kind="difficulty"):
    from saerl_zoo.difficulty import DifficultyProbe
    from saerl_zoo.probe import ProbeConfig
    from saerl_zoo.quality import QualityProbe

    cls = DifficultyProbe if kind == "difficulty" else QualityProbe
    cfg = ProbeConfig(kind, "elasticnet" if kind == "difficulty" else "logistic", 64, "target", {"alpha": 0.1}, {"spearman": 0.5} if kind == "difficulty" else {"auroc": 0.8}, 40, 10, 0)
    rng = np.random.default_rng(0)
    return cls(rng.normal(size=64).astype(np.float32), 0.25, cfg).save(tmp_path / f"{kind}_probe")


def probe_entry(name, folder, repo_id="test-org/tiny-probe", kind="difficulty-probe"):
    entry = sae_entry(name, repo_id=repo_id, path="", files=hash_folder(folder), kind=kind, features="test/tiny-sae",
                      metrics={"heldout": {"spearman": 0.5}, "labels": "1 - pass rate"})
    entry.pop("sae")
    entry["source"]["format"] = "probe"
    return entry


def test_load_probe_by_name_repo_and_folder(offline_hub, tmp_path, monkeypatch):
    folder = tiny_probe(tmp_path)
    add_repo(offline_hub, "test-org/tiny-probe", folder)
    monkeypatch.setenv("SAERL_ZOO_CATALOG", str(write_catalog(tmp_path / "c.yaml", [probe_entry("test/difficulty", folder)])))
    X = np.abs(np.random.default_rng(1).normal(size=(5, 64)))
    expected = api.load_probe(folder).predict(X)
    for probe in (api.load_probe("test/difficulty"), api.load_probe("test-org/tiny-probe"), api.load_probe(str(folder))):
        assert type(probe).__name__ == "DifficultyProbe"
        np.testing.assert_allclose(probe.predict(X), expected)
    with pytest.raises(ValueError, match="not an SAE; use load_probe"):
        api.load_sae("test/difficulty")
