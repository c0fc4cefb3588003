"""Free best-of-N selection rules over a candidate dataset: no training, only what the samples carry.

Every rule looks only at the FIRST ``n`` candidates of each prompt, so accuracy-vs-N curves are nested (the
candidates at N=4 are a subset of those at N=8). The dataset layout is the one of `hf_language_ranker.candidates`.

Rules (``(dataset, n) -> chosen index per prompt``): `first_sample_choices`, `majority_vote_choices`,
`mean_log_prob_choices`, `self_certainty_choices` and `oracle_choices` (pass@N). A learned scorer's scores become
choices by `SELECTION_RULES`: the best-scored candidate, or the score-weighted vote over parsed answers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from datasets import Dataset

from ..agreement import weighted_vote_choices
from ..candidates import (
    CORRECT_THRESHOLD,
    MEAN_LOG_PROBS,
    candidate_feature_column,
    check_feature_layer,
    dataset_answer_ids,
    prompt_feature_column,
)

FIRST_SAMPLE = "first sample"
MAJORITY_VOTE = "majority vote"
MEAN_LOG_PROB = "mean log-prob"
SELF_CERTAINTY = "self-certainty"
ORACLE = "oracle (pass@N)"

ChoiceRule = Callable[[Dataset, int], np.ndarray]


# ------------------------------------------------------------------------------------------------- data access
def num_candidates(dataset: Dataset) -> int:
    """The number of candidates every prompt of ``dataset`` has (the smallest count if they differ)."""
    if "labels" not in dataset.column_names:
        raise ValueError(
            f"Not a candidate dataset: no 'labels' column (columns: {dataset.column_names}). "
            "See hf_language_ranker.candidates for the layout."
        )
    if len(dataset) == 0:
        raise ValueError("The candidate dataset is empty.")
    return min(len(labels) for labels in dataset.with_format(None)["labels"])


def check_num_candidates(dataset: Dataset, n: int) -> None:
    """Raise a clear error unless every prompt has at least ``n >= 1`` candidates."""
    available = num_candidates(dataset)
    if not 1 <= n <= available:
        raise ValueError(f"Cannot select among the first {n} candidates: the dataset has {available} per prompt.")


def _first_n(values: Any, n: int) -> np.ndarray:
    """``[P, n, ...]`` float32 array of the first ``n`` entries of each row of a numpy-formatted column."""
    if isinstance(values, np.ndarray) and values.dtype != object:
        return values[:, :n].astype(np.float32)
    return np.stack([np.asarray(row, dtype=np.float32)[:n] for row in values])


def per_candidate_values(dataset: Dataset, column: str, n: int) -> np.ndarray:
    """A per-candidate column (``labels``, ``mean_log_probs``, ...) for the first ``n`` candidates: ``[P, n]``."""
    if column not in dataset.column_names:
        raise ValueError(f"The candidate dataset has no {column!r} column (columns: {dataset.column_names}).")
    return _first_n(dataset.with_format("numpy", columns=[column])[:][column], n)


def correct_candidates(dataset: Dataset, n: int) -> np.ndarray:
    """``[P, n]`` booleans: which of the first ``n`` candidates are correct (label >= `CORRECT_THRESHOLD`)."""
    return per_candidate_values(dataset, "labels", n) >= CORRECT_THRESHOLD


def layer_features(dataset: Dataset, layer: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Prompt features ``[P, H]`` and the first ``n`` candidates' features ``[P, n, H]`` of ``layer``, float32."""
    check_feature_layer(dataset, layer)
    columns = [prompt_feature_column(layer), candidate_feature_column(layer)]
    values = dataset.with_format("numpy", columns=columns)[:]
    prompts = np.asarray(values[columns[0]], dtype=np.float32)
    return prompts, _first_n(values[columns[1]], n)


# ------------------------------------------------------------------------------------------------ choice rules
def first_sample_choices(dataset: Dataset, n: int) -> np.ndarray:
    """Plain sampling: always the first candidate."""
    check_num_candidates(dataset, n)
    return np.zeros(len(dataset), dtype=np.int64)


def _argmax_choices(dataset: Dataset, column: str, n: int) -> np.ndarray:
    """The candidate with the highest value of ``column`` (NaN counts as lowest; ties go to the first)."""
    check_num_candidates(dataset, n)
    return choices_from_scores(per_candidate_values(dataset, column, n))


def mean_log_prob_choices(dataset: Dataset, n: int) -> np.ndarray:
    """The candidate with the highest mean token log-probability."""
    return _argmax_choices(dataset, MEAN_LOG_PROBS, n)


def self_certainty_choices(dataset: Dataset, n: int) -> np.ndarray:
    """The candidate with the highest self-certainty (Kang et al. 2025, KL of the token distribution from uniform)."""
    return _argmax_choices(dataset, "self_certainty", n)


def majority_vote_choices(dataset: Dataset, n: int) -> np.ndarray:
    """Self-consistency: a candidate carrying the most common parsed answer among the first ``n``.

    Answers are compared as stored in ``answers``; ``None`` (no comparable answer) never votes. Ties between
    equally common answers go to the answer of the candidate with the highest mean log-prob, which is also the
    candidate returned; remaining ties go to the first candidate. A prompt whose answers are all ``None`` falls
    back to the first sample.
    """
    check_num_candidates(dataset, n)
    log_probs = np.nan_to_num(per_candidate_values(dataset, MEAN_LOG_PROBS, n), nan=-np.inf)
    choices = np.zeros(len(dataset), dtype=np.int64)
    for row, answers in enumerate(dataset.with_format(None)["answers"]):
        answers = list(answers)[:n]
        counts = Counter(answer for answer in answers if answer is not None)
        voters = [index for index, answer in enumerate(answers) if answer is not None]
        if voters:
            choices[row] = max(voters, key=lambda i: (counts[answers[i]], log_probs[row, i], -i))
    return choices


def oracle_choices(dataset: Dataset, n: int) -> np.ndarray:
    """pass@N: the first correct candidate when there is one, else the first candidate (the ceiling of any rule)."""
    check_num_candidates(dataset, n)
    return correct_candidates(dataset, n).argmax(-1)


#: The heuristic rules `evaluate` always reports (the oracle is reported separately, as a ceiling).
BASELINES: dict[str, ChoiceRule] = {
    FIRST_SAMPLE: first_sample_choices,
    MAJORITY_VOTE: majority_vote_choices,
    MEAN_LOG_PROB: mean_log_prob_choices,
    SELF_CERTAINTY: self_certainty_choices,
}


def choices_from_scores(scores: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """The highest-scored candidate per prompt; NaN counts as ``-inf`` and ties go to the first candidate."""
    return np.asarray([np.nan_to_num(np.asarray(row, dtype=np.float64), nan=-np.inf).argmax() for row in scores])


def weighted_vote_from_scores(dataset: Dataset, scores: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Score-weighted voting (`hf_language_ranker.agreement.weighted_vote_choices`) over the parsed answers of the
    first ``len(scores[0])`` candidates: the best-scored member of the answer with the largest softmax weight."""
    values = np.nan_to_num(np.stack([np.asarray(row, dtype=np.float64) for row in scores]), nan=-np.inf)
    ids = dataset_answer_ids(dataset, values.shape[1])
    return weighted_vote_choices(torch.from_numpy(values), ids, torch.ones_like(ids, dtype=torch.bool)).numpy()


#: How a learned scorer's scores become a choice: the best-scored candidate, or the score-weighted vote.
SELECTION_RULES: dict[str, Callable[[Dataset, Sequence[np.ndarray]], np.ndarray]] = {
    "argmax": lambda dataset, scores: choices_from_scores(scores),
    "weighted_vote": weighted_vote_from_scores,
}


def chosen_correct(dataset: Dataset, choices: Sequence[int] | np.ndarray) -> np.ndarray:
    """``[P]`` booleans: whether each prompt's chosen candidate is correct (label >= `CORRECT_THRESHOLD`)."""
    choices = np.asarray(choices, dtype=np.int64)
    if choices.shape != (len(dataset),):
        raise ValueError(f"Expected one choice per prompt ({len(dataset)}), got an array of shape {choices.shape}.")
    labels = [np.asarray(row, dtype=np.float64) for row in dataset.with_format(None)["labels"]]
    if any(not 0 <= choice < len(row) for choice, row in zip(choices, labels)):
        raise ValueError("A choice points past the candidates of its prompt.")
    return np.asarray([row[choice] >= CORRECT_THRESHOLD for choice, row in zip(choices, labels)], dtype=bool)


def selection_accuracy(dataset: Dataset, choices: Sequence[int] | np.ndarray) -> float:
    """The fraction of prompts whose chosen candidate is correct (label >= `CORRECT_THRESHOLD`)."""
    return float(np.mean(chosen_correct(dataset, choices)))
