"""Every load of a file the catalog knows checks its sha256, whichever route it comes by; absurd probes are refused.

The package's own files are never modified: the embedded default is copied to
a temporary package root that `integrity.PACKAGE_ROOT` and `embedded.DEFAULT_DIR`
point at, so catalog paths (`default/sae`, ...) resolve to the copy.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import local_sae_entry
from test_zoo_support import add_repo, offline_hub, sae_entry, tiny_sae, write_catalog  # noqa: F401

from saerl_zoo import embedded
from saerl_zoo.cli import main
from saerl_zoo.difficulty import DifficultyProbe
from saerl_zoo.probe import CONFIG_NAME, WEIGHTS_NAME, ProbeConfig
from saerl_zoo.quality import QualityProbe
from saerl_zoo.storage import read_tensors, write_tensors
from saerl_zoo.zoo import api, hub, integrity
from saerl_zoo.zoo.formats import save_sae
from saerl_zoo.zoo.hub import IntegrityError, hash_folder

REINSTALL = 'pip install --force-reinstall --no-deps "saerl-zoo'


def flip_byte(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.fixture()
def package(tmp_path, monkeypatch) -> Path:
    """A copy of the package's embedded default, standing in for the installed package (no .git: a pip install)."""
    root = tmp_path / "site-packages" / "saerl_zoo"
    shutil.copytree(embedded.DEFAULT_DIR, root / "default")
    monkeypatch.setattr(integrity, "PACKAGE_ROOT", root)
    monkeypatch.setattr(embedded, "DEFAULT_DIR", root / "default")
    monkeypatch.delenv("SAERL_ZOO_CATALOG", raising=False)
    monkeypatch.delenv("SAERL_ZOO_HUB_CATALOGS", raising=False)
    return root


def one_line_refusal(err: pytest.ExceptionInfo, file: str) -> str:
    message = str(err.value)
    assert "\n" not in message and f"sha256 mismatch for {file}" in message
    return message


@pytest.mark.parametrize("file", ["sae_weights.safetensors", "cfg.json"])
def test_packaged_sae_is_checked_on_every_route(package, file):
    flip_byte(package / "default" / "sae" / file)
    routes = {
        "name": lambda: api.load_sae("saerl-tiny-math/sae"),
        "package path": lambda: api.load_sae(embedded.default_path("sae")),
        "path string": lambda: api.load_sae(str(embedded.default_path("sae"))),
    }
    for route, load in routes.items():
        with pytest.raises(IntegrityError) as err:
            load()
        message = one_line_refusal(err, file)
        assert REINSTALL in message and "pull" not in message, route


@pytest.mark.parametrize("folder, cls, name, file", [
    ("difficulty_probe", DifficultyProbe, "saerl-tiny-math/difficulty-probe", WEIGHTS_NAME),
    ("quality_probe", QualityProbe, "saerl-tiny-math/quality-probe", CONFIG_NAME),
])
def test_packaged_probe_is_checked_on_every_route(package, folder, cls, name, file):
    flip_byte(package / "default" / folder / file, offset=-3)
    routes = {
        "name": lambda: api.load_probe(name),
        "package path": lambda: api.load_probe(embedded.default_path(folder)),
        "class load": lambda: cls.load(embedded.default_path(folder)),
    }
    for route, load in routes.items():
        with pytest.raises(IntegrityError) as err:
            load()
        assert REINSTALL in one_line_refusal(err, file), route


def test_curriculum_with_defaults_refuses_a_corrupt_packaged_probe(package, tmp_path):
    flip_byte(package / "default" / "difficulty_probe" / WEIGHTS_NAME)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["curriculum", "--out", str(out)])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if "Error" in line or "Traceback" in line]
    assert len(errors) == 1 and errors[0].startswith("Error: artifact 'saerl-tiny-math/difficulty-probe': sha256 mismatch")
    assert REINSTALL in errors[0] and "pull" not in errors[0]
    assert not (out / "ordered.jsonl").exists() and not (out / "report.md").exists()


def test_verify_gives_the_same_advice(package):
    flip_byte(package / "default" / "sae" / "sae_weights.safetensors")
    result = CliRunner().invoke(main, ["verify"])
    assert result.exit_code == 1
    assert "saerl-tiny-math/sae" in result.output and "MISMATCH" in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error:") and REINSTALL in last and "pull" not in last


def test_restore_command_follows_the_install(package):
    folder = integrity.package_folder("default/sae")
    assert re.fullmatch(r'pip install --force-reinstall --no-deps "saerl-zoo(==[\w.]+| @ \S+)"', integrity.restore_package_command(folder))
    (package.parent / ".git").mkdir()  # a source checkout: reinstalling would not touch the files, git puts them back
    assert integrity.restore_package_command(folder) == f"git -C {package.parent} checkout -- saerl_zoo/default/sae"


def test_hub_cache_file_is_checked_on_every_route(offline_hub, tmp_path, monkeypatch):
    folder = save_sae(tiny_sae(), tmp_path / "sae")
    add_repo(offline_hub, "test-org/tiny-sae", folder, prefix="model.layers.1")
    catalog = write_catalog(tmp_path / "cat.yaml", [sae_entry("test/tiny-sae", files=hash_folder(folder))])
    monkeypatch.setenv("SAERL_ZOO_CATALOG", str(catalog))
    snapshot_folder = api.pull("test/tiny-sae")
    flip_byte((snapshot_folder / "sae_weights.safetensors").resolve())
    routes = {
        "name": lambda: api.load_sae("test/tiny-sae"),
        "repo id": lambda: api.load_sae("test-org/tiny-sae", subfolder="model.layers.1"),
        "cache path": lambda: api.load_sae(snapshot_folder),
    }
    for route, load in routes.items():
        with pytest.raises(IntegrityError) as err:
            load()
        message = one_line_refusal(err, "sae_weights.safetensors")
        assert "saerl-zoo pull test/tiny-sae --force" in message and "pip install" not in message, route


def test_local_catalog_entry_is_checked_by_path(tmp_path, monkeypatch):
    folder = save_sae(tiny_sae(), tmp_path / "sae")
    catalog = write_catalog(tmp_path / "catalog.yaml", [local_sae_entry(folder, "test/tiny-a", hash_folder(folder))])
    monkeypatch.setenv("SAERL_ZOO_CATALOG", str(catalog))
    monkeypatch.delenv("SAERL_ZOO_HUB_CATALOGS", raising=False)
    flip_byte(folder / "sae_weights.safetensors")
    with pytest.raises(IntegrityError) as err:
        api.load_sae(str(folder))
    assert f"restore it from your own copy, or refit it and update its entry in {catalog}" in one_line_refusal(err, "sae_weights.safetensors")


def test_an_unknown_folder_is_not_checked_against_the_catalog(package, tmp_path):
    # a copy outside the catalog's places is the user's own file: it loads (its probe checks still apply)
    copy = shutil.copytree(package / "default" / "sae", tmp_path / "my_sae")
    flip_byte(copy / "sae_weights.safetensors", offset=-2)
    assert api.load_sae(copy).cfg.d_sae == 1024


def test_file_hashes_are_kept_per_file_version(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    calls = []
    real = hub.hashlib.sha256
    monkeypatch.setattr(hub.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    first = hub.sha256_file(path)
    assert hub.sha256_file(path) == first and len(calls) == 1  # a second check costs a stat
    path.write_bytes(b"abd")
    assert hub.sha256_file(path) != first and len(calls) == 2  # a changed file is hashed again


# ---------------------------------------------------------------------------- absurd probes


def config(kind: str, estimator: str, d_in: int = 4) -> ProbeConfig:
    return ProbeConfig(kind, estimator, d_in, "1 - pass rate", {}, {}, 10, 2, 0)


def test_a_probe_with_a_huge_weight_is_refused_at_load(tmp_path):
    folder = DifficultyProbe(np.array([0.1, -0.2, 0.3, 0.0]), 0.4, config("difficulty", "elasticnet")).save(tmp_path / "p")
    tensors = read_tensors(folder / WEIGHTS_NAME)
    tensors["weight"][2] = -1.3e16
    write_tensors(folder / WEIGHTS_NAME, tensors)
    with pytest.raises(ValueError) as err:
        DifficultyProbe.load(folder)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{folder}: difficulty probe weight 2 is -1.3e+16")
    with pytest.raises(ValueError, match="bias is nan"):
        QualityProbe(np.zeros(4), float("nan"), config("quality", "logistic"))


def test_absurd_scores_are_refused():
    X = np.array([[0.5, 0.0, 1.0, 0.0], [2e6, 0.0, 0.0, 0.0]])
    difficulty = DifficultyProbe(np.array([1.0, 0.0, 0.5, 0.0]), 0.1, config("difficulty", "elasticnet"))
    assert difficulty.predict(X[:1]) == pytest.approx([1.1])
    with pytest.raises(ValueError, match=r"difficulty probe score of row 1 is 2e\+06 \(1 of 2 .* beyond ±1e\+06"):
        difficulty.predict(X)
    # a logistic probe's decision is log-odds: 1e3 is already absurd there, though not for a regression probe
    quality = QualityProbe(np.array([1e-3, 0.0, 0.0, 0.0]), 0.0, config("quality", "logistic"))
    ridge = QualityProbe(np.array([1e-3, 0.0, 0.0, 0.0]), 0.0, config("quality", "ridge"))
    assert ridge.predict(X)[1] == pytest.approx(2e3)
    with pytest.raises(ValueError, match=r"quality probe score of row 1 is 2e\+03 .* beyond ±1e\+03"):
        quality.keep_mask(X)
