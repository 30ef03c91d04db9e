"""scripts/transfer_table.py: which stitch its featurize check validates, and that its report renders the committed file."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def table():
    spec = importlib.util.spec_from_file_location("transfer_table", ROOT / "scripts" / "transfer_table.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["transfer_table"] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["transfer_table"]


def row(pairing: str, method: str, corpus_ev: float) -> dict:
    return {"pairing": pairing, "method": method, "fit": {"explained_variance": corpus_ev}}


def test_featurize_check_takes_the_default_token_ridge_not_the_higher_prompt_ev(table):
    # the tiny pair's corpus EVs: prompt-ridge 0.964 (prompt means) > token-ridge 0.888 (single tokens)
    rows = [row("prompt", "ridge", 0.964), row("prompt", "procrustes", 0.945),
            row("token", "ridge", 0.888), row("token", "procrustes", 0.840)]
    assert table.default_stitch_row(rows) is rows[2]


def test_featurize_check_refuses_when_the_default_stitch_was_not_fitted(table):
    with pytest.raises(ValueError, match="0 rows with the default stitch \\(token-ridge\\)"):
        table.default_stitch_row([row("prompt", "ridge", 0.964)])


def test_committed_report_is_what_the_script_renders_from_its_json(table):
    """Labels (host and target in words) live in the script, so a regeneration says what the committed file says."""
    results = ROOT / "benchmarks" / "results"
    data = json.loads((results / "transfer.json").read_text())
    assert table.markdown(data["pairs"], data["meta"]) == (results / "transfer.md").read_text()


def pool_prompts() -> list[str]:
    from saerl_zoo.data import load_rows
    from saerl_zoo.embedded import default_path

    return [r["prompt"] for r in load_rows(default_path("prompts.jsonl"))]


def test_fitting_corpus_is_disjoint_from_the_pool_by_construction(table, tmp_path):
    """No fitting text contains an evaluation prompt verbatim (issue 17, item 5), whatever the task generator draws."""
    pool = pool_prompts()
    corpus = table.build_corpus(tmp_path / "corpus.jsonl", pool, 200, 5, seed=0)
    assert len(corpus) == 205 and not any(p in t for t in corpus for p in pool)
    assert table.build_corpus(tmp_path / "corpus.jsonl", pool, 200, 5, seed=0) == corpus  # read back from the cache


def test_corpus_only_writes_the_fitting_corpus_and_stops(table, tmp_path):
    """The README's `transfer fit` reads the table's corpus: `--corpus-only` makes it without the models."""
    table.main(["--corpus-only", "--out", str(tmp_path), "--n-task", "40", "--n-generic", "3"])
    rows = [json.loads(line) for line in (tmp_path / "corpus.jsonl").read_text().splitlines()]
    assert len(rows) == 43 and sorted(p.name for p in tmp_path.iterdir()) == ["corpus.jsonl", "corpus.settings.json"]
    with pytest.raises(SystemExit, match="was made with .*'n_task': 40.*not .*'n_task': 5"):  # not silently reused
        table.main(["--corpus-only", "--out", str(tmp_path), "--n-task", "5", "--n-generic", "3"])
    with pytest.raises(SystemExit, match="'seed': 0.*not .*'seed': 3"):
        table.main(["--corpus-only", "--out", str(tmp_path), "--n-task", "40", "--n-generic", "3", "--seed", "3"])


def test_a_cached_corpus_holding_a_pool_prompt_is_refused(table, tmp_path):
    pool = pool_prompts()
    path = tmp_path / "corpus.jsonl"
    path.write_text(json.dumps({"text": "generic text"}) + "\n" + json.dumps({"text": f"{pool[7]} 42"}) + "\n")
    with pytest.raises(ValueError, match="1 of 2 corpus texts contain an evaluation prompt verbatim \\(first: text 1"):
        table.build_corpus(path, pool, 1, 1, seed=0)


def test_disjoint_texts_refuses_when_too_few_are_left():
    from saerl_zoo.transfer.corpus import containing, disjoint_texts

    assert containing(["ab c", "xyz", "c"], ["c"]) == [0, 2]
    assert disjoint_texts(["ab c", "xyz", "qq"], ["c"], 2) == ["xyz", "qq"]
    with pytest.raises(ValueError, match="only 1 of 2 candidate texts contain none of the 1 evaluation prompts; 2 are needed"):
        disjoint_texts(["ab c", "xyz"], ["c"], 2)


def test_report_shows_surface_baselines_and_bootstrap_gaps_when_the_run_has_them(table):
    data = json.loads((ROOT / "benchmarks" / "results" / "transfer.json").read_text())
    res = data["pairs"]["cross"]
    gap = {"gap": 0.04, "low": 0.016, "high": 0.068}
    for r in res["rows"]:
        r["eval"]["probes"]["native_minus_transferred"] = {"difficulty_spearman": {"gap": 0.002, "low": -0.004, "high": 0.008},
                                                           "quality_auroc": gap}
    both = {"n_train": 200, "n_test": 1630, "sae_probe": {"auroc": 0.776},
            "tfidf_char_1_3": {"auroc": 0.74, "sae_minus_baseline": {"gap": 0.036, "low": 0.01, "high": 0.06}},
            "length_digits": {"auroc": 0.69, "sae_minus_baseline": {"gap": 0.086, "low": 0.05, "high": 0.12}}}
    res["surface_baselines"] = {"quality": both}
    res["preprocessing"] = {"context_length": 48, "special_tokens": "drop", "outlier_norm_ratio": 10.0, "prepend_bos": True}
    text = table.markdown({"cross": res}, data["meta"])
    assert "character 1–3-gram TF-IDF 0.740, length + digit count 0.690; native SAE probe 0.776" in text
    assert "vs n-grams +0.036 [+0.010, +0.060], vs length/digits +0.086 [+0.050, +0.120]" in text
    assert "| +0.002 [-0.004, +0.008] / +0.040 [+0.016, +0.068] |" in text and '"outlier_norm_ratio": 10.0' in text
