"""Questionable input is refused with one line that points at it (issue 11, items 6, 7 and 10)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from click.testing import CliRunner

from saerl_zoo.cli import main
from saerl_zoo.data import align_labels, load_rows
from saerl_zoo.storage import save_csr


def write_jsonl(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_a_line_is_named_the_same_way_by_every_check(tmp_path):
    """Line 4 (after a blank line) is `file:4` whether it is broken JSON, not an object, or has no prompt."""
    head = ['{"id": "a", "prompt": "x"}', "", '{"id": "b", "prompt": "y"}']
    for bad, message in (("not json", "is not valid JSON"), ("[1, 2]", "is not a JSON object"), ('{"id": "c"}', "has no text")):
        path = write_jsonl(tmp_path / "p.jsonl", [*head, bad])
        with pytest.raises(ValueError) as err:
            load_rows(path)
        assert str(err.value).startswith(f"{path}:4 {message}")


def test_duplicated_label_ids_are_refused_with_their_lines(tmp_path):
    prompts = load_rows(write_jsonl(tmp_path / "p.jsonl", [json.dumps({"id": f"q{i}", "prompt": "x"}) for i in range(60)]))
    once = [json.dumps({"id": f"q{i}", "pass_rate": 0.5}) for i in range(60)]
    labels = load_rows(write_jsonl(tmp_path / "l.jsonl", once + once[:50]), prompt_field=None)
    with pytest.raises(ValueError) as err:
        align_labels(prompts, labels, "pass_rate")
    assert str(err.value) == (
        f"label id 'q0' appears 2 times: {tmp_path}/l.jsonl:1, {tmp_path}/l.jsonl:61 (50 ids repeat); label ids must be unique"
    )


def test_duplicated_prompt_ids_are_refused(tmp_path):
    prompts = [{"id": "a"}, {"id": "b"}, {"id": "a"}]
    with pytest.raises(ValueError, match=r"^prompt id 'a' appears 2 times: prompt 1, prompt 3; prompt ids must be unique$"):
        align_labels(prompts, [{"id": "b", "pass_rate": 1.0}], "pass_rate")


@pytest.mark.parametrize("value", ["NaN", "Infinity", "null", '"0.5"'])
def test_a_label_that_is_not_a_finite_number_names_its_line(tmp_path, value):
    prompts = [{"id": "a"}, {"id": "b"}]
    path = write_jsonl(tmp_path / "l.jsonl", ['{"id": "a", "pass_rate": 0.5}', f'{{"id": "b", "pass_rate": {value}}}'])
    with pytest.raises(ValueError, match=rf"^{path}:2: 'pass_rate' is .*, not a finite number$"):
        align_labels(prompts, load_rows(path, prompt_field=None), "pass_rate")


def test_aligned_labels_keep_their_values():
    index, values = align_labels([{"id": 7}, {"id": "b"}], [{"id": "b", "label": True}, {"id": 7, "label": 0}], "label")
    assert index.tolist() == [1, 0] and values.tolist() == [1.0, 0.0]


def test_fit_probe_refuses_duplicated_labels_in_one_line(tmp_path):
    prompts = [{"id": f"p{i:05d}"} for i in range(2000)]
    labels = write_jsonl(tmp_path / "l.jsonl", [json.dumps({"id": p["id"], "pass_rate": 0.5}) for p in prompts[:3] + prompts[:3]])
    features = tmp_path / "X.safetensors"
    save_csr(features, sp.csr_matrix(np.ones((2000, 4), dtype=np.float32)))
    result = CliRunner().invoke(main, ["fit-probe", "--features", str(features), "--labels", str(labels), "--kind", "difficulty",
                                       "--out", str(tmp_path / "probe")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"Error: label id 'p00000' appears 2 times: {labels}:1, {labels}:4 (3 ids repeat); label ids must be unique"]
    assert not (tmp_path / "probe").exists()


@pytest.mark.parametrize("name", ["", "   ", "\t\n"])
def test_empty_artifact_names_are_refused(tmp_path, monkeypatch, name):
    """Not `... not str`, and not the probe that happens to sit in the current folder."""
    from saerl_zoo.difficulty import DifficultyProbe
    from saerl_zoo.zoo.api import load_probe, load_sae

    rng = np.random.default_rng(0)
    DifficultyProbe.fit(rng.random((40, 6)), rng.random(40)).save(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="^load_sae got an empty name; give a catalog name, a Hub repo id or a folder$"):
        load_sae(name)
    with pytest.raises(ValueError, match="^load_probe got an empty name; give a catalog name, a Hub repo id or a folder$"):
        load_probe(name)
