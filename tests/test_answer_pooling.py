"""Answer poolings (``answer_poolings``: the mean of the answer tokens' states, the state at the first answer token):
served features equal the plain-forward reference on both serving paths, rankers reading them score alike in
`generate` and `rank_candidates`, training reaches a signal only the mean holds, collections store them on request
only, and configs round-trip."""

from __future__ import annotations

import json

import collection_worker as worker
import numpy as np
import pytest
import torch
from conftest import FAMILIES, build_model, build_tokenizer, left_padded_prompts
from test_evaluation import NOISE_LAYER, SIGNAL_LAYER, synthetic_dataset
from test_feature_parity import TOLERANCE, ForceEosAt, check_parity, expected_lengths, ranked_generate_output
from transformers import LogitsProcessorList

from hf_language_ranker import LanguageRanker, attach_ranker, featurize_candidates, rank_candidates, sample_candidates
from hf_language_ranker.candidates import candidate_feature_column, feature_layers
from hf_language_ranker.evaluation.baselines import selection_accuracy
from hf_language_ranker.evaluation.cross_validation import select_ranker
from hf_language_ranker.evaluation.scorers import RankerScorer
from hf_language_ranker.features import stack_inputs
from hf_language_ranker.layout import featurize_token_candidates

pytestmark = pytest.mark.usefixtures("one_torch_thread")

POOLINGS = ("mean", "first")
LAYERS = [0, 2, 4]  # the embeddings, a block input, the last layer (after the final norm)
TRAINING = {"num_train_epochs": 3, "seed": 0, "report_to": "none", "disable_tqdm": True, "logging_strategy": "no"}


def sampled_with_mixed_stops(model):
    """Left-padded prompts and 4 candidates each, rows ending at the first step, the last step and in between."""
    input_ids, attention_mask = left_padded_prompts()
    force = ForceEosAt(input_ids.shape[1], {0: 0, 5: 7, 9: 3})
    torch.manual_seed(1)
    candidates = sample_candidates(
        model,
        input_ids,
        attention_mask,
        num_candidates=4,
        layers=LAYERS,
        answer_poolings=POOLINGS,
        max_new_tokens=8,
        logits_processor=LogitsProcessorList([force]),
    )
    return input_ids, attention_mask, candidates


def check_pooled_parity(model, input_ids, attention_mask, generated, lengths, pooled, layers):
    """``pooled`` (pooling -> layer -> ``[B, N, H]``) equals `featurize_candidates`' plain-forward reference."""
    for pooling in POOLINGS:
        _, reference = featurize_candidates(model, input_ids, attention_mask, generated, lengths, layers, pooling)
        for layer in layers:
            assert torch.allclose(pooled[pooling][layer], reference[layer], atol=TOLERANCE), (pooling, layer)


@pytest.mark.parametrize("family", FAMILIES)
def test_sampled_poolings_equal_the_plain_forward_reference(family):
    model = build_model(family)
    input_ids, attention_mask, candidates = sampled_with_mixed_stops(model)
    assert len(set(candidates.lengths.flatten().tolist())) >= 3, "the test needs rows stopping at different steps"
    check_parity(model, candidates, input_ids, attention_mask, LAYERS)  # the last token's feature is unchanged
    generated, lengths = candidates.generated, candidates.lengths
    check_pooled_parity(model, input_ids, attention_mask, generated, lengths, candidates.pooled_features, LAYERS)
    # the three kinds differ wherever an answer has several tokens, and agree for a one-token answer (row 0)
    last, pooled = candidates.candidate_features[2], candidates.pooled_features
    longer = lengths > 1
    for pooling in POOLINGS:
        assert not torch.allclose(pooled[pooling][2][longer], last[longer], atol=1e-3), pooling
        assert torch.allclose(pooled[pooling][2][0, 0], last[0, 0], atol=TOLERANCE), pooling
    assert pooled["mean"][2].dtype == torch.float32


def test_poolings_match_without_a_cache_too():
    """Without a cache every pass feeds whole rows; the newest position still carries the answer token just fed."""
    model = build_model("llama")
    input_ids, attention_mask = left_padded_prompts()
    torch.manual_seed(3)
    sampled = sample_candidates(
        model,
        input_ids,
        attention_mask,
        num_candidates=3,
        layers=[2],
        answer_poolings=POOLINGS,
        max_new_tokens=5,
        use_cache=False,
    )
    check_pooled_parity(
        model, input_ids, attention_mask, sampled.generated, sampled.lengths, sampled.pooled_features, [2]
    )


def test_the_bytes_each_pooling_keeps_per_candidate_and_layer():
    """What `hf_language_ranker.pooling` states: mean a float32 vector (4 H bytes), first one state in the model's
    dtype (2 H in bfloat16)."""
    model = build_model("llama").to(torch.bfloat16)
    input_ids, attention_mask = left_padded_prompts()
    sampled = sample_candidates(
        model, input_ids, attention_mask, num_candidates=2, layers=[2], answer_poolings=POOLINGS, max_new_tokens=3
    )
    hidden = model.config.hidden_size
    per_candidate = {
        pooling: by_layer[2].element_size() * by_layer[2].shape[-1]
        for pooling, by_layer in sampled.pooled_features.items()
    }
    assert per_candidate == {"mean": 4 * hidden, "first": 2 * hidden}
    assert sampled.candidate_features[2].dtype == torch.bfloat16  # the last token's feature is as before


def test_poolings_are_only_computed_when_asked():
    model = build_model("llama")
    input_ids, attention_mask = left_padded_prompts()
    candidates = sample_candidates(model, input_ids, attention_mask, num_candidates=2, layers=[2], max_new_tokens=3)
    assert candidates.pooled_features == {}
    with pytest.raises(
        ValueError,
        match=r"answer_poolings must be a list of distinct answer poolings among mean, first, got \['median'\]",
    ):
        sample_candidates(model, input_ids, num_candidates=2, layers=[2], answer_poolings=["median"])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("token_statistics", [False, True])  # False: the pass stops at the deepest layer read
def test_chunked_poolings_equal_the_plain_forward_reference(family, token_statistics):
    model = build_model(family)
    input_ids, attention_mask, sampled = sampled_with_mixed_stops(model)
    generated, lengths = sampled.generated, sampled.lengths
    prompts = [row[mask.bool()].tolist() for row, mask in zip(input_ids, attention_mask)]
    candidates = [
        [ids[:length].tolist() for ids, length in zip(rows, row_lengths)]
        for rows, row_lengths in zip(generated, lengths)
    ]
    layers = [1, 4] if token_statistics else [1, 3]
    features = featurize_token_candidates(
        model,
        prompts,
        candidates,
        layers,
        answer_poolings=POOLINGS,
        token_statistics=token_statistics,
        candidate_batch_size=3,
    )
    assert torch.equal(features.lengths, lengths)
    check_pooled_parity(model, input_ids, attention_mask, generated, lengths, features.pooled_features, layers)
    assert featurize_token_candidates(model, prompts, candidates, layers).pooled_features == {}


# ------------------------------------------------------------------------------------------------------- rankers
@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("layer_mix", ["concat", "softmax"])
def test_a_pooling_ranker_scores_alike_in_generate_rank_candidates_and_the_reference(family, layer_mix):
    from test_ranking import sampled_by_generate

    model = attach_ranker(build_model(family, seed=5))
    torch.manual_seed(0)
    ranker = LanguageRanker.for_model(
        model, feature_layer=3, extra_layers=[1], answer_poolings=["mean", "first"], layer_mix=layer_mix
    )
    slots = ranker.config.input_features
    assert slots == [("last", 3), ("last", 1), ("mean", 3), ("mean", 1), ("first", 3), ("first", 1)]
    if layer_mix == "softmax":  # unequal weights, so the order of the features matters
        ranker.layer_weights.data = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.0, -0.5])
    prompts, candidates, output = sampled_by_generate(model, ranker)
    ranked = rank_candidates(model, build_tokenizer(), prompts, candidates, ranker, candidate_batch_size=4)
    assert torch.allclose(torch.stack(ranked.scores), output.candidate_scores, atol=TOLERANCE)

    input_ids, attention_mask = left_padded_prompts()
    generated = output.candidate_sequences[:, :, input_ids.shape[1] :]
    lengths = expected_lengths(generated)
    prompt_features, last = featurize_candidates(model, input_ids, attention_mask, generated, lengths, [1, 3])
    pooled = {
        pooling: featurize_candidates(model, input_ids, attention_mask, generated, lengths, [1, 3], pooling)[1]
        for pooling in POOLINGS
    }
    with torch.no_grad():
        reference = ranker(*stack_inputs(slots, prompt_features, last, pooled)).scores
        without_mean = ranker(*stack_inputs(slots, prompt_features, last, {**pooled, "mean": last})).scores
    assert torch.allclose(output.candidate_scores, reference, atol=TOLERANCE)
    assert not torch.allclose(reference, without_mean, atol=1e-3)  # the pooled features do reach the scores


def test_several_rankers_get_the_poolings_any_of_them_reads():
    model = attach_ranker(build_model("llama", seed=5))
    torch.manual_seed(0)
    rankers = {
        "mean": LanguageRanker.for_model(model, feature_layer=2, answer_poolings=["mean"]),
        "first": LanguageRanker.for_model(model, feature_layer=3, answer_poolings=["first"]),
        "plain": LanguageRanker.for_model(model, feature_layer=3),
    }
    input_ids, attention_mask, output = ranked_generate_output(model, rankers)
    generated = output.candidate_sequences[:, :, input_ids.shape[1] :]
    lengths = expected_lengths(generated)
    for name, ranker in rankers.items():
        layer, poolings = ranker.config.feature_layer, ranker.config.answer_poolings
        prompts, last = featurize_candidates(model, input_ids, attention_mask, generated, lengths, [layer])
        pooled = {
            pooling: featurize_candidates(model, input_ids, attention_mask, generated, lengths, [layer], pooling)[1]
            for pooling in poolings
        }
        with torch.no_grad():
            reference = ranker(*stack_inputs(ranker.config.input_features, prompts, last, pooled)).scores
        assert torch.allclose(output.ranker_scores[name], reference, atol=TOLERANCE), name


def test_a_pooling_ranker_names_the_features_it_misses():
    ranker = LanguageRanker.for_model(build_model("llama"), feature_layer=3, answer_poolings=["first"])
    with pytest.raises(ValueError, match=r"\[B, 2, 32\].*\(pooling, layer\) \[\('last', 3\), \('first', 3\)\]"):
        ranker(torch.zeros(2, 32), torch.zeros(2, 4, 32))
    with pytest.raises(ValueError, match=r"'first' answer pooling at layer 3.*answer_poolings=\['first'\]"):
        stack_inputs(ranker.config.input_features, {3: torch.zeros(2, 32)}, {3: torch.zeros(2, 4, 32)}, {})


# ------------------------------------------------------------------------------------------------------ training
def mean_signal_dataset(num_prompts: int, seed: int):
    """`synthetic_dataset` whose correctness signal sits only in the mean pooling of `NOISE_LAYER`: the signal layer's
    candidate features become that column, and the signal layer is dropped."""
    dataset = synthetic_dataset(num_prompts, seed=seed)
    signal, mean = candidate_feature_column(SIGNAL_LAYER), candidate_feature_column(NOISE_LAYER, "mean")
    dataset = dataset.rename_column(signal, mean)
    return dataset.remove_columns(f"prompt_features.{SIGNAL_LAYER}")


def test_training_reaches_a_signal_only_the_mean_holds_and_the_folder_reloads(tmp_path):
    train, test = mean_signal_dataset(120, seed=0), mean_signal_dataset(100, seed=2)
    assert feature_layers(train) == [NOISE_LAYER] and feature_layers(train, "mean") == [NOISE_LAYER]
    last_only = RankerScorer(feature_layer=NOISE_LAYER, output_dir=tmp_path / "last", **TRAINING).fit(train)
    pooled = RankerScorer(
        feature_layer=NOISE_LAYER, answer_poolings=["mean"], output_dir=tmp_path / "pooled", **TRAINING
    ).fit(train)
    accuracy = {
        name: selection_accuracy(test, np.stack(scorer.score(test, 8)).argmax(-1))
        for name, scorer in [("last", last_only), ("pooled", pooled)]
    }
    assert accuracy["pooled"] > accuracy["last"] + 0.15, accuracy
    reloaded = LanguageRanker.from_pretrained(tmp_path / "pooled")
    assert reloaded.config.answer_poolings == ["mean"]
    assert json.loads((tmp_path / "pooled" / "config.json").read_text())["answer_poolings"] == ["mean"]
    card = (tmp_path / "pooled" / "README.md").read_text()
    assert "| answer poolings | mean (`hf_language_ranker.pooling`), read beside" in card
    assert np.allclose(RankerScorer.from_trained(reloaded).score(test, 8), pooled.score(test, 8), atol=1e-6)


def test_select_ranker_tries_a_pooling_variant_and_chooses_it_when_only_the_mean_holds_the_signal():
    train, validation = mean_signal_dataset(60, seed=0), mean_signal_dataset(30, seed=1)
    variants = {"last token": {"head": "pointwise"}, "with mean": {"head": "pointwise", "answer_poolings": ["mean"]}}
    selection = select_ranker(train, validation, variants=variants, selections=("argmax",), folds=3, num_train_epochs=3)
    assert {setting.variant for setting in selection.accuracy} == {"last token", "with mean"}
    assert selection.chosen.variant == "with mean" and selection.ranker.config.answer_poolings == ["mean"]


def test_training_on_a_pooling_the_dataset_lacks_names_it(tmp_path):
    message = r"no 'first' answer-pooling features for layer 1 \(column 'first_candidate_features\.1'\)"
    with pytest.raises(ValueError, match=message):
        RankerScorer(feature_layer=NOISE_LAYER, answer_poolings=["first"], output_dir=tmp_path, **TRAINING).fit(
            mean_signal_dataset(20, seed=0)
        )


# ---------------------------------------------------------------------------------------------------- config
def test_config_round_trips_and_an_old_config_loads_with_the_default(tmp_path):
    model = build_model("llama")
    ranker = LanguageRanker.for_model(model, feature_layer=3, answer_poolings=["first", "mean"])
    ranker.save_pretrained(tmp_path / "new")
    loaded = LanguageRanker.from_pretrained(tmp_path / "new")
    assert loaded.config == ranker.config and loaded.config.input_features[1:] == [("first", 3), ("mean", 3)]

    LanguageRanker.for_model(model, feature_layer=3).save_pretrained(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    del config["answer_poolings"]  # a folder saved before the option existed
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    old = LanguageRanker.from_pretrained(tmp_path / "old")
    assert old.config.answer_poolings == [] and old.config.input_features == [("last", 3)]


@pytest.mark.parametrize("answer_poolings", [["median"], ["mean", "mean"], ["last"], "mean"])
def test_bad_answer_poolings_are_refused(answer_poolings):
    message = "answer_poolings must be a list of distinct answer poolings among mean, first"
    with pytest.raises(ValueError, match=message):
        LanguageRanker.for_model(build_model("llama"), feature_layer=3, answer_poolings=answer_poolings)


# ------------------------------------------------------------------------------------------------ collections
def test_a_collection_stores_poolings_only_when_asked(tmp_path):
    plain = worker.collect(tmp_path / "plain", 2, batch_size=2)
    pooled = worker.collect(tmp_path / "pooled", 2, batch_size=2, answer_poolings=["mean"])
    added = [name for name in pooled.column_names if name not in plain.column_names]
    assert added == ["mean_candidate_features.2", "mean_candidate_features.4"]
    assert [name for name in pooled.column_names if name in plain.column_names] == plain.column_names
    manifest = json.loads((tmp_path / "plain" / "manifest.json").read_text())
    assert "answer_poolings" not in manifest
    for column in plain.column_names:  # the same sampling: the extra kind changes nothing else
        if column != "generation":
            assert pooled[column][:] == plain[column][:], column
    # the stored means are those of ranked generate's sampling path, by hand: one shard seeded with seed + 0
    inputs = build_tokenizer()(worker.make_prompts(2), return_tensors="pt", padding=True, padding_side="left")
    model = build_model("llama")
    torch.manual_seed(worker.SETTINGS["seed"])
    sampled = sample_candidates(
        model, **inputs, num_candidates=4, layers=[2, 4], answer_poolings=["mean"], max_new_tokens=6
    )
    for layer in (2, 4):
        stored = pooled.with_format("torch")[candidate_feature_column(layer, "mean")][:]
        assert torch.equal(stored, sampled.pooled_features["mean"][layer].half().float())
    with pytest.raises(ValueError, match="other settings"):
        worker.collect(tmp_path / "pooled", 2, batch_size=2, answer_poolings=["first"])
