"""Rankers reading several layers (``extra_layers`` + ``layer_mix``) and fold ensembles (``LanguageRanker.ensemble``):
served scores equal those of the plain-forward features, training reaches the extra layers, folders load strictly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import build_model, build_tokenizer
from test_evaluation import NOISE_LAYER, SIGNAL_LAYER, synthetic_dataset
from test_feature_parity import TOLERANCE, expected_lengths, ranked_generate_output

from hf_language_ranker import LanguageRanker, attach_ranker, featurize_candidates, rank_candidates
from hf_language_ranker.evaluation.baselines import selection_accuracy
from hf_language_ranker.evaluation.cross_validation import select_ranker
from hf_language_ranker.evaluation.scorers import RankerScorer
from hf_language_ranker.features import stack_layers

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRAINING = {"num_train_epochs": 3, "seed": 0, "report_to": "none", "disable_tqdm": True, "logging_strategy": "no"}


def random_inputs(ranker: LanguageRanker, batch: int = 2, n: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    layers = len(ranker.config.input_layers)
    feature = [ranker.config.hidden_size] if layers == 1 else [layers, ranker.config.hidden_size]
    return {
        "prompt_features": torch.randn([batch, *feature], generator=generator),
        "candidate_features": torch.randn([batch, n, *feature], generator=generator),
    }


# ----------------------------------------------------------------------------------------------- several layers
@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("layer_mix", ["concat", "softmax"])
def test_several_layer_scores_in_generate_equal_the_plain_forward_reference(family, layer_mix):
    model = attach_ranker(build_model(family, seed=5))
    torch.manual_seed(0)
    ranker = LanguageRanker.for_model(model, feature_layer=3, extra_layers=[1, 4], layer_mix=layer_mix)
    if layer_mix == "softmax":  # unequal weights, so the order of the layers matters
        ranker.layer_weights.data = torch.tensor([0.5, -1.0, 2.0])
    input_ids, attention_mask, output = ranked_generate_output(model, ranker)
    generated = output.candidate_sequences[:, :, input_ids.shape[1] :]
    lengths = expected_lengths(generated)
    prompts, candidates = featurize_candidates(model, input_ids, attention_mask, generated, lengths, [1, 3, 4])
    with torch.no_grad():
        reference = ranker(stack_layers(prompts, [3, 1, 4]), stack_layers(candidates, [3, 1, 4])).scores
        shuffled = ranker(stack_layers(prompts, [1, 3, 4]), stack_layers(candidates, [1, 3, 4])).scores
    assert torch.allclose(output.candidate_scores, reference, atol=TOLERANCE)
    assert not torch.allclose(reference, shuffled, atol=1e-3)  # the layers are read in the config's order


def test_a_several_layer_ranker_refuses_single_layer_features_by_name():
    ranker = LanguageRanker.for_model(build_model("llama"), feature_layer=3, extra_layers=[1])
    with pytest.raises(ValueError, match=r"\[B, 2, 32\].*layers \[3, 1\]"):
        ranker(torch.zeros(2, 32), torch.zeros(2, 4, 32))


@pytest.mark.parametrize(
    ("extra_layers", "message"),
    [([3], "other than feature_layer=3"), ([5], r"in 0\.\.4"), ([1, 1], "distinct"), ([-1], "layer indices >= 0")],
)
def test_bad_extra_layers_are_refused(extra_layers, message):
    with pytest.raises(ValueError, match=message):
        LanguageRanker.for_model(build_model("llama"), feature_layer=3, extra_layers=extra_layers)


@pytest.mark.parametrize("layer_mix", ["concat", "softmax"])
def test_training_reaches_a_signal_only_an_extra_layer_holds(layer_mix, tmp_path):
    """The noise layer alone ranks at chance; with the signal layer as an extra layer the ranker learns it, and the
    softmax mix learns to weigh that layer most. The trained folder reloads strictly with the same scores."""
    train, test = synthetic_dataset(120, seed=0), synthetic_dataset(100, seed=2)
    noise_only = RankerScorer(feature_layer=NOISE_LAYER, output_dir=tmp_path / "noise", **TRAINING).fit(train)
    mixed = RankerScorer(
        feature_layer=NOISE_LAYER,
        extra_layers=[SIGNAL_LAYER],
        layer_mix=layer_mix,
        output_dir=tmp_path / "mixed",
        **TRAINING,
    ).fit(train)
    accuracy = {
        name: selection_accuracy(test, np.stack(scorer.score(test, 8)).argmax(-1))
        for name, scorer in [("noise", noise_only), ("mixed", mixed)]
    }
    assert accuracy["mixed"] > accuracy["noise"] + 0.15, accuracy
    if layer_mix == "softmax":
        assert mixed.ranker.layer_weights.softmax(-1)[1] > 0.5
    reloaded = LanguageRanker.from_pretrained(tmp_path / "mixed")
    assert reloaded.config.input_layers == [NOISE_LAYER, SIGNAL_LAYER]
    card = (tmp_path / "mixed" / "README.md").read_text()
    assert f"at layers {NOISE_LAYER}, {SIGNAL_LAYER} of" in card and f"`{layer_mix}`" in card
    assert np.allclose(RankerScorer.from_trained(reloaded).score(test, 8), mixed.score(test, 8), atol=1e-6)


def test_training_on_a_layer_the_dataset_lacks_names_it(tmp_path):
    with pytest.raises(ValueError, match="no features for layer 2"):
        RankerScorer(feature_layer=NOISE_LAYER, extra_layers=[2], output_dir=tmp_path, **TRAINING).fit(
            synthetic_dataset(20)
        )


# ------------------------------------------------------------------------------------------------- ensembles
def members(count: int = 3, **options) -> list[LanguageRanker]:
    model = build_model("llama")
    rankers = []
    for seed in range(count):
        torch.manual_seed(seed)
        rankers.append(LanguageRanker.for_model(model, feature_layer=3, **options))
    return rankers


@pytest.mark.parametrize("options", [{}, {"extra_layers": [1], "use_mean_log_prob": True}])
def test_an_ensemble_scores_the_mean_of_its_members_and_loads_strictly(options, tmp_path):
    parts = members(**options)
    ensemble = LanguageRanker.ensemble(parts)
    inputs = random_inputs(ensemble)
    if options:
        inputs["mean_log_probs"] = -torch.rand(2, 5)
    inputs["candidate_mask"] = torch.tensor([[True] * 5, [True, True, True, False, False]])
    with torch.no_grad():
        expected = torch.stack([part(**inputs).scores for part in parts]).mean(0)
        scores = ensemble(**inputs).scores
    assert torch.equal(scores.isinf(), ~inputs["candidate_mask"])
    assert torch.allclose(scores, expected, atol=1e-6)
    assert ensemble.config.ensemble_size == 3 and ensemble.num_parameters == 3 * parts[0].num_parameters
    ensemble.save_pretrained(tmp_path)
    assert "| fold ensemble | 3 members of this recipe" in (tmp_path / "README.md").read_text()
    loaded = LanguageRanker.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).scores, scores)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "ensemble_size": 2}))
    with pytest.raises(ValueError, match=r"unexpected keys \['members\.2\."):
        LanguageRanker.from_pretrained(tmp_path)


def test_an_ensemble_needs_members_of_one_recipe():
    with pytest.raises(ValueError, match="rankers\\[1\\] has another config"):
        LanguageRanker.ensemble([*members(1), *members(1, head="pointwise")])
    with pytest.raises(ValueError, match="at least 2 rankers"):
        LanguageRanker.ensemble(members(1))


def test_select_ranker_skips_repeated_layers_keeps_pinned_ones_and_returns_the_fold_ensemble():
    train, validation = synthetic_dataset(40, seed=0), synthetic_dataset(20, seed=1)
    variants = {
        "one layer": {"head": "pointwise"},
        "two layers": {"head": "pointwise", "extra_layers": [SIGNAL_LAYER]},
        "pinned": {"head": "pointwise", "feature_layer": SIGNAL_LAYER, "extra_layers": [NOISE_LAYER]},
    }
    selection = select_ranker(
        train,
        validation,
        variants=variants,
        layers=[NOISE_LAYER, SIGNAL_LAYER],
        selections=("argmax",),
        folds=3,
        fold_ensemble=True,
        num_train_epochs=2,
    )
    assert {(setting.variant, setting.feature_layer) for setting in selection.accuracy} == {
        ("one layer", NOISE_LAYER),
        ("one layer", SIGNAL_LAYER),
        ("two layers", NOISE_LAYER),
        ("pinned", SIGNAL_LAYER),
    }
    ensemble = selection.ensemble
    assert ensemble.config.ensemble_size == 3
    chosen = selection.ranker.config
    assert ensemble.members[0].config.input_layers == chosen.input_layers and ensemble.config.head == chosen.head
    # the members are the fold models cross-validation scored: retrained with the same seed, not the refit
    assert not torch.equal(ensemble.members[0].projection[0].weight, selection.ranker.projection[0].weight)


@pytest.mark.parametrize("layer_mix", ["concat", "softmax"])
def test_rank_candidates_gives_a_several_layer_ranker_the_scores_generate_gives(layer_mix):
    """`rank_candidates` (the path of other samplers and of `collect --candidates`) reads every layer of the
    ranker in its chunked pass, stopping below no layer it needs: the scores equal ranked `generate`'s."""
    from test_ranking import sampled_by_generate

    model = attach_ranker(build_model("llama", seed=5))
    torch.manual_seed(0)
    ranker = LanguageRanker.for_model(model, feature_layer=1, extra_layers=[3], layer_mix=layer_mix)
    prompts, candidates, output = sampled_by_generate(model, ranker)
    ranked = rank_candidates(model, build_tokenizer(), prompts, candidates, ranker, candidate_batch_size=4)
    assert torch.allclose(torch.stack(ranked.scores), output.candidate_scores, atol=TOLERANCE)
