"""Selection accuracy against the number of candidates N for learned scorers and every free baseline."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial

import numpy as np
from datasets import Dataset
from tqdm.auto import tqdm
from transformers.utils import logging
from transformers.utils.logging import is_progress_bar_enabled

from ..candidates import num_candidates
from .baselines import BASELINES, ORACLE, SELECTION_RULES, chosen_correct, oracle_choices
from .report import EvaluationResult, MethodCost
from .scorers import Scorer, select_on_validation

logger = logging.get_logger(__name__)

DEFAULT_NS = (1, 2, 4, 8, 16, 32)


def _scorer_choices(scorer: Scorer, dataset: Dataset, ns: Sequence[int], selection: str) -> dict[int, np.ndarray]:
    """Choices per N; a pointwise scorer is run once at the largest N, others at every N."""
    full = scorer.score(dataset, ns[-1]) if scorer.pointwise else None
    rule = SELECTION_RULES[selection]
    return {n: rule(dataset, [row[:n] for row in full] if full is not None else scorer.score(dataset, n)) for n in ns}


def evaluate(
    test_dataset: Dataset,
    scorers: Mapping[str, Scorer] | None = None,
    ns: Iterable[int] = DEFAULT_NS,
    greedy_accuracy: float | None = None,
    *,
    task: str = "best-of-n selection",
    dataset_name: str = "held-out prompts",
    selections: Mapping[str, str] | None = None,
) -> EvaluationResult:
    """Selection accuracy of the baselines and of fitted ``scorers`` on the first N candidates, for every N.

    Values of ``ns`` above the number of candidates collected per prompt are skipped. ``greedy_accuracy`` (the
    accuracy of greedy decoding, measured separately) is drawn as a reference line. ``selections`` maps a scorer's
    name to the rule of `baselines.SELECTION_RULES` that turns its scores into choices
    (default ``"argmax"``; ``"weighted_vote"`` needs the dataset's parsed answers); the same fitted scorer may be
    given under two names with two rules.
    """
    selections = dict(selections or {})
    for rule in selections.values():
        if rule not in SELECTION_RULES:
            raise SELECTION_RULES.unknown(rule)
    if greedy_accuracy is not None and not (0 <= greedy_accuracy <= 1 and math.isfinite(greedy_accuracy)):
        raise ValueError(f"greedy_accuracy must be a fraction in [0, 1], got {greedy_accuracy}.")
    available = num_candidates(test_dataset)
    requested = sorted(set(ns))
    ns = [n for n in requested if 1 <= n <= available]
    if not ns:
        raise ValueError(f"None of ns={requested} fits the {available} candidates collected per prompt.")
    if len(ns) < len(requested):
        logger.info(f"Skipping N={[n for n in requested if n not in ns]}: {available} candidates per prompt.")
    scorers = dict(scorers or {})
    clashes = set(scorers) & {*BASELINES, ORACLE}
    if clashes:
        raise ValueError(f"Scorer names {sorted(clashes)} clash with the built-in baselines; rename them.")
    choices = {method: {n: rule(test_dataset, n) for n in ns} for method, rule in BASELINES.items()}
    costs = {}
    for method, scorer in tqdm(scorers.items(), desc="Scoring", disable=not is_progress_bar_enabled()):
        choices[method] = _scorer_choices(scorer, test_dataset, ns, selections.get(method, "argmax"))
        costs[method] = MethodCost(scorer.num_parameters, scorer.train_seconds, scorer.score_seconds)
    choices[ORACLE] = {n: oracle_choices(test_dataset, n) for n in ns}
    per_prompt = {
        method: {n: chosen_correct(test_dataset, picks).astype(int).tolist() for n, picks in by_n.items()}
        for method, by_n in choices.items()
    }
    accuracy = {method: {n: float(np.mean(v)) for n, v in by_n.items()} for method, by_n in per_prompt.items()}
    return EvaluationResult(accuracy, len(test_dataset), costs, greedy_accuracy, task, dataset_name, per_prompt)


def select_feature_layer(
    train: Dataset,
    validation: Dataset,
    layers: Iterable[int],
    fit_fn: Callable[[int], Scorer],
) -> tuple[int, dict[int, float]]:
    """The layer whose scorer selects best on ``validation`` (all candidates); never pass the test split.

    ``fit_fn(layer)`` builds an unfitted scorer reading ``layer``, e.g. ``lambda layer: ProbeScorer(layer)`` or
    ``lambda layer: RankerScorer(feature_layer=layer)``; each is fitted on ``train``. Returns the best layer and
    the validation accuracy of every layer (ties go to the first layer).
    """
    if validation is None:
        raise ValueError("select_feature_layer needs a validation split (never the test split).")
    builders = {layer: partial(fit_fn, layer) for layer in layers}
    best, _, accuracies = select_on_validation(builders, train, validation, "Feature layer")
    return best, accuracies
