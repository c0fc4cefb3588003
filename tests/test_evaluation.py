"""Baselines, learned scorers and best-of-N reports on synthetic candidate datasets."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
from datasets import Array2D, Dataset, Features, List, Value

from hf_language_ranker.candidates import candidate_feature_column, first_candidates, prompt_feature_column
from hf_language_ranker.configuration import RECIPE_FIELDS, RankerConfig
from hf_language_ranker.evaluation import GREEDY, EvaluationResult, evaluate, select_feature_layer, selection_accuracy
from hf_language_ranker.evaluation.baselines import (
    FIRST_SAMPLE,
    MAJORITY_VOTE,
    MEAN_LOG_PROB,
    ORACLE,
    SELF_CERTAINTY,
    first_sample_choices,
    majority_vote_choices,
    mean_log_prob_choices,
    oracle_choices,
    self_certainty_choices,
)
from hf_language_ranker.evaluation.cross_validation import DEFAULT_VARIANT, RANKER_VARIANTS, Setting, select_ranker
from hf_language_ranker.evaluation.report import CHOSEN, headline_methods
from hf_language_ranker.evaluation.scorers import ProbeScorer, RankerScorer, TextRewardScorer
from hf_language_ranker.model_card import RankerModelCardData
from hf_language_ranker.modeling import LanguageRanker

HIDDEN = 16
SIGNAL_LAYER, NOISE_LAYER = 3, 1


def candidate_dataset(
    labels: list[list[float]],
    answers: list[list[str | None]] | None = None,
    mean_log_probs: list[list[float]] | None = None,
    self_certainty: list[list[float]] | None = None,
    features: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
    candidates: list[list[str]] | None = None,
) -> Dataset:
    """A candidate dataset in the layout of `hf_language_ranker.candidates` (defaults fill unused columns)."""
    num_prompts, n = len(labels), len(labels[0])
    zeros = [[0.0] * n for _ in labels]
    columns = {
        "prompt_id": list(range(num_prompts)),
        "prompt": [f"What is question {i}?" for i in range(num_prompts)],
        "prompt_text": [f"<user>What is question {i}?<assistant>" for i in range(num_prompts)],
        "candidates": candidates or [[f"answer {j}" for j in range(n)] for _ in labels],
        "lengths": [[3] * n for _ in labels],
        "labels": labels,
        "answers": answers or [[None] * n for _ in labels],
        "mean_log_probs": mean_log_probs or zeros,
        "self_certainty": self_certainty or zeros,
        "generation": ["{}"] * num_prompts,
    }
    types = {
        "prompt_id": Value("int64"),
        "prompt": Value("string"),
        "prompt_text": Value("string"),
        "candidates": List(Value("string"), length=n),
        "lengths": List(Value("int32"), length=n),
        "labels": List(Value("float32"), length=n),
        "answers": List(Value("string"), length=n),
        "mean_log_probs": List(Value("float32"), length=n),
        "self_certainty": List(Value("float32"), length=n),
        "generation": Value("string"),
    }
    for layer, (prompt_features, candidate_features) in (features or {}).items():
        hidden = prompt_features.shape[-1]
        columns[prompt_feature_column(layer)] = prompt_features.astype(np.float16).tolist()
        columns[candidate_feature_column(layer)] = candidate_features.astype(np.float16).tolist()
        types[prompt_feature_column(layer)] = List(Value("float16"), length=hidden)
        types[candidate_feature_column(layer)] = Array2D((n, hidden), "float16")
    return Dataset.from_dict(columns, features=Features(types))


def synthetic_dataset(num_prompts: int = 100, n: int = 8, seed: int = 0) -> Dataset:
    """Prompts with a correctness signal in layer `SIGNAL_LAYER` (none in `NOISE_LAYER`), majority answers that
    are often right, and log-probs / self-certainty weakly correlated with correctness."""
    rng = np.random.default_rng(seed)
    direction = np.random.default_rng(1234).normal(size=HIDDEN)
    direction /= np.linalg.norm(direction)
    correct = rng.random((num_prompts, n)) < rng.uniform(0.15, 0.75, size=(num_prompts, 1))
    wrong = rng.choice(np.array(["w1", "w2", "w3", None], dtype=object), size=(num_prompts, n))
    answers = [[str(p) if correct[p, j] else wrong[p, j] for j in range(n)] for p in range(num_prompts)]
    prompts = rng.normal(size=(num_prompts, HIDDEN))
    noise = rng.normal(size=(num_prompts, n, HIDDEN))
    signal = 1.5 * (2 * correct[..., None] - 1) * direction
    features = {
        NOISE_LAYER: (prompts, noise + prompts[:, None]),
        SIGNAL_LAYER: (prompts, noise + prompts[:, None] + signal),
    }
    return candidate_dataset(
        labels=correct.astype(float).tolist(),
        answers=answers,
        mean_log_probs=(-1 + 0.3 * correct + rng.normal(0, 0.4, size=correct.shape)).tolist(),
        self_certainty=(2 + 0.2 * correct + rng.normal(0, 0.4, size=correct.shape)).tolist(),
        features=features,
        candidates=[[f"So the answer is {a}." if a is not None else "I am not sure." for a in row] for row in answers],
    )


@pytest.fixture(scope="module")
def splits() -> dict[str, Dataset]:
    splits = {"train": (120, 0), "validation": (60, 1), "test": (100, 2)}
    return {name: synthetic_dataset(size, seed=seed) for name, (size, seed) in splits.items()}


# ------------------------------------------------------------------------------------------- choice rules
def test_majority_vote_picks_the_most_common_answer():
    dataset = candidate_dataset(
        labels=[[0, 1, 1, 0, 1], [1, 0, 0, 0, 0]],
        answers=[["3", "4", "4", "5", "4"], ["7", "8", "8", "9", None]],
    )
    assert majority_vote_choices(dataset, 5).tolist() == [1, 1]
    assert selection_accuracy(dataset, majority_vote_choices(dataset, 5)) == 0.5


def test_majority_vote_tie_breaks_by_mean_log_prob_then_first():
    dataset = candidate_dataset(
        labels=[[0, 0, 0, 0], [0, 0, 0, 0]],
        answers=[["a", "b", "a", "b"], ["a", "b", "b", "a"]],
        mean_log_probs=[[-1.0, -0.5, -2.0, -3.0], [-1.0, -1.0, -1.0, -1.0]],
    )
    # row 0: a and b tie 2-2, b's best member (index 1) has the highest log-prob; row 1: all equal -> first
    assert majority_vote_choices(dataset, 4).tolist() == [1, 0]


def test_majority_vote_ignores_none_and_falls_back_to_the_first_sample():
    dataset = candidate_dataset(
        labels=[[0, 0, 0], [0, 0, 0], [0, 0, 0]],
        answers=[[None, None, None], [None, "y", None], [None, "x", "y"]],
        mean_log_probs=[[0.0, -1.0, -2.0], [0.0, -5.0, 0.0], [0.0, -2.0, -1.0]],
    )
    assert majority_vote_choices(dataset, 3).tolist() == [0, 1, 2]


def test_majority_vote_only_sees_the_first_n_candidates():
    dataset = candidate_dataset(labels=[[0, 0, 0, 0, 0]], answers=[["a", "b", "b", "a", "a"]])
    assert majority_vote_choices(dataset, 3).tolist() == [1]
    assert majority_vote_choices(dataset, 5).tolist() == [0]


def test_score_rules_oracle_and_first_sample():
    dataset = candidate_dataset(
        labels=[[0, 0, 1, 1], [0, 0, 0, 0], [0.6, 0, 0, 0]],
        mean_log_probs=[[-3, -1, -2, float("nan")], [-1, -1, -1, -1], [-2, -3, -1, -4]],
        self_certainty=[[1, 2, 3, 0], [0, 5, 1, 5], [2, 1, 0, 3]],
    )
    assert first_sample_choices(dataset, 4).tolist() == [0, 0, 0]
    assert mean_log_prob_choices(dataset, 4).tolist() == [1, 0, 2]  # NaN never wins; ties go to the first
    assert self_certainty_choices(dataset, 4).tolist() == [2, 1, 3]
    assert self_certainty_choices(dataset, 2).tolist() == [1, 1, 0]
    assert oracle_choices(dataset, 4).tolist() == [2, 0, 0]
    assert selection_accuracy(dataset, oracle_choices(dataset, 4)) == pytest.approx(2 / 3)
    assert selection_accuracy(dataset, oracle_choices(dataset, 2)) == pytest.approx(1 / 3)


def test_clear_errors():
    dataset = candidate_dataset(labels=[[0, 1], [1, 0]])
    with pytest.raises(ValueError, match="first 3 candidates"):
        oracle_choices(dataset, 3)
    with pytest.raises(ValueError, match="one choice per prompt"):
        selection_accuracy(dataset, [0])
    with pytest.raises(ValueError, match="past the candidates"):
        selection_accuracy(dataset, [0, 2])
    with pytest.raises(RuntimeError, match="not fitted"):
        ProbeScorer(layer=1, weight_decay=0.1).score(dataset, 2)
    with pytest.raises(ValueError, match="clash"):
        evaluate(dataset, {ORACLE: ProbeScorer()})
    with pytest.raises(ValueError, match="None of ns"):
        evaluate(dataset, ns=(4, 8))
    ranker = LanguageRanker(RankerConfig(hidden_size=4, num_hidden_layers=6, feature_layer=5))
    with pytest.raises(ValueError, match="no features for layer 5"):
        RankerScorer.from_trained(ranker).score(dataset, 2)


# ------------------------------------------------------------------------------------------- learned scorers
def test_probe_selects_on_validation_and_beats_chance(splits):
    probe = ProbeScorer().fit(splits["train"], splits["validation"])
    assert probe.layer == SIGNAL_LAYER
    assert set(probe.validation_accuracies) == {(layer, d) for layer in (1, 3) for d in ProbeScorer.WEIGHT_DECAYS}
    assert probe.num_parameters == 2 * HIDDEN + 1 and probe.train_seconds > 0
    result = evaluate(splits["test"], {"probe": probe})
    chance = result.accuracy[FIRST_SAMPLE][8]
    assert result.accuracy["probe"][8] > chance + 0.15
    assert result.accuracy["probe"][8] <= result.accuracy[ORACLE][8]
    assert probe.pointwise and probe.score_seconds is not None


def test_select_feature_layer_uses_validation(splits):
    best, accuracies = select_feature_layer(
        splits["train"], splits["validation"], [NOISE_LAYER, SIGNAL_LAYER], lambda layer: ProbeScorer(layer, 0.1)
    )
    assert best == SIGNAL_LAYER and set(accuracies) == {NOISE_LAYER, SIGNAL_LAYER}
    assert accuracies[SIGNAL_LAYER] > accuracies[NOISE_LAYER]
    with pytest.raises(ValueError, match="validation split"):
        select_feature_layer(splits["train"], None, [NOISE_LAYER], ProbeScorer)


def test_ranker_scorer_trains_and_wraps_a_trained_ranker(splits):
    scorer = RankerScorer(feature_layer=SIGNAL_LAYER, num_train_epochs=2, projection_dim=16)
    scorer.fit(splits["train"], splits["validation"])
    assert scorer.ranker.config.feature_layer == SIGNAL_LAYER and not scorer.pointwise
    scores = scorer.score(splits["test"], 4)
    assert len(scores) == len(splits["test"]) and all(row.shape == (4,) and np.isfinite(row).all() for row in scores)

    wrapped = RankerScorer.from_trained(scorer.ranker, train_seconds=1.5)
    assert wrapped.fit(splits["train"]) is wrapped and wrapped.train_seconds == 1.5
    np.testing.assert_allclose(np.stack(wrapped.score(splits["test"], 4)), np.stack(scores), rtol=1e-5)
    result = evaluate(splits["test"], {"ranker": wrapped}, ns=(1, 2, 4, 8))
    assert result.costs["ranker"].num_parameters == scorer.ranker.num_parameters
    assert result.accuracy["ranker"][1] == result.accuracy[FIRST_SAMPLE][1]


def test_text_reward_scorer_trains_on_a_tiny_subset():
    dataset = synthetic_dataset(20, n=4, seed=3)
    scorer = TextRewardScorer(num_train_epochs=1, max_length=64, max_train_pairs=48, batch_size=16)
    scorer.fit(dataset)
    assert scorer.num_parameters > 20_000_000 and scorer.train_seconds > 0
    scores = scorer.score(dataset, 3)
    assert len(scores) == 20 and all(row.shape == (3,) and np.isfinite(row).all() for row in scores)
    assert scorer.score_seconds > 0


# ----------------------------------------------------------------------------------------------- reports
def test_evaluate_curves_and_reports(splits, tmp_path):
    test = splits["test"]
    probe = ProbeScorer(layer=SIGNAL_LAYER, weight_decay=0.1).fit(splits["train"])
    result = evaluate(test, {"probe": probe}, greedy_accuracy=0.4, dataset_name="synthetic")
    assert result.ns == [1, 2, 4, 8]  # 16 and 32 exceed the 8 collected candidates
    assert list(result.accuracy) == [FIRST_SAMPLE, MAJORITY_VOTE, MEAN_LOG_PROB, SELF_CERTAINTY, "probe", ORACLE]
    oracle = [result.accuracy[ORACLE][n] for n in result.ns]
    assert oracle == sorted(oracle) and oracle[0] == result.accuracy[FIRST_SAMPLE][1]
    assert all(result.accuracy[method][1] == oracle[0] for method in result.accuracy)  # N=1: every rule agrees
    assert result.accuracy[MAJORITY_VOTE][8] > result.accuracy[FIRST_SAMPLE][8]

    markdown = result.to_markdown()
    assert "| method | N=1 | N=2 | N=4 | N=8 |" in markdown and "| probe |" in markdown
    assert f"| probe | {2 * HIDDEN + 1} |" in markdown and "Greedy decoding: 0.400" in markdown

    result.to_json(tmp_path / "evaluation.json")
    data = json.loads((tmp_path / "evaluation.json").read_text())
    assert data["accuracy"][ORACLE]["8"] == result.accuracy[ORACLE][8]
    assert EvaluationResult.from_json(tmp_path / "evaluation.json") == result

    result.plot(tmp_path / "accuracy.png")
    assert (tmp_path / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    evaluation = result.to_model_card_evaluation()
    assert evaluation["dataset"] == "synthetic" and evaluation["task"]
    assert evaluation["accuracy"]["greedy decoding"] == {1: 0.4}
    assert all(
        isinstance(n, int) and math.isfinite(v) for by_n in evaluation["accuracy"].values() for n, v in by_n.items()
    )
    card = RankerModelCardData(evaluation=evaluation).to_model_card(
        RankerConfig(hidden_size=HIDDEN, num_hidden_layers=4, feature_layer=3)
    )
    assert "probe accuracy@8" in str(card) and "synthetic" in str(card)


# ----------------------------------------------------------------------------------------- the robust choice
CHOICE_VARIANTS = {
    "Language Ranker (pointwise)": {"head": "pointwise"},
    "Language Ranker (listwise + log-prob + vote share + centrality)": RANKER_VARIANTS[DEFAULT_VARIANT],
}


def test_select_ranker_cross_validates_deterministically_and_refits(splits):
    """k folds over train + validation (validation holds more candidates: each fold fits on the first 4); every
    prompt is held out once; the same seed gives the same table and choice; the chosen setting is refit."""
    train = first_candidates(splits["train"].select(range(40)), 4)
    validation = splits["validation"].select(range(20))
    run = functools.partial(
        select_ranker, train, validation, variants=CHOICE_VARIANTS, folds=3, serve_n=8, num_train_epochs=2
    )
    first, second = run(), run()
    assert first.accuracy == second.accuracy and first.chosen == second.chosen
    assert first.num_prompts == 60 and first.scored_n == {"train": 4, "validation": 8}
    assert "fewer than the 8 the ranker serves" in first.notes()[0]
    assert len(first.accuracy) == len(CHOICE_VARIANTS) * 2 * 2  # variants x layers x rules
    assert all(len(outcome) == 60 for outcome in first.outcomes.values())
    assert first.chosen in first.near_ties and first.accuracy[first.best] == max(first.accuracy.values())
    assert first.ranker.config.feature_layer == first.chosen.feature_layer
    assert first.ranker.config.selection == first.chosen.selection
    table = first.to_markdown()
    assert f"*{first.chosen.row}" in table and "Cross-validated accuracy (3 folds over 60" in table
    assert first.to_dict()["chosen"] == {"method": first.chosen.row, "feature_layer": first.chosen.feature_layer}


def test_variants_are_ranker_config_overrides_checked_before_any_training(splits, monkeypatch):
    """A variant names RankerConfig recipe fields (num_layers, not the argument num_ranker_layers); a field the recipe
    lacks is refused, with the closest field, before the first fit."""
    import hf_language_ranker.evaluation.cross_validation as cross_validation

    assert all(set(variant) <= set(RECIPE_FIELDS) for variant in RANKER_VARIANTS.values())
    monkeypatch.setattr(
        cross_validation, "fit_setting", lambda *args, **kwargs: pytest.fail("trained before the check")
    )
    misspelt = {**CHOICE_VARIANTS, "Language Ranker (typo)": {"head": "listwise", "use_logprob": True}}
    with pytest.raises(ValueError, match="Unknown RankerConfig recipe field 'use_logprob'.*'use_mean_log_prob'"):
        cross_validation.select_ranker(splits["train"], splits["validation"], variants=misspelt, folds=2)
    with pytest.raises(ValueError, match="Unknown RankerConfig recipe field 'num_ranker_layers'"):
        cross_validation.select_ranker(splits["train"], variants={"deep": {"num_ranker_layers": 3}}, folds=2)


def test_near_ties_go_to_the_default_recipe(splits, monkeypatch):
    """Settings within one standard error of the best count as tied; the tie goes to the default recipe, not to the
    first row. Outcomes are planted: the pointwise argmax row is best by one prompt of 30."""
    import hf_language_ranker.evaluation.cross_validation as cross_validation

    train, validation = splits["train"].select(range(20)), splits["validation"].select(range(10))
    planted = {}

    def outcomes(held_out, choices):
        return np.asarray([bool(planted["value"])] * len(held_out))

    def fake_fit(dataset, variant, layer, selection, **training):
        planted["value"] = variant["head"] == "pointwise" and layer == SIGNAL_LAYER
        scorer = ProbeScorer(layer=layer, weight_decay=1.0).fit(dataset)
        scorer.ranker = None  # what select_ranker returns of the refit
        return scorer

    monkeypatch.setattr(cross_validation, "fit_setting", fake_fit)
    monkeypatch.setattr(cross_validation, "chosen_correct", outcomes)
    result = cross_validation.select_ranker(train, validation, variants=CHOICE_VARIANTS, folds=2)
    best = Setting("Language Ranker (pointwise)", SIGNAL_LAYER, "argmax")
    voted = Setting("Language Ranker (pointwise)", SIGNAL_LAYER, "weighted_vote")
    assert result.best == best and result.accuracy[best] == result.accuracy[voted] == 1.0
    assert result.near_ties == [best, voted]  # a gap of 1.0 without noise is no tie; an equal row is
    assert result.chosen == voted  # the tie goes to the default's pick rule, not to the first row

    def noisy(held_out, choices):  # one setting of the best fit wins two held-out prompts and loses one
        correct = np.zeros(len(held_out), dtype=bool)
        correct[: len(held_out) // 2] = True
        if planted["value"] and not planted.get("won"):
            planted["won"] = correct[-1] = correct[-2] = True
            correct[0] = False
        return correct

    planted.clear()
    monkeypatch.setattr(cross_validation, "chosen_correct", noisy)
    result = cross_validation.select_ranker(train, validation, variants=CHOICE_VARIANTS, folds=2)
    assert result.best.variant == "Language Ranker (pointwise)" and len(result.near_ties) == len(result.accuracy)
    assert (result.chosen.variant, result.chosen.selection) == (DEFAULT_VARIANT, "weighted_vote")


def test_headline_plot_has_few_lines_and_nothing_outside_the_canvas(splits, tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    probes = [ProbeScorer(layer=layer, weight_decay=0.1).fit(splits["train"]) for layer in (SIGNAL_LAYER, NOISE_LAYER)]
    scorers = {f"Language Ranker (a very long variant name {i}, with every input)": probes[i % 2] for i in range(12)}
    result = evaluate(splits["test"], scorers, greedy_accuracy=0.4, dataset_name="a long data set name " * 3)
    chosen = next(iter(scorers))
    methods = headline_methods(result, chosen)
    assert len(methods) <= 8 and methods[0] == chosen and methods[-1] == ORACLE
    assert {MAJORITY_VOTE, MEAN_LOG_PROB, FIRST_SAMPLE} <= set(methods)
    figure = result.plot(tmp_path / "headline.png", methods=methods, interval=(chosen, MAJORITY_VOTE))
    assert len(figure.axes[0].get_lines()) <= 8
    renderer = FigureCanvasAgg(figure).get_renderer()
    figure.draw(renderer)  # lays the figure out again, as saving did (at 100 dpi instead of 150: same inches)
    canvas = figure.bbox
    texts = [text for text in figure.findobj(Text) if text.get_visible() and text.get_text()]
    assert sum("very long variant" in text.get_text() for text in texts) == 2  # the chosen and the best other
    for text in texts:
        box = text.get_window_extent(renderer)
        inside = box.x0 >= canvas.x0 and box.y0 >= canvas.y0 and box.x1 <= canvas.x1 and box.y1 <= canvas.y1
        assert inside, (text.get_text(), box, canvas)
    with pytest.raises(ValueError, match="No results for"):
        result.plot(tmp_path / "x.png", methods=["nothing"])


def _plotted(figure) -> list[str]:
    """The methods a figure draws, in order (legend labels unwrapped; greedy decoding's line left out)."""
    labels = [line.get_label().replace("\n", " ") for line in figure.axes[0].get_lines()]
    return [label for label in labels if label != GREEDY]


def test_the_default_plot_draws_the_headline_methods_only(splits, tmp_path):
    probes = [ProbeScorer(layer=layer, weight_decay=0.1).fit(splits["train"]) for layer in (SIGNAL_LAYER, NOISE_LAYER)]
    scorers = {f"ranker variant {i}": probes[i % 2] for i in range(12)}
    result = evaluate(splits["test"], scorers, greedy_accuracy=0.4)
    assert len(result.accuracy) == 12 + 5  # every scorer, the four free rules and the oracle
    # without the protocol's chosen row, the best learned row leads; then the free rules, the best other, the oracle
    best = max(scorers, key=lambda name: result.accuracy[name][8])
    drawn = _plotted(result.plot(tmp_path / "default.png"))
    assert drawn == headline_methods(result) and drawn[0] == best and drawn[-1] == ORACLE
    assert {MAJORITY_VOTE, MEAN_LOG_PROB, FIRST_SAMPLE} <= set(drawn) and len(drawn) == 6
    # with it (an alias of one variant), the chosen row leads, as in the protocol's accuracy_vs_n.png
    result.add_alias(CHOSEN, "ranker variant 1")
    drawn = _plotted(result.plot(tmp_path / "chosen.png"))
    assert drawn == headline_methods(result) and drawn[0] == CHOSEN and "ranker variant 1" not in drawn
    assert len(_plotted(result.plot(tmp_path / "all.png", methods=list(result.accuracy)))) == 12 + 5 + 1


def test_summary_leads_with_the_chosen_method_at_the_largest_n(splits):
    probe = ProbeScorer(layer=SIGNAL_LAYER, weight_decay=0.1).fit(splits["train"])
    result = evaluate(splits["test"], {"probe": probe})
    summary = result.summary("probe", [MAJORITY_VOTE])
    lines = summary.splitlines()
    assert lines[0] == f"Best-of-8 accuracy on {result.num_prompts} prompts (held-out prompts):"
    assert lines[1] == f"  probe: {result.accuracy['probe'][8]:.3f}"
    assert f"probe − majority vote: {result.paired('probe', MAJORITY_VOTE, 8)}" in lines[2]
    assert "won" in lines[2] and ORACLE in lines[3]
