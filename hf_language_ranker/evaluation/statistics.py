"""Paired statistics over prompts: two methods' per-prompt outcomes on the same prompts, compared prompt by prompt.

    from hf_language_ranker.evaluation import paired_bootstrap, paired_stderr

    print(paired_bootstrap(ranker_correct, majority_correct))    # +0.135 [+0.090, +0.185] (28 won, 1 lost)
    paired_stderr(ranker_correct, majority_correct)               # one standard error of the mean difference

The report's intervals, the recipe choice's one-standard-error rule and the benchmarks all use these two.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``a - b`` over paired 0/1 outcomes, its bootstrap 95% interval, and prompts won / lost."""

    difference: float
    low: float
    high: float
    wins: int
    losses: int

    def __str__(self) -> str:
        return f"{self.difference:+.3f} [{self.low:+.3f}, {self.high:+.3f}] ({self.wins} won, {self.losses} lost)"


def _paired_differences(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    """``a - b`` per prompt in float64; an error unless both are equally long, non-empty 1-d sequences."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"Paired statistics need two equally long, non-empty 1-d sequences, got {a.shape}, {b.shape}.")
    return a - b


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], num_samples: int = 10_000, seed: int = 0
) -> PairedDifference:
    """Paired bootstrap (prompts resampled with replacement) of ``mean(a) - mean(b)``, percentile 95% interval."""
    differences = _paired_differences(a, b)
    rows = np.random.default_rng(seed).integers(0, len(differences), size=(num_samples, len(differences)))
    means = differences[rows].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return PairedDifference(
        float(differences.mean()), float(low), float(high), int((differences > 0).sum()), int((differences < 0).sum())
    )


def paired_stderr(a: Sequence[float], b: Sequence[float]) -> float:
    """One standard error of the mean of ``a - b`` over paired prompts (0 for a single prompt)."""
    differences = _paired_differences(a, b)
    return float(differences.std(ddof=1) / np.sqrt(len(differences))) if len(differences) > 1 else 0.0
