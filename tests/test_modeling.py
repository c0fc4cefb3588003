"""`LanguageRanker`: sizes, scoring semantics, losses, strict Hub-format round trips."""

from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch
from conftest import build_model
from huggingface_hub import ModelCard
from transformers import LlamaConfig

from hf_language_ranker import LanguageRanker, RankerConfig
from hf_language_ranker.losses import listwise_loss, marginal_loss


def features(batch=3, candidates=5, hidden=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, hidden, generator=generator), torch.randn(batch, candidates, hidden, generator=generator)


@pytest.mark.parametrize("head", ["listwise", "pointwise"])
def test_default_heads_stay_under_half_a_million_parameters_for_4096(head):
    config = LlamaConfig(hidden_size=4096, num_hidden_layers=32, intermediate_size=64, num_attention_heads=32)
    ranker = LanguageRanker.for_model(config, head=head)
    assert 100_000 < ranker.num_parameters < 500_000
    assert ranker.config.feature_layer == round(0.6 * 32)
    assert ranker.config.hidden_size == 4096 and ranker.config.model_type == "llama"


def test_config_is_readable_as_attributes_and_dict():
    ranker = LanguageRanker.for_model(build_model("qwen2"), feature_layer=-1)
    assert ranker.config.feature_layer == 4 and ranker.config["feature_layer"] == 4
    assert ranker.config.to_dict()["num_hidden_layers"] == 4


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(head="cnn"), "Unknown ranker head 'cnn'"),
        (dict(loss="hinge"), "Unknown ranking loss 'hinge'. Known: listwise, marginal, pairwise, pointwise."),
        (dict(feature_layer=9), "outside 0..4"),
        (dict(num_layers=0), "num_layers must be an integer >= 1, got 0"),
        (dict(use_vote_share="yes"), "use_vote_share must be True or False, got 'yes'"),
    ],
)
def test_bad_config_is_refused(options, message):
    base = dict(hidden_size=32, num_hidden_layers=4, feature_layer=2)
    with pytest.raises(ValueError, match=message):
        RankerConfig(**{**base, **options})


def test_feature_layer_out_of_range_for_model():
    with pytest.raises(ValueError, match="Feature layer 7 does not exist"):
        LanguageRanker.for_model(build_model("llama"), feature_layer=7)


def test_masked_candidates_score_minus_inf_and_do_not_change_others():
    ranker = LanguageRanker.for_model(build_model("llama"))
    prompt, candidates = features()
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[0, 3:] = False
    scores = ranker(prompt, candidates, mask).scores
    assert torch.isinf(scores[0, 3:]).all() and torch.isfinite(scores[0, :3]).all()
    truncated = ranker(prompt[:1], candidates[:1, :3]).scores
    assert torch.allclose(scores[0, :3], truncated[0], atol=1e-5)


def test_listwise_candidates_see_each_other_pointwise_do_not():
    prompt, candidates = features()
    changed = candidates.clone()
    changed[:, 4] += 3.0
    listwise = LanguageRanker.for_model(build_model("llama"))
    pointwise = LanguageRanker.for_model(build_model("llama"), head="pointwise")
    assert not torch.allclose(listwise(prompt, candidates).scores[:, 0], listwise(prompt, changed).scores[:, 0])
    assert torch.allclose(pointwise(prompt, candidates).scores[:, 0], pointwise(prompt, changed).scores[:, 0])


@pytest.mark.parametrize("head", ["listwise", "pointwise"])
def test_centred_features_ignore_what_all_candidates_of_a_prompt_share(head):
    prompt, candidates = features()
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1, 2:] = False
    shifted = candidates + torch.randn(3, 1, candidates.shape[-1]) * 5  # one offset per prompt, as a task would add
    shifted[1, 2:] = torch.randn_like(shifted[1, 2:])  # masked slots must not enter the mean
    centred = LanguageRanker.for_model(build_model("llama"), head=head, center_features=True).eval()
    plain = LanguageRanker.for_model(build_model("llama"), head=head).eval()
    assert torch.allclose(centred(prompt, candidates, mask).scores, centred(prompt, shifted, mask).scores, atol=1e-5)
    assert not torch.allclose(plain(prompt, candidates, mask).scores, plain(prompt, shifted, mask).scores, atol=1e-3)


@pytest.mark.parametrize("loss", ["listwise", "marginal", "pairwise", "pointwise"])
def test_loss_is_finite_and_trains_on_all_correct_and_all_wrong_groups(loss):
    ranker = LanguageRanker.for_model(build_model("llama"), loss=loss).train()
    prompt, candidates = features()
    labels = torch.tensor([[1.0, 1, 1, 1, 1], [0, 0, 0, 0, 0], [1, 0, 0, 1, 0]])
    output = ranker(prompt, candidates, labels=labels)
    assert torch.isfinite(output.loss)
    output.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in ranker.parameters() if p.grad is not None)
    no_signal = ranker(prompt[:2], candidates[:2], labels=labels[:2]).loss
    assert torch.isfinite(no_signal)


def test_marginal_loss_is_minus_log_mass_on_the_correct_candidates():
    scores = torch.tensor([[2.0, 0.5, -1.0, float("-inf")], [0.0, 1.0, 0.0, 3.0]])
    labels = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    probs = torch.softmax(scores[0, :3], dim=-1)
    expected = -torch.log(probs[0] + probs[1])
    assert torch.allclose(marginal_loss(scores, labels, mask), expected)  # the all-wrong group is skipped
    # how the mass is shared between correct candidates does not matter, unlike for the listwise loss
    shifted = torch.tensor([[1.0, 1.5, -1.0, float("-inf")]])
    shifted[0, :2] = torch.log(probs[:2].sum() / 2) - torch.log(probs[2]) - 1.0
    assert torch.allclose(marginal_loss(shifted, labels[:1], mask[:1]), expected, atol=1e-6)
    assert not torch.allclose(
        listwise_loss(shifted, labels[:1], mask[:1]), listwise_loss(scores[:1], labels[:1], mask[:1])
    )


def test_wrong_feature_shapes_are_refused():
    ranker = LanguageRanker.for_model(build_model("llama"))
    prompt, candidates = features(hidden=16)
    with pytest.raises(ValueError, match=r"Expected prompt_features \[B, 32\]"):
        ranker(prompt, candidates)


def test_save_and_load_round_trip_with_card(tmp_path):
    ranker = LanguageRanker.for_model(build_model("llama"), head="pointwise", projection_dim=16)
    ranker.config.base_model = "HuggingFaceTB/SmolLM2-135M-Instruct"
    ranker.save_pretrained(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = LanguageRanker.from_pretrained(tmp_path)
    assert loaded.config == ranker.config and not loaded.training
    prompt, candidates = features()
    assert torch.allclose(loaded(prompt, candidates).scores, ranker(prompt, candidates).scores)
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.library_name == "hf-language-ranker"
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert {"language-ranker", "best-of-n"} <= set(card.data.tags)


@pytest.mark.parametrize("head", ["listwise", "pointwise"])
def test_mean_log_prob_input_is_required_used_and_saved(head, tmp_path):
    torch.manual_seed(0)
    ranker = LanguageRanker.for_model(build_model("llama"), head=head, use_mean_log_prob=True)
    prompt, candidates = features()
    with pytest.raises(ValueError, match="pass mean_log_probs"):
        ranker(prompt, candidates)
    with pytest.raises(ValueError, match=r"mean_log_probs must have shape \[3, 5\]"):
        ranker(prompt, candidates, mean_log_probs=torch.zeros(3, 4))
    log_probs = -torch.rand(3, 5)
    scores = ranker(prompt, candidates, mean_log_probs=log_probs).scores
    changed = log_probs.clone()
    changed[:, 0] -= 2.0
    assert not torch.allclose(ranker(prompt, candidates, mean_log_probs=changed).scores[:, 0], scores[:, 0])
    # masked candidates take no part, not even through the prompt's mean log-prob
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[:, 3:] = False
    masked = ranker(prompt, candidates, mask, mean_log_probs=torch.cat([log_probs[:, :3], changed[:, 3:] - 9], 1))
    truncated = ranker(prompt, candidates[:, :3], mean_log_probs=log_probs[:, :3]).scores
    assert torch.allclose(masked.scores[:, :3], truncated, atol=1e-5)
    ranker.save_pretrained(tmp_path)
    loaded = LanguageRanker.from_pretrained(tmp_path)
    assert loaded.config.use_mean_log_prob
    assert torch.allclose(loaded(prompt, candidates, mean_log_probs=log_probs).scores, scores)


def test_rankers_without_the_log_prob_input_ignore_it():
    ranker = LanguageRanker.for_model(build_model("llama"))
    prompt, candidates = features()
    plain = ranker(prompt, candidates).scores
    assert torch.equal(ranker(prompt, candidates, mean_log_probs=-torch.rand(3, 5)).scores, plain)


def _saved(tmp_path):
    ranker = LanguageRanker.for_model(build_model("llama"))
    ranker.save_pretrained(tmp_path)
    return ranker


def test_saving_writes_the_config_as_it_is_now_and_loading_takes_overrides(tmp_path):
    _saved(tmp_path / "trained")
    loaded = LanguageRanker.from_pretrained(tmp_path / "trained")
    loaded.config.selection = "weighted_vote"  # a change after loading is saved, not the config it was loaded with
    loaded.save_pretrained(tmp_path / "changed")
    assert LanguageRanker.from_pretrained(tmp_path / "changed").config.selection == "weighted_vote"
    assert LanguageRanker.from_pretrained(tmp_path / "changed", selection="argmax").config.selection == "argmax"
    with pytest.raises(TypeError, match="selection_rule"):  # not a config field: named, not blamed on config.json
        LanguageRanker.from_pretrained(tmp_path / "changed", selection_rule="argmax")
    built = LanguageRanker({"hidden_size": 8, "num_hidden_layers": 2, "feature_layer": 1})
    built.config.loss = "pairwise"
    built.save_pretrained(tmp_path / "built")
    saved = json.loads((tmp_path / "built" / "config.json").read_text())
    assert saved == built.config.to_dict() and saved["loss"] == "pairwise"


def test_extra_key_is_refused(tmp_path):
    ranker = _saved(tmp_path)
    state = dict(ranker.state_dict(), surprise=torch.zeros(1))
    safetensors.torch.save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"unexpected keys \['surprise'\]"):
        LanguageRanker.from_pretrained(tmp_path)


def test_missing_key_and_wrong_shape_are_refused(tmp_path):
    ranker = _saved(tmp_path)
    state = {key: value for key, value in ranker.state_dict().items() if key != "score_head.bias"}
    safetensors.torch.save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="missing keys"):
        LanguageRanker.from_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["projection_dim"] = 32
    (tmp_path / "config.json").write_text(json.dumps(config))
    safetensors.torch.save_file(ranker.state_dict(), tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="wrong shapes"):
        LanguageRanker.from_pretrained(tmp_path)


def test_pickle_checkpoint_is_refused_without_unpickling(tmp_path):
    ranker = _saved(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    marker = tmp_path / "executed"

    class Bomb:
        def __reduce__(self):
            return (marker.write_text, ("pwned",))

    torch.save({"weights": ranker.state_dict(), "bomb": Bomb()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(OSError, match=r"safetensors only.*pytorch_model\.bin"):
        LanguageRanker.from_pretrained(tmp_path)
    assert not marker.exists()


def test_folder_without_config_or_with_foreign_config_is_refused(tmp_path):
    _saved(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 3, "model_type": "llama"}))
    with pytest.raises(ValueError, match="not a Language Ranker config"):
        LanguageRanker.from_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(OSError, match="No config.json"):
        LanguageRanker.from_pretrained(tmp_path)
