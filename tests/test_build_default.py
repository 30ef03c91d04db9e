"""scripts/build_default.py's LM training: a killed build resumes bit for bit, and only with the same settings."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import build_default as bd  # noqa: E402

from saerl_zoo.tasks import build_worked_train_set, format_prompt  # noqa: E402

SMALL = ["--lm-steps", "5", "--checkpoint-every", "2", "--batch-size", "4", "--hidden", "32", "--intermediate", "64",
         "--layers", "1", "--heads", "2", "--max-len", "160"]


@pytest.fixture(scope="module")
def data():
    texts = [f"{format_prompt(p['question'])} {p['solution']}" for p in build_worked_train_set(200, seed=0, level_weights=[1] * 7)]
    tokenizer = bd.train_tokenizer(texts, 128, 160)
    return tokenizer, bd.encode_examples(tokenizer, texts)


def _train(args, data, out, monkeypatch=None, kill_at=None):
    tokenizer, examples = data
    model = bd.make_model(tokenizer, args)
    if kill_at is not None:  # the kill_at-th batch never comes back
        calls, real = [0], bd.collate

        def collate(rows, pad_id):
            calls[0] += 1
            if calls[0] == kill_at:
                raise KeyboardInterrupt
            return real(rows, pad_id)

        monkeypatch.setattr(bd, "collate", collate)
        with pytest.raises(KeyboardInterrupt):
            bd.train_lm(model, tokenizer, examples, args, out)
        monkeypatch.setattr(bd, "collate", real)
        return None
    bd.train_lm(model, tokenizer, examples, args, out)
    return model


def test_killed_lm_training_resumes_bit_for_bit(data, tmp_path, monkeypatch):
    args = bd.parse_args(SMALL)
    whole = _train(args, data, tmp_path / "whole")
    _train(args, data, tmp_path / "killed", monkeypatch, kill_at=4)  # after the step-2 checkpoint
    assert (tmp_path / "killed" / "lm_checkpoint" / "state.pt").exists()
    resumed = _train(args, data, tmp_path / "killed")
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_resume_with_other_settings_is_refused(data, tmp_path, monkeypatch):
    _train(bd.parse_args(SMALL), data, tmp_path, monkeypatch, kill_at=4)
    with pytest.raises(SystemExit, match="is from a run with"):
        _train(bd.parse_args([*SMALL, "--lr", "1e-3"]), data, tmp_path)
