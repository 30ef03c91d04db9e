"""The CLI's front door: every user error is one line and an exit code, outputs are never overwritten by accident.

Bad inputs are the small ones a new user tries on the first day; each run goes
through the click group, as a shell would, and asserts the exit code, the one
line on stderr naming the culprit, and that nothing was written.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from click.testing import CliRunner
from conftest import make_char_tokenizer, make_cli_workspace, make_tiny_llama, make_tiny_sae

from saerl_zoo.cli import BUG_EXIT_CODE, main
from saerl_zoo.embedded import default_path
from saerl_zoo.featurizer import featurize
from saerl_zoo.storage import atomic_folder, save_csr, write_json, write_tensors


def run(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def assert_one_line_error(result, *names, code=1):
    """Exit `code`; stderr ends with its one `Error:` line, naming each of `names`; no traceback anywhere.

    Progress bars may come before it; nothing may follow it (a message of several lines would).
    """
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("Error")] == lines[-1:] and lines[-1].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    for name in names:
        assert str(name) in lines[-1], lines[-1]
    return lines[-1]


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under `path` (or `path` itself) with its bytes, to prove a refused command wrote nothing."""
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-errors")
    rows = make_cli_workspace(root)
    (root / "other_prompts.jsonl").write_text("".join(json.dumps({**r, "prompt": r["prompt"] + " Explain."}) + "\n" for r in rows[:30]))
    result = run("featurize", "--prompts", root / "prompts.jsonl", "--out", root / "X.safetensors", "--model", root / "model", "--sae", root / "sae")
    assert result.exit_code == 0, result.output
    (root / "corrupt.safetensors").write_bytes(b"not a safetensors file")
    return root


def _broken_model(w: Path, folder: Path, what: str) -> None:
    """A model folder with one thing wrong; the rest is the valid tiny model."""
    folder.mkdir()
    keep = {"config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"}
    drop = {"no config.json": {"config.json"}, "no tokenizer": {"tokenizer.json", "tokenizer_config.json"},
            "pickled weights": {"model.safetensors"}}.get(what, set())
    for name in keep - drop:
        (folder / name).write_bytes((w / "model" / name).read_bytes())
    if what == "garbage config.json":
        (folder / "config.json").write_text("{ this is not json")
    elif what == "unknown model_type":
        (folder / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    elif what == "pickled weights":
        (folder / "pytorch_model.bin").write_bytes(b"pickle")


BAD_MODELS = {  # what is wrong -> the words the one line must say about it
    "does not exist": "does not exist",
    "garbage config.json": "config.json is not valid JSON",
    "no config.json": "has no config.json",
    "unknown model_type": "model_type 'no-such-architecture' is unknown",
    "no tokenizer": "has no tokenizer files",
    "pickled weights": "only pickled weights (pytorch_model.bin)",
}


@pytest.mark.parametrize("what", list(BAD_MODELS))
def test_bad_model_is_one_line_naming_the_path(w, tmp_path, what):
    model = tmp_path / "model"
    if what != "does not exist":
        _broken_model(w, model, what)
    out = tmp_path / "X.safetensors"
    line = assert_one_line_error(run("featurize", "--out", out, "--model", model, "--sae", w / "sae"), model, BAD_MODELS[what])
    assert "installed" not in line and "repo id" not in line.lower()  # not the misleading "sentencepiece ... installed" or "Repo id must be"
    assert not out.exists()


def test_debug_shows_the_traceback(w, tmp_path):
    model = tmp_path / "model"
    _broken_model(w, model, "garbage config.json")
    args = ["featurize", "--out", tmp_path / "X.safetensors", "--model", model, "--sae", w / "sae"]
    for result in (run("--debug", *args), run(*args, env={"SAERL_ZOO_DEBUG": "1"})):
        assert result.exit_code == 1
        assert "Traceback (most recent call last)" in result.stderr and "ModelLoadError" in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("Error: ") and str(model) in result.stderr.strip().splitlines()[-1]


def test_a_bug_is_one_line_with_a_debug_hint(w, tmp_path, monkeypatch):
    def broken(*_args, **_kwargs):
        raise KeyError("centres")

    monkeypatch.setattr("saerl_zoo.diversity.cluster", broken)
    args = ["cluster", "--features", w / "X.safetensors", "--out", tmp_path / "c"]
    line = assert_one_line_error(run(*args), "unexpected KeyError", "--debug", code=BUG_EXIT_CODE)
    assert "centres" in line
    debug = run("--debug", *args)
    assert debug.exit_code == BUG_EXIT_CODE and "Traceback" in debug.stderr and "raise KeyError" in debug.stderr


def test_every_subcommand_reports_user_errors_as_one_line(w, tmp_path):
    sae, missing = default_path("sae"), tmp_path / "missing-model"
    (tmp_path / "corpus.jsonl").write_text('{"text": "one two"}\n')
    (tmp_path / "bad_catalog.yaml").write_text("artifacts: [1\n")
    (tmp_path / "empty").mkdir()
    cases = [
        (["featurize", "--out", tmp_path / "x.safetensors", "--model", missing, "--sae", sae], {}, missing),
        (["fit-probe", "--features", w / "corrupt.safetensors", "--labels", w / "pass.jsonl", "--kind", "difficulty", "--out", tmp_path / "p"], {}, "corrupt.safetensors"),
        (["cluster", "--features", w / "corrupt.safetensors", "--out", tmp_path / "c"], {}, "corrupt.safetensors"),
        (["curriculum", "--out", tmp_path / "run", "--model", missing, "--sae", sae], {}, missing),
        (["curriculum", "--out", tmp_path / "run", "--model", w / "model", "--sae", ""], {}, "empty name"),  # never the embedded SAE
        (["reproduce", "--arms", "vanilla,bogus", "--out", tmp_path / "r"], {}, ""),
        (["list"], {"SAERL_ZOO_CATALOG": str(tmp_path / "bad_catalog.yaml")}, "bad_catalog.yaml"),
        (["info", "no/such-artifact"], {}, "no/such-artifact"),
        (["pull", "no/such-artifact"], {}, "no/such-artifact"),
        (["verify", "no/such-artifact"], {}, "no/such-artifact"),
        (["publish", tmp_path / "nowhere", "--repo-id", "me/x", "--dry-run"], {}, "nowhere"),
        (["transfer", "fit", "--sae", sae, "--from", missing, "--to", missing, "--corpus", tmp_path / "corpus.jsonl", "--out", tmp_path / "t"], {}, missing),
        (["transfer", "eval", "--stitch", tmp_path / "empty"], {}, "empty"),
    ]
    for args, env, named in cases:
        assert_one_line_error(run(*args, env=env), named)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad_catalog.yaml", "corpus.jsonl", "empty"]  # no command wrote anything


# ---------------------------------------------------------------- --out: refuse what exists unless --overwrite


def _out_commands(w: Path, out_dir: Path) -> dict[str, tuple[list, Path]]:
    model = ["--model", w / "model", "--sae", w / "sae"]
    return {
        "featurize": (["featurize", "--prompts", w / "prompts.jsonl", "--out", out_dir / "X.safetensors", *model], out_dir / "X.safetensors"),
        "fit-probe": (["fit-probe", "--features", w / "X.safetensors", "--prompts", w / "prompts.jsonl", "--labels", w / "pass.jsonl",
                       "--kind", "difficulty", "--out", out_dir / "probe"], out_dir / "probe"),
        "cluster": (["cluster", "--features", w / "X.safetensors", "--k", 3, "--out", out_dir / "clusters"], out_dir / "clusters"),
        "curriculum": (["curriculum", "--prompts", w / "prompts.jsonl", "--k", 3, "--out", out_dir / "run", *model], out_dir / "run"),
    }


@pytest.mark.parametrize("command", ["featurize", "fit-probe", "cluster", "curriculum"])
def test_existing_out_is_refused_and_left_alone_unless_overwrite(w, tmp_path, command):
    args, out = _out_commands(w, tmp_path)[command]
    if out.suffix:
        out.write_bytes(b"an earlier result")
    else:
        out.mkdir()
        (out / "report.md").write_text("an earlier report")
    before = snapshot(out)
    assert_one_line_error(run(*args), out, "--overwrite")
    assert snapshot(out) == before

    result = run(*args, "--overwrite")
    assert result.exit_code == 0, result.output
    after = snapshot(out)
    assert after != before and len(after) >= len(before)


def test_two_prompt_sets_share_a_cache_parent(w, tmp_path):
    """The feature cache is keyed by its inputs: other prompts get their own folder, never a cache error."""
    model = ["--model", w / "model", "--sae", w / "sae", "--k", 2]
    for cache_args, env, cache in (
        (["--cache-dir", tmp_path / "shared"], {}, tmp_path / "shared"),
        ([], {"SAERL_ZOO_CACHE": str(tmp_path / "home-cache")}, tmp_path / "home-cache" / "features"),  # the default place
    ):
        for prompts in ("prompts.jsonl", "other_prompts.jsonl"):
            out = tmp_path / f"{cache.name}-{prompts}"
            result = run("curriculum", "--prompts", w / prompts, "--out", out, *model, *cache_args, env=env)
            assert result.exit_code == 0, result.output
            assert len((out / "ordered.jsonl").read_text().splitlines()) == {"prompts.jsonl": 60, "other_prompts.jsonl": 30}[prompts]
        manifests = sorted(json.loads(p.read_text())["n_prompts"] for p in cache.glob("*/manifest.json"))
        assert manifests == [30, 60]


# ---------------------------------------------------------------- output hygiene


def test_outputs_follow_the_umask(w, tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        write_tensors(tmp_path / "b.safetensors", {"x": np.zeros(3)})  # safetensors recreates the file it writes
        save_csr(tmp_path / "c.safetensors", sp.eye(3, format="csr"))
        assert run("cluster", "--features", w / "X.safetensors", "--k", 3, "--out", tmp_path / "clusters").exit_code == 0
        with atomic_folder(tmp_path / "checkpoint") as folder:  # checkpoints, converted models
            write_json(folder / "state.json", {"step": 1})
        os.umask(0o077)
        write_json(tmp_path / "private.json", {"x": 1})
    finally:
        os.umask(old)
    modes = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode) for p in tmp_path.rglob("*") if p.is_file()}
    assert modes.pop("private.json") == 0o600
    assert set(modes.values()) == {0o644}, modes
    assert len(modes) >= 6 and not list(tmp_path.rglob("*.tmp"))
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "clusters", tmp_path / "checkpoint")} == {0o755}


def test_many_bad_prompts_are_listed_bounded_and_numbered(w, tmp_path):
    # --max-length 1 leaves only the BOS token of each of the 60 prompts
    line = assert_one_line_error(run("featurize", "--prompts", w / "prompts.jsonl", "--out", tmp_path / "X.safetensors", "--max-length", 1,
                                     "--model", w / "model", "--sae", w / "sae"), "60 prompts have no tokens besides special tokens")
    assert line.count(" #") == 5 and "#1 'What is" in line and line.endswith("and 55 more")
    assert not (tmp_path / "X.safetensors").exists()


def test_bad_prompts_are_numbered_across_shards():
    """A NaN embedding poisons exactly the prompts holding 'z'; their numbers count from 1 over the whole set, not the shard."""
    tokenizer = make_char_tokenizer()
    model = make_tiny_llama(len(tokenizer))
    with torch.no_grad():
        model.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids("z")] = float("nan")
    prompts = [f"what is {i}?" for i in range(20)]
    for i in (9, 10):  # both in the second shard of 8
        prompts[i] = f"zero {i}"
    with pytest.raises(ValueError) as err:
        featurize(prompts, model, tokenizer, make_tiny_sae(32), shard_size=8, progress=False)
    assert str(err.value) == "NaN/inf in the SAE features of 2 prompts: #10 'zero 9', #11 'zero 10'"

