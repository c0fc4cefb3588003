"""Best-of-N evaluation: accuracy against the number of candidates N for the ranker and its baselines.

    from hf_language_ranker.evaluation import ProbeScorer, RankerScorer, evaluate

    scorers = {"Language Ranker": RankerScorer(num_train_epochs=8), "probe": ProbeScorer()}
    for scorer in scorers.values():
        scorer.fit(train, validation)          # hyper-parameters are chosen on validation, never on test
    result = evaluate(test, scorers, greedy_accuracy=0.41)
    print(result.to_markdown()); result.plot("accuracy_vs_n.png"); result.to_json("evaluation.json")

`evaluate` always reports the training-free baselines of `baselines.BASELINES` (first sample, majority vote,
mean log-prob, self-certainty) and the oracle (pass@N, the ceiling of any selector); each learned scorer picks its
best-scored candidate, or votes with its scores (``selections={name: "weighted_vote"}``). The result keeps each
method's 0/1 correctness per prompt, so `paired_bootstrap` intervals can be recomputed.

Modules, in the one direction data flows: `experiment` (the protocol: collect, choose, train, report) →
`cross_validation` (`select_ranker`: the recipe choice, k-fold over train + validation) → `accuracy` (`evaluate`) →
`scorers` (the `Scorer` protocol and the learned selectors) → `baselines` (the training-free rules, and the pick
rules that turn scores into choices); `report` holds the result, its tables, JSON and plot; `statistics` the paired
comparisons over prompts (`paired_bootstrap`, `paired_stderr`) that the report, the recipe choice and the
benchmarks share.
"""

from __future__ import annotations

from .accuracy import DEFAULT_NS, evaluate, select_feature_layer
from .baselines import (
    BASELINES,
    FIRST_SAMPLE,
    MAJORITY_VOTE,
    MEAN_LOG_PROB,
    ORACLE,
    SELECTION_RULES,
    SELF_CERTAINTY,
    chosen_correct,
    selection_accuracy,
)
from .cross_validation import RANKER_VARIANTS, RankerSelection, select_ranker
from .report import GREEDY, EvaluationResult, MethodCost
from .scorers import (
    BaseScorer,
    ProbeScorer,
    RankerScorer,
    Scorer,
    TextRewardScorer,
    select_on_validation,
    validation_accuracy,
)
from .statistics import PairedDifference, paired_bootstrap, paired_stderr

__all__ = [
    "BASELINES",
    "DEFAULT_NS",
    "FIRST_SAMPLE",
    "GREEDY",
    "MAJORITY_VOTE",
    "MEAN_LOG_PROB",
    "ORACLE",
    "SELECTION_RULES",
    "SELF_CERTAINTY",
    "BaseScorer",
    "EvaluationResult",
    "MethodCost",
    "PairedDifference",
    "RANKER_VARIANTS",
    "RankerSelection",
    "ProbeScorer",
    "RankerScorer",
    "Scorer",
    "TextRewardScorer",
    "chosen_correct",
    "evaluate",
    "paired_bootstrap",
    "paired_stderr",
    "select_feature_layer",
    "select_on_validation",
    "select_ranker",
    "selection_accuracy",
    "validation_accuracy",
]
