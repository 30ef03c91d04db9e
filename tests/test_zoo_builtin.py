"""The embedded default as the zoo's first entries: generated entries, cards, offline loading by name."""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path

import numpy as np
import pytest
from conftest import make_char_tokenizer, make_tiny_llama, make_tiny_sae
from huggingface_hub import ModelCard
from test_zoo_support import offline_hub  # noqa: F401

from saerl_zoo.embedded import DEFAULT_DIR
from saerl_zoo.zoo import api
from saerl_zoo.zoo.builtin import DIFFICULTY_NAME, PREFIX, QUALITY_NAME, SAE_NAME, default_entries
from saerl_zoo.zoo.formats import save_sae
from saerl_zoo.zoo.publishing import CARDS_DIR, render_card, validate_card
from saerl_zoo.zoo.registry import BUILTIN_CATALOG, read_catalog_file

ROOT = Path(__file__).resolve().parents[1]


def make_fake_default(root: Path) -> Path:
    """A miniature of saerl_zoo/default: model, sae (+ metrics), both probes, build_info.json."""
    from saerl_zoo.difficulty import DifficultyProbe
    from saerl_zoo.probe import ProbeConfig
    from saerl_zoo.quality import QualityProbe

    tokenizer = make_char_tokenizer()
    model = make_tiny_llama(len(tokenizer), hidden=32)
    model.save_pretrained(root / "model", safe_serialization=True)
    tokenizer.save_pretrained(root / "model")
    sae = make_tiny_sae(32, 64, hook_name="model.layers.1")
    sae.cfg.metadata.context_size = 48
    sae.cfg.metadata.exclude_special_tokens = [0, 1]
    save_sae(sae, root / "sae")
    (root / "sae_metrics.json").write_text(json.dumps({"n_tokens": 100, "l0": 30.0, "explained_variance": 0.6, "dead_fraction": 0.0, "mse": 0.1, "d_sae": 64}))
    rng = np.random.default_rng(0)
    DifficultyProbe(rng.normal(size=64), 0.1, ProbeConfig("difficulty", "elasticnet", 64, "1 - pass rate", {"alpha": 0.1}, {"spearman": 0.4}, 16, 4, 0)).save(root / "difficulty_probe")
    QualityProbe(rng.normal(size=64), 0.1, ProbeConfig("quality", "logistic", 64, "P(good)", {"C": 1.0}, {"auroc": 0.8, "accuracy": 0.7}, 16, 4, 0)).save(root / "quality_probe")
    info = {"seed": 0, "args": {"seed": 0, "n_pool": 200, "label_fraction": 0.1, "k": 8, "sae_tokens": 10000, "sae_batch": 100, "sae_context": 48},
            "probes": {"pool_eval": {"difficulty_spearman_vs_level_clean": 0.7, "quality_auroc_vs_truth": 0.8}}}
    (root / "build_info.json").write_text(json.dumps(info))
    return root


def test_default_entries_and_cards_from_a_default_folder(tmp_path):
    root = make_fake_default(tmp_path / "default")
    arts = default_entries(root)
    assert [a.name for a in arts] == [SAE_NAME, DIFFICULTY_NAME, QUALITY_NAME]
    sae, difficulty, quality = arts
    assert sae.source.type == "package" and sae.source.path == "default/sae" and set(sae.files) == {"cfg.json", "sae_weights.safetensors"}
    assert sae.hook.module == "model.layers.1" and sae.hook.layer == 1 and sae.preprocessing.special_tokens == "drop"
    assert sae.preprocessing.context_length == 48 and sae.metrics["reference"]["n_tokens"] > 0
    assert difficulty.features == SAE_NAME and difficulty.metrics["heldout"] == {"spearman": 0.4}
    assert difficulty.metrics["pool_eval"] == {"difficulty_spearman_vs_level_clean": 0.7}
    assert quality.metrics["pool_eval"] == {"quality_auroc_vs_truth": 0.8}
    for art in arts:
        card = validate_card(ModelCard(str(render_card(art))))
        assert card.data.base_model == art.model.id and "## Limitations" in card.text and "## Usage" in card.text


# --------------------------------------------------------------------------- the shipped default

builtin_entries = [e for e in read_catalog_file(BUILTIN_CATALOG)[0] if e.name.startswith(f"{PREFIX}/")]
default_built = (DEFAULT_DIR / "sae" / "cfg.json").is_file()


def test_builtin_catalog_matches_the_embedded_default():
    if not default_built and not builtin_entries:
        pytest.skip("the embedded default is not built yet (scripts/build_default.py)")
    assert default_built, "the built-in catalog lists saerl-tiny-math/* but saerl_zoo/default is missing"
    assert builtin_entries, "saerl_zoo/default exists but the catalog has no entries: run scripts/publish_default.py --update-catalog"
    rows = api.verify_cache([e.name for e in builtin_entries])
    assert [r["status"] for r in rows] == ["ok"] * len(builtin_entries), (
        f"{rows}\nthe embedded default changed since the catalog was written: run scripts/publish_default.py --update-catalog")


needs_default = pytest.mark.skipif(not (default_built and builtin_entries), reason="embedded default or its catalog entries not present")


@needs_default
def test_builtin_names_load_offline(offline_hub):
    sae = api.load_sae(SAE_NAME, verify=True)
    assert sae.cfg.metadata.zoo_name == SAE_NAME
    assert type(api.load_probe(DIFFICULTY_NAME)).__name__ == "DifficultyProbe"
    assert type(api.load_probe(QUALITY_NAME)).__name__ == "QualityProbe"
    assert {a.name for a in api.list_artifacts(kind="sae")} >= {SAE_NAME}


@needs_default
def test_rendered_cards_are_current_and_their_snippets_run(offline_hub):
    for art in builtin_entries:
        path = CARDS_DIR / art.card
        assert path.is_file(), f"{path} missing: run scripts/publish_default.py --update-catalog"
        text = path.read_text()
        validate_card(ModelCard(text))
        assert text == str(render_card(art)), f"{path} is stale: run scripts/publish_default.py --update-catalog"
        snippet = re.search(r"```python\n(.*?)```", text, re.S).group(1)
        exec(compile(snippet, str(path), "exec"), {})


@needs_default
def test_publish_default_dry_run(offline_hub, tmp_path, capsys):
    runpy.run_path(str(ROOT / "scripts" / "publish_default.py"), run_name="not_main")["main"](["--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert out.count("dry run") >= len(builtin_entries)
    readmes = sorted((tmp_path / "out").rglob("README.md"))
    artifact_cards = [r for r in readmes if "saerl-tiny-math-policy" not in str(r)]
    assert len(artifact_cards) == len(builtin_entries) and len(readmes) == len(builtin_entries) + 1  # + the host model
    for readme in artifact_cards:
        card = validate_card(ModelCard.load(readme))
        assert card.data.base_model.endswith("/saerl-tiny-math-policy")
    assert ModelCard.load(next(r for r in readmes if r not in artifact_cards)).data.library_name == "transformers"


@needs_default
def test_builtin_entries_describe_the_task_set_the_default_was_built_on():
    """The cards said "seven reasoning-gym families" after the default became the worked-solution test bed."""
    from saerl_zoo.tasks import WORKED_FAMILIES

    if json.loads((DEFAULT_DIR / "build_info.json").read_text())["args"]["tasks"] != "worked":
        pytest.skip("the embedded default is not the worked-solution one")
    for entry in builtin_entries:
        text = json.dumps(entry.to_dict())
        assert "reasoning-gym" not in text, entry.name
        if entry.kind != "sae":
            assert all(family in " ".join(entry.limitations) for family in WORKED_FAMILIES), entry.limitations
