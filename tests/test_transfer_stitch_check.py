"""A stitch is refused on any model other than the one it was fitted on, before that model runs (issue 17, item 2)."""

from __future__ import annotations

import contextlib
import json
import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_tiny_llama, make_tiny_sae
from test_transfer_stitched import CORPUS, PROMPTS

from saerl_zoo.cli import main
from saerl_zoo.featurizer import featurize
from saerl_zoo.preprocessing import sae_preprocessing
from saerl_zoo.transfer import StitchedSAE, collect_activations, evaluate_stitch, fit_stitch
from saerl_zoo.transfer.check import StitchMismatch, StitchUncheckedWarning
from saerl_zoo.transfer.scorer import model_fingerprint
from saerl_zoo.zoo.formats import save_sae


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def models(tokenizer, model_dir):
    """Host A (32 wide), source B (48 wide, 2 blocks), C (B's shape, other weights) and a 40-wide model, saved under
    `model_dir` as a user's would be (saving fills in the config's architectures and dtype, which the fingerprint hashes)."""
    built = {"a": (32, 3, 0), "b": (48, 2, 1), "c": (48, 2, 2), "narrow": (40, 2, 3)}
    for name, (hidden, layers, seed) in built.items():
        built[name] = make_tiny_llama(len(tokenizer), hidden=hidden, layers=layers, seed=seed)
        built[name].save_pretrained(model_dir / name)
        tokenizer.save_pretrained(model_dir / name)
    return built["a"], built["b"], built["c"], built["narrow"]


@pytest.fixture(scope="module")
def stitch(models, tokenizer):
    a, b, _, _ = models
    target = collect_activations(a, tokenizer, CORPUS, [1], progress=False)
    source = collect_activations(b, tokenizer, CORPUS, [1], progress=False)
    return fit_stitch(source, target, target_layer=1, sae="tiny", source_layer=1, source_model="test/b", target_model="test/a",
                      source_fingerprint=model_fingerprint(b), target_fingerprint=model_fingerprint(a),
                      preprocessing=sae_preprocessing(make_tiny_sae(32)))


@contextlib.contextmanager
def forwards(*models):
    """Count forward passes of each model (a pre-hook on its embedding fires even when a capture stops the pass early)."""
    counts = [0] * len(models)

    def counter(i):
        def hook(*_):
            counts[i] += 1
        return hook

    handles = [m.get_input_embeddings().register_forward_pre_hook(counter(i)) for i, m in enumerate(models)]
    try:
        yield counts
    finally:
        for h in handles:
            h.remove()


def test_wrong_layer_is_refused_before_any_forward(models, tokenizer, stitch):
    _, b, _, _ = models
    with forwards(b) as counts, pytest.raises(ValueError, match="layer 0 disagrees with the SAE's hook model.layers.1"):
        featurize(PROMPTS, b, tokenizer, StitchedSAE(make_tiny_sae(32), stitch), layer=0, progress=False)
    shallow = make_tiny_llama(len(tokenizer), hidden=48, layers=1, seed=1)
    with forwards(shallow) as short, pytest.raises(StitchMismatch, match=r"reads block 1 of test/b, but this model .* has 1 decoder blocks"):
        featurize(PROMPTS, shallow, tokenizer, StitchedSAE(make_tiny_sae(32), stitch), progress=False)
    assert counts == [0] and short == [0]


def test_same_width_other_model_is_refused_unless_forced(models, tokenizer, stitch):
    _, b, c, _ = models
    with forwards(c) as counts, pytest.raises(StitchMismatch) as err:
        featurize(PROMPTS, c, tokenizer, StitchedSAE(make_tiny_sae(32), stitch), progress=False)
    assert counts == [0]
    message = str(err.value)
    assert "\n" not in message and f"fingerprint {model_fingerprint(b)}" in message and f"fingerprint {model_fingerprint(c)}" in message
    forced = featurize(PROMPTS, c, tokenizer, StitchedSAE(make_tiny_sae(32), stitch, force=True), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StitchUncheckedWarning)
        right = featurize(PROMPTS, b, tokenizer, StitchedSAE(make_tiny_sae(32), stitch), progress=False)
    assert forced.shape == right.shape == (len(PROMPTS), 64) and not np.allclose(forced.toarray(), right.toarray())


def test_a_stitch_without_fingerprint_warns_that_it_cannot_be_checked(models, tokenizer, stitch):
    import dataclasses

    from saerl_zoo.transfer import StitchMap

    _, b, _, _ = models
    old = StitchMap(stitch.weight, stitch.bias, dataclasses.replace(stitch.config, source_fingerprint=None, target_fingerprint=None))
    with pytest.warns(StitchUncheckedWarning, match="records no fingerprint of test/b"):
        featurize(PROMPTS, b, tokenizer, StitchedSAE(make_tiny_sae(32), old), progress=False)


def test_evaluate_refuses_wrong_models_before_either_runs(models, tokenizer, stitch):
    a, b, c, narrow = models
    sae = make_tiny_sae(32)
    for host, model, message in ((a, narrow, "is 40 wide"), (a, c, "has fingerprint"), (narrow, b, "maps into 32-dim activations of test/a")):
        with forwards(a, b, c, narrow) as counts, pytest.raises(StitchMismatch, match=message):
            evaluate_stitch(stitch, sae, host, tokenizer, model, tokenizer, PROMPTS, progress=False)
        assert counts == [0, 0, 0, 0]


def test_cli_eval_refuses_before_running_and_force_passes(model_dir, stitch, tmp_path, monkeypatch):
    import saerl_zoo.transfer.activations as activations

    stitch.save(tmp_path / "stitch")
    sae = save_sae(make_tiny_sae(32), tmp_path / "sae")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"What is {i} + {2 * i}?"}) + "\n" for i in range(12)))
    base = ["transfer", "eval", "--stitch", str(tmp_path / "stitch"), "--sae", str(sae), "--from", str(model_dir / "a"), "--prompts", str(prompts)]
    collected = []
    real = activations.collect_activations
    monkeypatch.setattr(activations, "collect_activations", lambda *args, **kw: collected.append(1) or real(*args, **kw))
    runner = CliRunner()

    narrow_run = runner.invoke(main, [*base, "--to", str(model_dir / "narrow")])
    assert narrow_run.exit_code == 1 and collected == []
    assert narrow_run.output.strip().splitlines()[-1].endswith("is 40 wide") and "Traceback" not in narrow_run.output
    other = runner.invoke(main, [*base, "--to", str(model_dir / "c")])
    assert other.exit_code == 1 and "has fingerprint" in other.output and collected == []
    forced = runner.invoke(main, [*base, "--to", str(model_dir / "c"), "--force"])
    assert forced.exit_code == 0, forced.output
    assert len(collected) == 2 and '"transfer"' in forced.output


def test_fingerprint_is_the_same_model_from_any_folder(models, model_dir, tokenizer, tmp_path):
    from saerl_zoo.models import load_model

    _, b, c, _ = models
    b.save_pretrained(tmp_path / "copy")
    tokenizer.save_pretrained(tmp_path / "copy")
    loaded = [load_model(str(folder))[0] for folder in (model_dir / "b", tmp_path / "copy")]
    assert model_fingerprint(loaded[0]) == model_fingerprint(loaded[1]) == model_fingerprint(b) != model_fingerprint(c)
