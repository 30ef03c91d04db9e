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
