"""Self-supervised quality labels (saerl_zoo.quality_labels) and the quality probe's AUROC per defect kind."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from saerl_zoo.defects import NOT_IN_TEXT, TEXT_DEFECTS
from saerl_zoo.errors import UserError
from saerl_zoo.quality import QualityProbe, defect_aurocs, label_defects
from saerl_zoo.quality_labels import label_quality
from saerl_zoo.storage import OutputExistsError

CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _math_set(tmp_path: Path, n: int = 60) -> Path:
    rng = random.Random(0)
    questions = ("A box holds {} pens and {} pencils. How many items are in {} boxes?",
                 "What is {} times {} plus {}?", "Ann reads {} pages a day for {} days, then {} more. How many pages?")
    rows = [{"id": f"m{i}", "prompt": "Q: " + questions[i % 3].format(*(rng.randint(2, 99) for _ in range(3))) + "\nA:"}
            for i in range(n)]
    return _write(tmp_path / "prompts.jsonl", rows)


def _label(prompts: Path, out: Path, **kw):
    args = dict(fraction=None, count=None, seed=0, prompt_field="prompt", human_labels=None, overwrite=False)
    return label_quality(prompts, out, **{**args, **kw})


def test_labels_are_balanced_broken_within_the_template_and_seeded(tmp_path):
    prompts = _math_set(tmp_path)
    summary = _label(prompts, tmp_path / "q.jsonl", count=40)
    rows, originals = _read(tmp_path / "q.jsonl"), {r["id"]: r["prompt"] for r in _read(prompts)}
    assert (summary["good"], summary["bad"], summary["rows"]) == (20, 20, 40) and len(rows) == 40
    assert summary["defects"] == dict.fromkeys(sorted(TEXT_DEFECTS), 5) and summary["note"] is None
    assert summary["template"] == {"prefix": "Q: ", "suffix": "?\nA:"}  # every question ends in "?"
    assert len({r["id"] for r in rows}) == 40 and len({r["source_id"] for r in rows}) == 40  # 40 distinct prompts sampled
    for r in rows:
        assert set(r) == {"id", "prompt", "label", "defect", "source_id"}
        if r["label"] == 1:
            assert r["defect"] is None and r["prompt"] == originals[r["id"]] and r["source_id"] == r["id"]
        else:
            assert r["defect"] in TEXT_DEFECTS and r["prompt"] not in originals.values()
            assert r["prompt"].startswith("Q: ") and r["prompt"].endswith("?\nA:") and r["source_id"] in originals
    again = _label(prompts, tmp_path / "again.jsonl", count=40)
    assert (tmp_path / "again.jsonl").read_bytes() == (tmp_path / "q.jsonl").read_bytes() and again["defects"] == summary["defects"]
    _label(prompts, tmp_path / "other.jsonl", count=40, seed=1)
    assert (tmp_path / "other.jsonl").read_bytes() != (tmp_path / "q.jsonl").read_bytes()
    assert _label(prompts, tmp_path / "tenth.jsonl", fraction=0.2)["rows"] == 12  # 20% of 60


def test_number_free_chat_prompts_skip_number_corruption_and_say_so(tmp_path):
    words = "river garden music window season story market player morning company".split()
    rows = [{"id": i, "text": CHAT.format(f"Write a short poem about the {words[i % 10]} and the {words[(i * 3 + 1) % 10]}.")}
            for i in range(40)]
    summary = _label(_write(tmp_path / "chat.jsonl", rows), tmp_path / "q.jsonl", count=24, prompt_field="text")
    out = _read(tmp_path / "q.jsonl")
    assert summary["skipped"]["corrupted_numbers"] == 3 and "corrupted_numbers" not in summary["defects"]
    assert summary["bad"] == 12 and "corrupted_numbers on 3" in summary["note"]
    assert summary["template"]["prefix"] == "<|im_start|>user\nWrite a short poem about the "
    assert all(r["text"].endswith("<|im_end|>\n<|im_start|>assistant\n") for r in out)  # the chat turns stay whole


def test_human_labels_are_added_or_used_alone(tmp_path):
    prompts = _math_set(tmp_path)
    human = _write(tmp_path / "human.jsonl", [{"id": "m0", "label": 0, "defect": "wrong_answer"}, {"id": "m1", "label": 1},
                                              *({"id": f"m{i}", "label": i % 2} for i in range(2, 10))])
    summary = _label(prompts, tmp_path / "both.jsonl", count=20, human_labels=human)
    rows = _read(tmp_path / "both.jsonl")
    assert (summary["rows"], summary["human"]) == (30, 10) and summary["defects"]["wrong_answer"] == 1
    by_id = {r["id"]: r for r in rows}
    assert by_id["m0"]["label"] == 0 and by_id["m0"]["defect"] == "wrong_answer" and by_id["m1"]["label"] == 1
    assert not {r["source_id"] for r in rows if r["id"] not in by_id or r["defect"] in TEXT_DEFECTS} & {f"m{i}" for i in range(10)}
    alone = _label(prompts, tmp_path / "alone.jsonl", count=0, human_labels=human)
    assert (alone["rows"], alone["human"], alone["good"], alone["bad"]) == (10, 10, 5, 5)


@pytest.mark.parametrize("rows, message", [
    ([{"id": "m0", "label": 2}], r"human.jsonl:1: 'label' is 2; quality labels are 1 \(good\) or 0 \(bad\)"),
    ([{"id": "m0", "label": 1, "defect": "truncated"}], r"human.jsonl:1: label 1 \(good\) with defect 'truncated'"),
    ([{"id": "m0", "label": 0, "defect": 3}], r"human.jsonl:1: 'defect' is 3"),
    ([{"id": "nope", "label": 0}], r"human.jsonl:1 names unknown prompt id 'nope'"),
])
def test_bad_human_labels_are_refused_by_line(tmp_path, rows, message):
    human = _write(tmp_path / "human.jsonl", rows)
    with pytest.raises(ValueError, match=message):
        _label(_math_set(tmp_path), tmp_path / "q.jsonl", count=20, human_labels=human)
    assert not (tmp_path / "q.jsonl").exists()


def test_bad_input_is_one_line_and_writes_nothing(tmp_path):
    small = _math_set(tmp_path, n=30)
    out = tmp_path / "q.jsonl"
    with pytest.raises(UserError, match=r"^2 good and 1 bad labels \(10% of 30 prompts: 3 sampled\) are too few .* needs 4 of each; sample at least 8"):
        _label(small, out)
    with pytest.raises(UserError, match="give --fraction or --count, not both"):
        _label(small, out, fraction=0.5, count=10)
    with pytest.raises(UserError, match="--count 31 is not between 0 and the 30 prompts"):
        _label(small, out, count=31)
    with pytest.raises(UserError, match="ending in .jsonl"):
        _label(small, tmp_path / "q.json", count=10)
    rows = _read(small)
    rows[7]["id"] = "m3"
    with pytest.raises(ValueError, match=r"prompt id 'm3' appears 2 times: .*dup.jsonl:4, .*dup.jsonl:8"):
        _label(_write(tmp_path / "dup.jsonl", rows), out, count=10)
    assert not out.exists()
    out.write_text("keep me\n")
    with pytest.raises(OutputExistsError, match="already exists: give --overwrite"):
        _label(small, out, count=10)
    assert out.read_text() == "keep me\n"
    assert _label(small, out, count=10, overwrite=True)["rows"] == 10


def test_probe_reports_auroc_per_defect_kind_with_hidden_kinds_apart():
    rng = np.random.default_rng(0)
    kinds = [None] * 40 + ["truncated"] * 20 + ["near_duplicate"] * 20 + ["wrong_answer"] * 20
    y = np.array([1] * 40 + [0] * 60)
    X = rng.normal(size=(100, 6))
    X[40:80, 0] += 3.0  # the visible kinds move feature 0; a wrong answer moves nothing
    probe = QualityProbe.fit(X, y, defects=kinds)
    m = probe.metrics
    assert {"auroc_defect_truncated", "auroc_defect_near_duplicate", "auroc_hidden_defect_wrong_answer"} <= set(m)
    assert "auroc_defect_wrong_answer" not in m and m["n_defect_truncated"] == 4  # 20 of 100 held out, in proportion
    assert m["auroc_defect_truncated"] > 0.9 and m["auroc_hidden_defect_wrong_answer"] < 0.9
    assert "auroc_defect_truncated" not in QualityProbe.fit(X, y).metrics  # no kinds, no per-kind figures
    with pytest.raises(ValueError, match=r"label 1 is good \(1\) but names defect 'truncated'"):
        QualityProbe.fit(X, y, defects=["truncated"] + kinds[1:])
    with pytest.raises(ValueError, match="per-defect AUROC needs good/bad"):
        QualityProbe.fit(X, y.astype(float), kind="ridge", defects=kinds)


def test_defect_aurocs_compares_each_kind_with_the_clean_prompts():
    labels = [1, 1, 1, 0, 0, 0, 0]
    scores = [0.9, 0.8, 0.2, 0.1, 0.85, 0.0, 0.5]
    kinds = [None, None, None, "truncated", "wrong_answer", "off_topic", None]
    got = defect_aurocs(labels, scores, kinds)
    assert got == {"auroc_defect_off_topic": 1.0, "n_defect_off_topic": 1.0, "auroc_defect_truncated": 1.0,
                   "n_defect_truncated": 1.0, "auroc_hidden_defect_wrong_answer": pytest.approx(1 / 3),
                   "n_defect_wrong_answer": 1.0}
    assert label_defects([{"id": 1, "label": 1}]) is None


# ---------------------------------------------------------------------------------------------------------------
# Acceptance (issue 15): labels made from synthetic defects of the embedded pool's prompts train a probe that finds
# the pool's *real* broken prompts. The pool is split in two halves by a seed: defects are made from one half only,
# and the probe is scored on the other, whose broken prompts (ground_truth.jsonl) it never saw in any form.


@pytest.fixture(scope="module")
def embedded_run(tmp_path_factory):
    from saerl_zoo.embedded import default_path, load_default_model
    from saerl_zoo.featurizer import featurize
    from saerl_zoo.zoo.api import load_sae

    tmp = tmp_path_factory.mktemp("quality_labels")
    rows, truth = _read(default_path("prompts.jsonl")), _read(default_path("ground_truth.jsonl"))
    order = random.Random(0).sample(range(len(rows)), len(rows))
    source, held = sorted(order[: len(rows) // 2]), sorted(order[len(rows) // 2:])
    prompts = _write(tmp / "source.jsonl", [rows[i] for i in source])
    summary = _label(prompts, tmp / "labels.jsonl", count=200)
    labels = _read(tmp / "labels.jsonl")
    made = {r["prompt"] for r in labels}
    held = [i for i in held if rows[i]["prompt"] not in made]  # a synthetic copy equal to a held-out prompt would leak
    model, tokenizer = load_default_model()
    sae = load_sae(default_path("sae"))
    X = featurize([r["prompt"] for r in labels] + [rows[i]["prompt"] for i in held], model, tokenizer, sae, progress=False)
    return dict(tmp=tmp, summary=summary, labels=labels, X=X[: len(labels)], X_held=X[len(labels):],
                truth=[truth[i] for i in held], n_source=len(source))


def test_synthetic_defect_labels_find_the_pools_real_broken_prompts(embedded_run):
    """Fitted by `fit-probe`, which reads the labels file as both prompt set and labels (one fit: it is the slow part)."""
    from click.testing import CliRunner

    from saerl_zoo.cli import main
    from saerl_zoo.storage import save_csr

    run, tmp = embedded_run, embedded_run["tmp"]
    assert len(run["truth"]) >= 0.99 * run["n_source"]  # at most a handful of held-out prompts equal a synthetic one
    save_csr(tmp / "X.safetensors", run["X"])
    labels = str(tmp / "labels.jsonl")
    result = CliRunner().invoke(main, ["fit-probe", "--features", str(tmp / "X.safetensors"), "--prompts", labels,
                                       "--labels", labels, "--kind", "quality", "--out", str(tmp / "probe")])
    assert result.exit_code == 0, result.output
    probe = QualityProbe.load(tmp / "probe")
    assert all(f"auroc_defect_{kind}" in probe.metrics for kind in TEXT_DEFECTS) and "auroc_defect_truncated" in result.output
    scores = probe.predict(run["X_held"])
    quality = np.array([t["quality"] for t in run["truth"]])
    kinds = [t["defect"] for t in run["truth"]]
    visible = np.array([k not in NOT_IN_TEXT for k in kinds])
    per_kind = defect_aurocs(quality, scores, kinds)
    # Measured with 200 labels (this split and sample, seed 0; seeds 1 and 2 of both in brackets): 0.90 [0.90, 0.92]
    # over every real broken prompt the text can show; truncated 0.96 [0.94, 0.91], off-topic 1.00 [0.98, 1.00],
    # near-duplicate 0.75 [0.75, 0.88]; a wrong reference answer, which the text cannot show, 0.56 [0.53, 0.55].
    assert roc_auc_score(quality[visible], scores[visible]) >= 0.8
    assert min(per_kind[f"auroc_defect_{k}"] for k in ("truncated", "off_topic")) >= 0.85
    assert per_kind["auroc_defect_near_duplicate"] >= 0.65
    assert "auroc_defect_wrong_answer" not in per_kind and per_kind["auroc_hidden_defect_wrong_answer"] < 0.7


def test_a_kind_too_rare_to_split_falls_back_to_splitting_by_class():
    from saerl_zoo.probe import split_strata

    y = np.array([1] * 10 + [0] * 10)
    kinds = np.array([None] * 10 + ["truncated"] * 9 + ["off_topic"], dtype=object)
    assert list(split_strata(y, kinds, 0.2)) == list(y)  # one off-topic row cannot go to both parts
    kinds[-2:] = "off_topic"
    assert len(set(split_strata(y, kinds, 0.2))) == 3
    X = np.random.default_rng(0).normal(size=(20, 3))
    assert "n_defect_truncated" in QualityProbe.fit(X, y, defects=list(kinds[:-1]) + ["truncated"]).metrics
