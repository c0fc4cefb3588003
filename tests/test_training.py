"""Training a LanguageRanker on synthetic candidate datasets with RankerTrainer (offline, CPU, fast)."""

from __future__ import annotations

import math
from dataclasses import MISSING, fields
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetInfo

from hf_language_ranker import LanguageRanker
from hf_language_ranker.candidates import CollectionInfo, candidate_feature_column, prompt_feature_column
from hf_language_ranker.configuration import RECIPE_FIELDS, RankerConfig, recipe_argument
from hf_language_ranker.training import (
    CandidateGroupCollator,
    RankerTrainer,
    feature_dataset,
    ranker_for_dataset,
    resolve_training_layer,
    train_ranker,
)
from hf_language_ranker.training_args import RankerTrainingArguments, recipe_as_arguments

HIDDEN = 32
LAYER = 2


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def candidate_dataset(
    num_prompts: int = 200,
    num_candidates: int | list[int] = 8,
    seed: int = 0,
    layers: tuple[int, ...] = (LAYER,),
    labels: list[list[float]] | None = None,
    num_hidden_layers: int | None = 4,
) -> Dataset:
    """A candidate dataset (layout of hf_language_ranker.candidates) whose labels are learnable.

    Correct candidates are shifted along a fixed direction plus the direction of their prompt's feature,
    wrong ones the other way; ``num_candidates`` may differ per prompt. ``num_hidden_layers=None`` omits
    the CollectionInfo.
    """
    rng = np.random.default_rng(seed)
    direction = np.random.default_rng(1234).standard_normal(HIDDEN)
    direction /= np.linalg.norm(direction)
    counts = num_candidates if isinstance(num_candidates, list) else [num_candidates] * num_prompts
    if labels is None:
        solve_rates = rng.uniform(0.1, 0.7, size=len(counts))
        labels = [(rng.random(n) < rate).astype(np.float32).tolist() for n, rate in zip(counts, solve_rates)]
    columns: dict[str, list] = {"labels": labels}
    for layer in layers:
        prompts = rng.standard_normal((len(labels), HIDDEN))
        candidates = []
        for prompt, row_labels in zip(prompts, labels):
            sign = 2 * np.asarray(row_labels)[:, None] - 1
            shift = sign * (direction + prompt / np.linalg.norm(prompt))
            candidates.append((rng.standard_normal((len(row_labels), HIDDEN)) + shift).astype(np.float16))
        columns[prompt_feature_column(layer)] = list(prompts.astype(np.float16))
        columns[candidate_feature_column(layer)] = candidates
    info = None
    if num_hidden_layers is not None:
        collection = CollectionInfo(
            model="tiny/llama",
            model_type="llama",
            hidden_size=HIDDEN,
            num_hidden_layers=num_hidden_layers,
            layers=list(layers),
            num_candidates=max(counts),
            verifier="synthetic",
            model_dtype="bfloat16",
        )
        info = DatasetInfo(description=collection.to_json())
    return Dataset.from_dict(columns, info=info)


def random_pick_accuracy(dataset: Dataset) -> float:
    """Expected accuracy of picking one candidate uniformly at random (prompts with no candidate count as 0)."""
    return float(np.mean([np.mean(np.asarray(row) >= 0.5) if row else 0.0 for row in dataset["labels"]]))


def arguments(output_dir: Path, **overrides) -> RankerTrainingArguments:
    return RankerTrainingArguments(
        output_dir=str(output_dir), use_cpu=True, disable_tqdm=True, logging_strategy="no", **overrides
    )


def scores_of(ranker: LanguageRanker, dataset: Dataset) -> torch.Tensor:
    """Scores of every candidate of every prompt (evaluation batch)."""
    layer = ranker.config.feature_layer
    rows = list(feature_dataset(dataset, layer))
    with torch.no_grad():
        return ranker.eval()(**CandidateGroupCollator(layer)(rows)).scores


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One default training run shared by the tests that inspect its results."""
    train, held_out = candidate_dataset(seed=0), candidate_dataset(num_prompts=100, seed=1)
    trainer = RankerTrainer(args=arguments(tmp_path_factory.mktemp("run")), train_dataset=train, eval_dataset=held_out)
    trainer.train()
    return trainer, held_out, trainer.evaluate()


# --------------------------------------------------------------------------------------------------- training
def test_training_beats_random_pick_on_held_out_prompts(trained):
    trainer, held_out, metrics = trained
    chance = random_pick_accuracy(held_out)
    assert metrics["eval_top1_accuracy"] > chance + 0.25, (metrics, chance)
    assert metrics["eval_top1_accuracy"] > metrics["eval_first_sample_accuracy"] + 0.2
    assert metrics["eval_top1_accuracy"] <= metrics["eval_oracle_accuracy"]
    assert trainer.ranker.num_parameters < 500_000


def test_metrics_match_labels(trained):
    _, held_out, metrics = trained
    labels = [np.asarray(row) >= 0.5 for row in held_out["labels"]]
    assert metrics["eval_oracle_accuracy"] == pytest.approx(np.mean([row.any() for row in labels]))
    assert metrics["eval_first_sample_accuracy"] == pytest.approx(np.mean([row[0] for row in labels]))


def test_ranker_built_from_dataset_records_collection(trained):
    config = trained[0].ranker.config
    assert (config.hidden_size, config.feature_layer) == (HIDDEN, LAYER)
    assert (config.base_model, config.model_type, config.num_hidden_layers) == ("tiny/llama", "llama", 4)
    assert config.model_dtype == "bfloat16"


def test_a_given_ranker_records_the_dtype_of_the_features_it_trains_on(tmp_path):
    ranker = ranker_for_dataset(candidate_dataset(num_prompts=4, num_hidden_layers=None))
    assert ranker.config.model_dtype is None  # a dataset made elsewhere does not say
    RankerTrainer(model=ranker, args=arguments(tmp_path), train_dataset=candidate_dataset(num_prompts=4))
    assert ranker.config.model_dtype == "bfloat16"


@pytest.mark.parametrize("loss", ["listwise", "pairwise", "pointwise"])
def test_each_loss_trains(tmp_path, loss):
    train, held_out = candidate_dataset(seed=2), candidate_dataset(num_prompts=100, seed=3)
    trainer = RankerTrainer(args=arguments(tmp_path, loss=loss), train_dataset=train, eval_dataset=held_out)
    result = trainer.train()
    metrics = trainer.evaluate()
    assert trainer.ranker.config.loss == loss
    assert math.isfinite(result.training_loss) and math.isfinite(metrics["eval_loss"])
    assert metrics["eval_top1_accuracy"] > random_pick_accuracy(held_out) + 0.15, metrics


@pytest.mark.parametrize("loss", ["listwise", "pairwise", "pointwise"])
def test_groups_all_correct_or_all_wrong_give_no_nan(tmp_path, loss):
    labels = [[1.0] * 8 if prompt % 2 else [0.0] * 8 for prompt in range(64)]
    dataset = candidate_dataset(num_prompts=64, labels=labels)
    trainer = RankerTrainer(args=arguments(tmp_path, loss=loss, num_train_epochs=2), train_dataset=dataset)
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    assert all(torch.isfinite(parameter).all() for parameter in trainer.ranker.parameters())
    all_wrong = CandidateGroupCollator(LAYER, group_size=8)(list(feature_dataset(dataset, LAYER))[::2])
    output = trainer.ranker.train()(**all_wrong)
    output.loss.backward()
    if loss != "pointwise":  # no correct candidate: nothing to rank, the loss is an exact zero
        assert output.loss.item() == 0.0
    assert all(torch.isfinite(parameter.grad).all() for parameter in trainer.ranker.parameters())


def test_evaluation_handles_variable_candidate_counts(tmp_path):
    counts = [int(n) for n in np.random.default_rng(4).integers(1, 11, size=90)] + [0]
    held_out = candidate_dataset(num_prompts=len(counts), num_candidates=counts, seed=4)
    train = candidate_dataset(num_prompts=100, num_candidates=[6, 10] * 50, seed=5)
    args = arguments(tmp_path, num_train_epochs=2, per_device_eval_batch_size=16)
    trainer = RankerTrainer(args=args, train_dataset=train, eval_dataset=held_out)
    trainer.train()
    metrics = trainer.evaluate()
    hits = []
    for index, row in enumerate(held_out):  # one prompt at a time: no padding at all
        if not row["labels"]:
            hits.append(False)
            continue
        scores = scores_of(trainer.ranker, held_out.select([index]))[0]
        hits.append(row["labels"][int(scores.argmax())] >= 0.5)
    assert metrics["eval_top1_accuracy"] == pytest.approx(np.mean(hits))
    assert metrics["eval_num_candidates"] == max(counts)


def test_train_ranker_returns_a_trained_ranker(tmp_path):
    ranker = train_ranker(candidate_dataset(seed=6), output_dir=str(tmp_path), head="pointwise", projection_dim=16)
    assert isinstance(ranker, LanguageRanker) and not ranker.training
    assert (ranker.config.head, ranker.config.projection_dim) == ("pointwise", 16)
    held_out = candidate_dataset(num_prompts=100, seed=7)
    best = scores_of(ranker, held_out).argmax(-1)
    top1 = np.mean([labels[index] >= 0.5 for labels, index in zip(held_out["labels"], best.tolist())])
    assert top1 > random_pick_accuracy(held_out) + 0.25
    assert LanguageRanker.from_pretrained(tmp_path).config.head == "pointwise"


def log_prob_signal_dataset(num_prompts: int, seed: int) -> Dataset:
    """Labels carried only by ``mean_log_probs`` (correct candidates are likelier); the features are noise."""
    dataset = candidate_dataset(num_prompts=num_prompts, seed=seed)
    rng = np.random.default_rng(seed + 100)

    def scramble(row):
        labels = np.asarray(row["labels"])
        row[candidate_feature_column(LAYER)] = rng.standard_normal((len(labels), HIDDEN)).astype(np.float16)
        row["mean_log_probs"] = (-1.5 + labels + rng.normal(0, 0.3, len(labels)) + rng.normal(0, 1)).tolist()
        return row

    return dataset.map(scramble)


def test_log_prob_input_lets_the_ranker_learn_what_features_do_not_show(tmp_path):
    train, held_out = log_prob_signal_dataset(200, seed=10), log_prob_signal_dataset(100, seed=11)
    chance = random_pick_accuracy(held_out)
    accuracy = {}
    for use_mean_log_prob in (False, True):
        args = arguments(tmp_path / str(use_mean_log_prob), use_mean_log_prob=use_mean_log_prob)
        trainer = RankerTrainer(args=args, train_dataset=train, eval_dataset=held_out)
        trainer.train()
        accuracy[use_mean_log_prob] = trainer.evaluate()["eval_top1_accuracy"]
        assert trainer.ranker.config.use_mean_log_prob is use_mean_log_prob
    assert accuracy[True] > chance + 0.25, (accuracy, chance)
    assert accuracy[False] < chance + 0.15, (accuracy, chance)
    trainer.save_model()
    assert LanguageRanker.from_pretrained(trainer.args.output_dir).config.use_mean_log_prob


def test_log_prob_ranker_needs_the_column(tmp_path):
    args = arguments(tmp_path, use_mean_log_prob=True)
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['mean_log_probs'\]"):
        RankerTrainer(args=args, train_dataset=candidate_dataset(num_prompts=8))


def test_training_is_reproducible_with_a_seed(tmp_path):
    dataset = candidate_dataset(num_prompts=64, seed=9)
    rankers = []
    for run in range(2):
        trainer = RankerTrainer(args=arguments(tmp_path / str(run), num_train_epochs=1, seed=7), train_dataset=dataset)
        trainer.train()
        rankers.append(trainer.ranker)
    assert torch.equal(scores_of(rankers[0], dataset), scores_of(rankers[1], dataset))


# --------------------------------------------------------------------------------------------------- collator
def test_training_collator_samples_groups_with_a_correct_candidate():
    counts = [3, 8, 12, 5, 12, 1]
    labels = [[0.0, 1.0, 0.0], [0.0] * 7 + [1.0], [1.0] * 12, [0.0] * 5, [0.0] * 11 + [1.0], [1.0]]
    dataset = candidate_dataset(num_prompts=len(counts), num_candidates=counts, labels=labels)
    rows = list(feature_dataset(dataset, LAYER))
    batch = CandidateGroupCollator(LAYER, group_size=4)(rows)
    assert set(batch) == {"prompt_features", "candidate_features", "candidate_mask", "labels"}
    assert batch["prompt_features"].shape == (6, HIDDEN)
    assert batch["candidate_features"].shape == (6, 4, HIDDEN)
    assert batch["candidate_mask"].dtype == torch.bool and batch["labels"].dtype == torch.float32
    assert batch["candidate_mask"].sum(-1).tolist() == [min(n, 4) for n in counts]
    for row, source, row_labels in zip(range(len(rows)), rows, labels):
        real = batch["candidate_mask"][row]
        picked = batch["candidate_features"][row][real].float()
        pool = torch.as_tensor(source[candidate_feature_column(LAYER)]).float()
        indices = [int((pool == candidate).all(-1).nonzero()[0]) for candidate in picked]
        assert len(set(indices)) == len(indices)  # without replacement
        assert batch["labels"][row][real].tolist() == [row_labels[index] for index in indices]
        assert not batch["labels"][row][~real].any() and not batch["candidate_features"][row][~real].any()
        group = batch["labels"][row][real]
        assert (group >= 0.5).any() == any(label >= 0.5 for label in row_labels)
        assert (group < 0.5).any() == any(label < 0.5 for label in row_labels)


def test_training_collator_groups_are_random():
    dataset = candidate_dataset(num_prompts=1, num_candidates=16, labels=[[1.0] + [0.0] * 15])
    rows = list(feature_dataset(dataset, LAYER))
    collator = CandidateGroupCollator(LAYER, group_size=4)
    seen = {tuple(collator(rows)["candidate_features"][0, :, 0].tolist()) for _ in range(20)}
    assert len(seen) > 1


def test_evaluation_collator_keeps_all_candidates_in_order():
    dataset = candidate_dataset(num_prompts=3, num_candidates=[2, 5, 3], seed=8)
    rows = list(feature_dataset(dataset, LAYER))
    batch = CandidateGroupCollator(LAYER)(rows)
    assert batch["candidate_features"].shape == (3, 5, HIDDEN)
    assert batch["candidate_mask"].sum(-1).tolist() == [2, 5, 3]
    for row, source in enumerate(rows):
        n = len(source["labels"])
        expected = torch.as_tensor(source[candidate_feature_column(LAYER)])
        assert torch.equal(batch["candidate_features"][row, :n], expected)
        assert batch["labels"][row, :n].tolist() == source["labels"].tolist()


# ------------------------------------------------------------------------------------------------------ saving
def test_save_model_writes_a_loadable_ranker(trained, tmp_path):
    trainer, held_out, metrics = trained
    trainer.save_model(str(tmp_path))
    assert {"config.json", "model.safetensors", "README.md"} <= {path.name for path in tmp_path.iterdir()}
    reloaded = LanguageRanker.from_pretrained(tmp_path)
    assert reloaded.config == trainer.ranker.config
    assert torch.equal(scores_of(reloaded, held_out), scores_of(trainer.ranker, held_out))
    card = (tmp_path / "README.md").read_text()
    assert "group_size: 8" in card and f"{metrics['eval_top1_accuracy']:.3f}" in card


# ----------------------------------------------------------------------------------------------- layers/errors
def test_missing_feature_layer_is_a_clear_error(tmp_path):
    dataset = candidate_dataset(num_prompts=4)
    with pytest.raises(ValueError, match=r"no features for layer 3.*holds layers \[2\]"):
        RankerTrainer(args=arguments(tmp_path, feature_layer=3), train_dataset=dataset)
    other_layer = ranker_for_dataset(candidate_dataset(num_prompts=4, layers=(1,)))
    with pytest.raises(ValueError, match=r"lacks the column.*candidate_features\.1"):
        RankerTrainer(model=other_layer, args=arguments(tmp_path), train_dataset=dataset)
    with pytest.raises(ValueError, match="no 'candidate_features"):
        RankerTrainer(args=arguments(tmp_path), train_dataset=dataset.remove_columns(candidate_feature_column(LAYER)))


def test_default_layer_is_the_papers_when_collected_else_the_middle_one():
    layers = (2, 5, 7, 8)
    with_info = candidate_dataset(num_prompts=2, layers=layers, num_hidden_layers=8)
    without_info = candidate_dataset(num_prompts=2, layers=layers, num_hidden_layers=None)
    assert resolve_training_layer(with_info) == 5  # ~60% of 8 layers
    assert resolve_training_layer(without_info) == 7
    assert resolve_training_layer(without_info, 8) == 8


def test_invalid_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="remove_unused_columns=False"):
        arguments(tmp_path, remove_unused_columns=True)
    with pytest.raises(ValueError, match="Unknown ranking loss 'hinge'"):
        arguments(tmp_path, loss="hinge")
    with pytest.raises(ValueError, match="group_size=1 leaves nothing to rank"):
        arguments(tmp_path, group_size=1)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("group_size", 2.5, r"group_size must be an integer or None, got 2\.5"),
        ("group_size", "4", "group_size must be an integer or None, got '4'"),
        ("group_size", -2, "group_size must be a positive number"),
        ("feature_layer", "3", "feature_layer must be an integer or None, got '3'"),
        ("head", "grid", r"Unknown ranker head 'grid'\. Known: listwise, pointwise\."),
        ("projection_dim", 0, "projection_dim must be an integer >= 1, got 0"),
        ("num_ranker_layers", 1.5, r"num_ranker_layers must be an integer >= 1, got 1\.5"),
        ("dropout", 1.0, r"dropout must be a number in \[0, 1\), got 1\.0"),
        ("dropout", "0.1", "dropout must be a number"),
        ("use_mean_log_prob", "yes", "use_mean_log_prob must be True or False, got 'yes'"),
        ("selection", "vote", r"Unknown ranker_selection 'vote'\. Known: argmax, weighted_vote\."),
        ("loss", "hinge", "Unknown ranking loss 'hinge'"),
    ],
)
def test_bad_values_name_the_argument(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=message):
        arguments(tmp_path, **{field: value})


def test_the_recipe_arguments_are_ranker_config_fields(tmp_path):
    """The recipe is declared once, on RankerConfig: each recipe field is an argument with its default and help,
    under its argument name (num_layers is num_ranker_layers), and ranker_options maps the arguments back."""
    declared = {field.name: field for field in fields(RankerTrainingArguments)}
    recipe = list(RECIPE_FIELDS.values())
    assert [field.name for field in recipe] == [
        "head",
        "projection_dim",
        "num_layers",
        "num_attention_heads",
        "intermediate_size",
        "dropout",
        "use_prompt_feature",
        "use_mean_log_prob",
        "use_vote_share",
        "use_centrality",
        "center_features",
        "extra_layers",
        "answer_poolings",
        "layer_mix",
        "selection",
        "loss",
    ]

    def default_of(field):  # a list default (extra_layers) is a factory, so instances never share it
        return field.default_factory() if field.default is MISSING else field.default

    for config_field in recipe:
        argument = declared[recipe_argument(config_field)]
        assert (default_of(argument), argument.metadata["help"]) == (
            default_of(config_field),
            config_field.metadata["help"],
        )
    assert recipe_argument(RankerConfig.__dataclass_fields__["num_layers"]) == "num_ranker_layers"
    assert "num_layers" not in declared
    assert recipe_as_arguments({"head": "pointwise", "num_layers": 1}) == {"head": "pointwise", "num_ranker_layers": 1}
    options = arguments(tmp_path, num_ranker_layers=3, head="pointwise", use_centrality=True).ranker_options()
    defaults = {field.name: default_of(field) for field in recipe}
    assert options == {**defaults, "num_layers": 3, "head": "pointwise", "use_centrality": True}
    trainer = RankerTrainer(
        args=arguments(tmp_path, num_ranker_layers=3, intermediate_size=16), train_dataset=candidate_dataset(4)
    )
    assert (trainer.ranker.config.num_layers, trainer.ranker.config.intermediate_size) == (3, 16)
    assert len(trainer.ranker.encoder.layers) == 3
