"""Pacing arithmetic and the figures that measure an order (saerl_zoo/pacing.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from saerl_zoo.pacing import Pacing, competence, pacing_figures, stage_cuts


def test_competence_follows_platanios_schedules():
    # linear: c0 + (1 - c0) x, sqrt: sqrt(c0^2 + (1 - c0^2) x), at progress x = (t + 1) / T
    assert competence(0, 10, "linear", 0.0) == pytest.approx(0.1)
    assert competence(4, 10, "linear", 0.2) == pytest.approx(0.2 + 0.8 * 0.5)
    assert competence(3, 16, "sqrt", 0.0) == pytest.approx(0.5)
    assert competence(0, 4, "sqrt", 0.1) == pytest.approx(math.sqrt(0.01 + 0.99 * 0.25))
    assert competence(9, 10, "linear", 0.01) == competence(50, 10, "sqrt", 0.3) == 1.0
    with pytest.raises(ValueError, match="competence schedule"):
        competence(0, 10, "cubic", 0.0)


def test_stage_cuts_sit_on_whole_batches():
    assert stage_cuts(100, 4, 8) == [24, 48, 72]  # 25, 50, 75 rounded to multiples of 8
    assert stage_cuts(100, 1, 8) == []
    assert stage_cuts(5, 3, 8) == []  # one batch: one stage


def test_pacing_describes_only_what_shapes_the_order():
    assert Pacing().describe() == {} and str(Pacing()) == "unpaced" and not Pacing().active
    assert str(Pacing(stages=4)) == "stages=4"
    assert Pacing(num_steps=9).describe() == {"num_steps": 9, "competence": "linear", "initial_competence": 0.01}


def test_pacing_figures_on_a_hand_made_order():
    difficulty = np.arange(16, dtype=float)
    clusters = np.array([0, 0, 1, 1] * 4)
    levels = np.array([1.0] * 4 + [2.0] * 4 + [np.nan] * 4 + [3.0] * 4)
    batches = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11], [12, 13], [14, 15]]
    f = pacing_figures(batches, difficulty, clusters, levels, window=3)
    assert f["spearman_position_difficulty"] == pytest.approx(1.0)
    assert f["spearman_batch_difficulty"] == pytest.approx(1.0)
    assert f["level_by_quarter"] == [1.0, 2.0, None, 3.0]  # unknown levels are left out; none known: None
    assert f["difficulty_by_quarter"] == [1.5, 5.5, 9.5, 13.5]
    assert f["dominant_share_mean"] == 1.0
    assert f["distinct_clusters_per_window_min"] == 2
    reversed_f = pacing_figures(batches[::-1], difficulty, clusters, None, window=3)
    assert reversed_f["spearman_batch_difficulty"] == pytest.approx(-1.0) and "level_by_quarter" not in reversed_f
    mixed = pacing_figures([[0, 2], [1, 3]], difficulty, clusters, window=32)
    assert mixed["dominant_share_mean"] == 0.5 and mixed["distinct_clusters_per_window_min"] == 2
    flat = pacing_figures([[0], [1]], np.zeros(16), None)
    assert flat["spearman_batch_difficulty"] is None and "dominant_share_mean" not in flat
