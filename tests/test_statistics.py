"""Paired statistics over prompts: the bootstrap interval and the standard error that the report, the cross-validated
choice and the benchmarks share."""

from __future__ import annotations

import numpy as np
import pytest

from hf_language_ranker.evaluation import paired_bootstrap, paired_stderr


def test_paired_bootstrap_interval_covers_the_paired_difference():
    a = [1, 1, 0, 1, 0, 1, 1, 0] * 25
    b = [1, 0, 0, 1, 0, 0, 1, 0] * 25
    result = paired_bootstrap(a, b)
    assert result.difference == pytest.approx(0.25)
    assert 0 < result.low < 0.25 < result.high and (result.wins, result.losses) == (50, 0)
    assert paired_bootstrap(b, a).high < 0
    with pytest.raises(ValueError, match="equally long"):
        paired_bootstrap([1, 0], [1])


def test_paired_stderr_is_the_standard_error_of_the_mean_difference():
    a = np.array([1, 1, 0, 1, 0, 1], dtype=bool)
    b = np.array([1, 0, 0, 0, 1, 1], dtype=bool)
    differences = a.astype(float) - b.astype(float)
    assert paired_stderr(a, b) == differences.std(ddof=1) / np.sqrt(len(differences))
    assert paired_stderr(a, a) == 0.0
    assert paired_stderr([1.0], [0.0]) == 0.0  # one prompt: no spread to measure
    with pytest.raises(ValueError, match="equally long"):
        paired_stderr([1, 0], [1])
