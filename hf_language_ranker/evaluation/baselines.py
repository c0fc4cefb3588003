"""The baselines: training-free best-of-N rules over a candidate dataset, only what the samples carry.

Every rule looks only at the FIRST ``n`` candidates of each prompt, so accuracy-vs-N curves are nested (the
candidates at N=4 are a subset of those at N=8). The dataset layout is the one of `hf_language_ranker.candidates`.

Baselines (``(dataset, n) -> chosen index per prompt``): `first_sample_choices`, `majority_vote_choices`,
`mean_log_prob_choices`, `self_certainty_choices` and `oracle_choices` (pass@N). A learned scorer's scores become
choices by a pick rule of `SELECTION_RULES`: the best-scored candidate, or the score-weighted vote over parsed answers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import torch
from datasets import Dataset

from ..agreement import weighted_vote_choices
from ..candidates import (
    ANSWERS,
    CORRECT_THRESHOLD,
    LABELS,
    MEAN_LOG_PROBS,
    check_num_candidates,
    correct_candidates,
    dataset_answer_ids,
    per_candidate_values,
)
from ..candidates import SELF_CERTAINTY as SELF_CERTAINTY_COLUMN
from ..registry import Registry

FIRST_SAMPLE = "first sample"
MAJORITY_VOTE = "majority vote"
MEAN_LOG_PROB = "mean log-prob"
SELF_CERTAINTY = "self-certainty"
ORACLE = "oracle (pass@N)"

ChoiceRule = Callable[[Dataset, int], np.ndarray]


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
    return _argmax_choices(dataset, SELF_CERTAINTY_COLUMN, n)


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
    for row, answers in enumerate(dataset.with_format(None)[ANSWERS]):
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
BASELINES: Registry[ChoiceRule] = Registry(
    "baseline",
    {
        FIRST_SAMPLE: first_sample_choices,
        MAJORITY_VOTE: majority_vote_choices,
        MEAN_LOG_PROB: mean_log_prob_choices,
        SELF_CERTAINTY: self_certainty_choices,
    },
)


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
SELECTION_RULES: Registry[Callable[[Dataset, Sequence[np.ndarray]], np.ndarray]] = Registry(
    "pick rule",
    {"argmax": lambda dataset, scores: choices_from_scores(scores), "weighted_vote": weighted_vote_from_scores},
)


def chosen_correct(dataset: Dataset, choices: Sequence[int] | np.ndarray) -> np.ndarray:
    """``[P]`` booleans: whether each prompt's chosen candidate is correct (label >= `CORRECT_THRESHOLD`)."""
    choices = np.asarray(choices, dtype=np.int64)
    if choices.shape != (len(dataset),):
        raise ValueError(f"Expected one choice per prompt ({len(dataset)}), got an array of shape {choices.shape}.")
    labels = [np.asarray(row, dtype=np.float64) for row in dataset.with_format(None)[LABELS]]
    if any(not 0 <= choice < len(row) for choice, row in zip(choices, labels)):
        raise ValueError("A choice points past the candidates of its prompt.")
    return np.asarray([row[choice] >= CORRECT_THRESHOLD for choice, row in zip(choices, labels)], dtype=bool)


def selection_accuracy(dataset: Dataset, choices: Sequence[int] | np.ndarray) -> float:
    """The fraction of prompts whose chosen candidate is correct (label >= `CORRECT_THRESHOLD`)."""
    return float(np.mean(chosen_correct(dataset, choices)))
