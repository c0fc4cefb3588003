"""Choosing a ranker recipe that survives small data: k-fold cross-validation over train + validation prompts.

    from hf_language_ranker.evaluation import select_ranker

    selection = select_ranker(train, validation, folds=5)    # candidate datasets written by `collect`
    selection.ranker.save_pretrained("my-ranker")             # the chosen settings, refit on every prompt
    print(selection.to_markdown())                            # the cross-validated table

Every setting of the grid (ranker variant x feature layer x pick rule) is trained on k-1 folds of the pooled
train + validation prompts and scored on the held-out fold, at the N the ranker will serve (each held-out prompt
among its first N candidates), so every prompt is held out once. A single small validation split once chose an
argmax row worth +0.05 on test over weighted-vote rows worth +0.10 to +0.13; pooling the folds averages over five
times as many held-out prompts. Settings within one standard error of the best (paired over the held-out prompts,
the "one-standard-error rule" of cross-validation) count as tied, and a tie goes to the setting nearest the default
recipe (`DEFAULT_VARIANT`, `DEFAULT_SELECTION`, the paper's layer), never to whichever row came first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from datasets import Dataset
from tqdm.auto import tqdm
from transformers.utils import logging
from transformers.utils.logging import is_progress_bar_enabled

from ..candidates import CollectionInfo, feature_layers, num_candidates, pool_datasets
from ..configuration import SELECTION_MODES, default_feature_layer
from ..modeling import LanguageRanker
from ..training_args import recipe_as_arguments
from .baselines import SELECTION_RULES, chosen_correct
from .scorers import RankerScorer
from .statistics import paired_stderr

logger = logging.get_logger(__name__)

#: The Language Ranker variants the protocol trains and reports (each with its feature layer chosen by
#: cross-validation, under each pick rule): the paper's heads, then the agreement inputs of
#: `hf_language_ranker.agreement`. Each recipe is a set of `RankerConfig` overrides (its recipe fields).
RANKER_VARIANTS: dict[str, dict[str, Any]] = {
    "Language Ranker (listwise)": {"head": "listwise"},
    "Language Ranker (pointwise)": {"head": "pointwise"},
    "Language Ranker (listwise + log-prob)": {"head": "listwise", "use_mean_log_prob": True},
    "Language Ranker (pointwise + log-prob)": {"head": "pointwise", "use_mean_log_prob": True},
    "Language Ranker (listwise + log-prob + vote share)": {
        "head": "listwise",
        "use_mean_log_prob": True,
        "use_vote_share": True,
    },
    "Language Ranker (pointwise + log-prob + vote share)": {
        "head": "pointwise",
        "use_mean_log_prob": True,
        "use_vote_share": True,
    },
    "Language Ranker (pointwise + log-prob + vote share, marginal loss)": {
        "head": "pointwise",
        "use_mean_log_prob": True,
        "use_vote_share": True,
        "loss": "marginal",
    },
    "Language Ranker (listwise + log-prob + vote share + centrality)": {
        "head": "listwise",
        "use_mean_log_prob": True,
        "use_vote_share": True,
        "use_centrality": True,
    },
    "Language Ranker (pointwise + log-prob + vote share + centrality)": {
        "head": "pointwise",
        "use_mean_log_prob": True,
        "use_vote_share": True,
        "use_centrality": True,
    },
}
#: The default recipe near-ties are broken toward: the shipped ranker's (chosen on the arithmetic benchmark).
DEFAULT_VARIANT = "Language Ranker (listwise + log-prob + vote share + centrality)"
DEFAULT_SELECTION = "weighted_vote"
DEFAULT_FOLDS = 5


def selection_row(name: str, rule: str) -> str:
    """The report row of a learned scorer under a pick rule (``argmax`` keeps the scorer's name)."""
    return name if rule == "argmax" else f"{name} + weighted vote"


@dataclass(frozen=True)
class Setting:
    """One point of the grid: a ranker variant, the layer it reads and the rule that turns scores into a choice."""

    variant: str
    feature_layer: int
    selection: str

    @property
    def row(self) -> str:
        return selection_row(self.variant, self.selection)


@dataclass
class RankerSelection:
    """What `select_ranker` found: the chosen ranker (refit on every prompt) and the cross-validated table."""

    #: the chosen setting's ranker, trained on all train + validation prompts; ``config.selection`` is its rule
    ranker: LanguageRanker
    chosen: Setting
    #: the setting with the highest cross-validated accuracy (``chosen`` differs when a near-tie went to the default)
    best: Setting
    #: cross-validated accuracy of every setting of the grid
    accuracy: dict[Setting, float]
    #: one standard error of each setting's paired difference to ``best``
    stderr: dict[Setting, float]
    #: the settings within one standard error of ``best`` (``chosen`` is one of them)
    near_ties: list[Setting]
    folds: int
    #: the N the choices were scored at, per split (fewer than ``serve_n`` where a split holds fewer candidates)
    scored_n: dict[str, int]
    serve_n: int
    num_prompts: int
    #: 0/1 correctness of each setting's choice on every held-out prompt (train prompts, then validation prompts)
    outcomes: dict[Setting, np.ndarray] = field(repr=False, default_factory=dict)
    #: with ``fold_ensemble=True``: one ranker serving the mean score of the chosen setting's fold models
    ensemble: LanguageRanker | None = field(repr=False, default=None)

    def best_layers(self) -> dict[str, Setting]:
        """Each report row (variant x rule) at its best cross-validated layer (ties to the shallowest)."""
        rows: dict[str, Setting] = {}
        for setting in self.accuracy:
            current = rows.get(setting.row)
            if current is None or self.accuracy[setting] > self.accuracy[current]:
                rows[setting.row] = setting
        return rows

    def notes(self) -> list[str]:
        """Caveats a report should carry (a split scored below the serving N)."""
        return [
            f"the {split} split holds {n} candidates per prompt, fewer than the {self.serve_n} the ranker serves: its "
            f"held-out prompts were scored at N={n}"
            for split, n in self.scored_n.items()
            if n < self.serve_n
        ]

    def to_dict(self) -> dict[str, Any]:
        """The choice and the cross-validated table, as JSON values."""
        return {
            "chosen": {"method": self.chosen.row, "feature_layer": self.chosen.feature_layer},
            "best_cross_validated": {"method": self.best.row, "feature_layer": self.best.feature_layer},
            "folds": self.folds,
            "prompts": self.num_prompts,
            "serve_n": self.serve_n,
            "scored_n": self.scored_n,
            "notes": self.notes(),
            "rows": {
                row: {
                    "feature_layer": setting.feature_layer,
                    "accuracy": self.accuracy[setting],
                    "accuracy_by_layer": {
                        other.feature_layer: value for other, value in self.accuracy.items() if other.row == row
                    },
                }
                for row, setting in self.best_layers().items()
            },
        }

    def to_markdown(self) -> str:
        """The cross-validated table: one row per variant x rule at its best layer, the chosen row marked."""
        lines = [
            f"Cross-validated accuracy ({self.folds} folds over {self.num_prompts} train + validation prompts, each "
            f"held out once, N={self.serve_n}); `*` marks the choice, `~` a near-tie (within one standard error of "
            "the best setting, broken toward the default recipe):",
            "",
            "| method | layer | accuracy | − best (1 s.e.) |",
            "|---|---:|---:|---:|",
        ]
        for row, setting in sorted(self.best_layers().items(), key=lambda item: -self.accuracy[item[1]]):
            mark = "*" if row == self.chosen.row else "~" if setting in self.near_ties else ""
            gap = self.accuracy[setting] - self.accuracy[self.best]
            lines.append(
                f"| {mark}{row} | {setting.feature_layer} | {self.accuracy[setting]:.3f} | "
                f"{gap:+.3f} ({self.stderr[setting]:.3f}) |"
            )
        if self.chosen not in self.best_layers().values():
            lines.append(
                f"| *{self.chosen.row} (layer {self.chosen.feature_layer}) | {self.chosen.feature_layer} | "
                f"{self.accuracy[self.chosen]:.3f} | {self.accuracy[self.chosen] - self.accuracy[self.best]:+.3f} "
                f"({self.stderr[self.chosen]:.3f}) |"
            )
        lines += [f"\nNote: {note}." for note in self.notes()]
        return "\n".join(lines) + "\n"


def default_layer(dataset: Dataset, layers: list[int]) -> int:
    """The collected layer nearest the paper's default (60% of the depth), or the middle one without a fingerprint."""
    info = CollectionInfo.from_dataset(dataset)
    if info is None:
        return layers[len(layers) // 2]
    target = default_feature_layer(info.num_hidden_layers)
    return min(layers, key=lambda layer: (abs(layer - target), layer))


def quiet_training(seed: int, **overrides: Any) -> dict[str, Any]:
    """`RankerTrainingArguments` fields for the many short fits of a protocol: seeded, without logs or bars."""
    return {"seed": seed, "report_to": "none", "disable_tqdm": True, "logging_strategy": "no", **overrides}


def fit_setting(
    dataset: Dataset, variant: dict[str, Any], feature_layer: int, selection: str, **training_arguments: Any
) -> RankerScorer:
    """A ranker of ``variant`` (`RankerConfig` overrides) reading ``feature_layer``, trained on ``dataset``, that
    picks by ``selection``."""
    options = {"feature_layer": feature_layer, "selection": selection, **recipe_as_arguments(_recipe(variant))}
    options |= training_arguments
    return RankerScorer(**options).fit(dataset, None)


def _recipe(variant: dict[str, Any]) -> dict[str, Any]:
    """A variant's `RankerConfig` recipe overrides, without the ``feature_layer`` it may pin."""
    return {name: value for name, value in variant.items() if name != "feature_layer"}


def _variant_layers(variant: dict[str, Any], layers: list[int]) -> list[int]:
    """The grid layers a variant is tried at: the one it pins (``"feature_layer"``), else every layer of ``layers``
    that its ``extra_layers`` do not already hold (a several-layer variant reads the grid's layer first)."""
    if "feature_layer" in variant:
        return [variant["feature_layer"]]
    return [layer for layer in layers if layer not in variant.get("extra_layers", ())]


def _folds(sizes: list[int], folds: int, seed: int) -> list[np.ndarray]:
    """Fold index of every prompt of each split (a seeded permutation of the pooled prompts, dealt round-robin)."""
    total = sum(sizes)
    if not 2 <= folds <= total:
        raise ValueError(f"folds must be between 2 and the {total} train + validation prompts, got {folds}.")
    assignment = np.empty(total, dtype=np.int64)
    assignment[np.random.default_rng(seed).permutation(total)] = np.arange(total) % folds
    return np.split(assignment, np.cumsum(sizes)[:-1])


def select_ranker(
    train: Dataset,
    validation: Dataset | None = None,
    *,
    variants: dict[str, dict[str, Any]] | None = None,
    layers: list[int] | None = None,
    selections: tuple[str, ...] = SELECTION_MODES,
    folds: int = DEFAULT_FOLDS,
    serve_n: int | None = None,
    seed: int = 0,
    fold_ensemble: bool = False,
    **training_arguments: Any,
) -> RankerSelection:
    """Choose a ranker setting by k-fold cross-validation over train + validation prompts and refit it on all.

    Args:
        train, validation: candidate datasets written by `collect` (never the test split). They are pooled by
            prompt; each fold's training set is cut to the smallest candidate count of the two.
        variants: ranker variants (name -> `RankerConfig` overrides of its recipe fields); default `RANKER_VARIANTS`.
            A variant may pin its ``"feature_layer"`` (tried at that layer only), as a several-layer variant does
            to read a fixed set of layers (``{"feature_layer": 12, "extra_layers": [18, 24]}``).
        layers: feature layers to try; default every collected layer.
        selections: pick rules to try (keys of `baselines.SELECTION_RULES`).
        folds: number of folds (each prompt is held out once).
        serve_n: the N the ranker will serve; held-out prompts are scored among their first ``serve_n``
            candidates (fewer where a split holds fewer; `RankerSelection.notes` says so). Default: the most
            candidates a split holds.
        seed: seeds the folds and every training run (the choice is deterministic for a seed).
        fold_ensemble: also return `RankerSelection.ensemble`: the chosen setting's fold models (trained again with
            the same seed on the same folds, so the very models cross-validation scored) as one `LanguageRanker`
            serving their mean score, beside the refit ranker.
        training_arguments: further `RankerTrainingArguments` fields, e.g. ``num_train_epochs=4``.

    Returns:
        A `RankerSelection` holding the chosen ranker and the cross-validated table.
    """
    variants = dict(variants if variants is not None else RANKER_VARIANTS)
    for variant in variants.values():  # a field that RankerConfig's recipe lacks fails here, before any training
        recipe_as_arguments(_recipe(variant))
    splits = {"train": train} | ({"validation": validation} if validation is not None else {})
    layers = list(layers) if layers is not None else feature_layers(train)
    for rule in selections:
        if rule not in SELECTION_RULES:
            raise SELECTION_RULES.unknown(rule)
    if not variants or not layers or not selections:
        raise ValueError(
            f"select_ranker needs at least one variant, layer and pick rule; got {len(variants)} variants, "
            f"layers {layers}, selections {list(selections)}."
        )
    counts = {name: num_candidates(dataset) for name, dataset in splits.items()}
    serve_n = serve_n or max(counts.values())
    scored_n = {name: min(serve_n, count) for name, count in counts.items()}
    fold_of = dict(zip(splits, _folds([len(dataset) for dataset in splits.values()], folds, seed)))
    training = quiet_training(seed, **training_arguments)

    grid = [(name, layer) for name, variant in variants.items() for layer in _variant_layers(variant, layers)]
    outcomes: dict[Setting, list[np.ndarray]] = {}
    steps = [(fold, name, layer) for fold in range(folds) for name, layer in grid]
    fit_sets = {}

    def fit_set(fold: int) -> Dataset:
        if fold not in fit_sets:
            fit_sets[fold] = pool_datasets(
                [dataset.select(np.flatnonzero(fold_of[split] != fold)) for split, dataset in splits.items()]
            )
        return fit_sets[fold]

    for fold, name, layer in tqdm(steps, desc="Cross-validating rankers", disable=not is_progress_bar_enabled()):
        scorer = fit_setting(fit_set(fold), variants[name], layer, selections[0], **training)
        for split, dataset in splits.items():
            held_out = dataset.select(np.flatnonzero(fold_of[split] == fold))
            if not len(held_out):
                continue
            scores = scorer.score(held_out, scored_n[split])
            for rule in selections:
                correct = chosen_correct(held_out, SELECTION_RULES[rule](held_out, scores))
                outcomes.setdefault(Setting(name, layer, rule), []).append(correct)
    # every prompt's outcome in one order (train prompts by fold, then validation prompts by fold): paired rows
    paired = {setting: np.concatenate(parts).astype(np.float64) for setting, parts in outcomes.items()}
    accuracy = {setting: float(values.mean()) for setting, values in paired.items()}
    best = max(accuracy, key=accuracy.get)  # ties: the first setting of the grid
    stderr = {setting: paired_stderr(paired[best], values) for setting, values in paired.items()}
    near_ties = [setting for setting in accuracy if accuracy[best] - accuracy[setting] <= stderr[setting]]
    preferred_layer = default_layer(train, layers)

    def distance(setting: Setting) -> tuple[int, int, float]:
        recipe = (setting.variant != DEFAULT_VARIANT) + (setting.selection != DEFAULT_SELECTION)
        return recipe, abs(setting.feature_layer - preferred_layer), -accuracy[setting]

    chosen = min(near_ties, key=distance)  # min keeps the first of equals: deterministic
    logger.info(f"Cross-validation chose {chosen} ({accuracy[chosen]:.3f}; best {best}: {accuracy[best]:.3f}).")
    refit = fit_setting(
        pool_datasets(list(splits.values())),
        variants[chosen.variant],
        chosen.feature_layer,
        chosen.selection,
        **training,
    )
    ensemble = None
    if fold_ensemble:
        members = [
            fit_setting(fit_set(fold), variants[chosen.variant], chosen.feature_layer, chosen.selection, **training)
            for fold in range(folds)
        ]
        ensemble = LanguageRanker.ensemble([member.ranker for member in members])
    return RankerSelection(
        ensemble=ensemble,
        ranker=refit.ranker,
        chosen=chosen,
        best=best,
        accuracy=accuracy,
        stderr=stderr,
        near_ties=near_ties,
        folds=folds,
        scored_n=scored_n,
        serve_n=serve_n,
        num_prompts=len(paired[best]),
        outcomes=paired,
    )
