"""Linear layers on weights packed for oneDNN: same outputs as torch's kernels, used by sampling and by
`rank_candidates`' pass, and undone whatever happens."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import torch
from conftest import EOS, build_model, build_tokenizer, left_padded_prompts
from torch import nn

from hf_language_ranker import LanguageRanker, rank_candidates, sample_candidates
from hf_language_ranker import prepacked_linears as prepacked_linears_module
from hf_language_ranker.prepacked_linears import packable_dtypes, packable_linears, packing_available, prepacked_linears

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.skipif(not packing_available(), reason="this torch build has no oneDNN linear packing"),
]


def plain_linears(model: nn.Module) -> list[nn.Linear]:
    return [module for module in model.modules() if type(module) is nn.Linear]


def logits(model: nn.Module) -> torch.Tensor:
    input_ids, attention_mask = left_padded_prompts()
    return model(input_ids=input_ids, attention_mask=attention_mask).logits


@torch.no_grad()
def test_packed_layers_give_torchs_outputs_and_are_restored_after():
    model = build_model("llama")
    before = logits(model)
    with prepacked_linears(model, rows=4) as packed:
        assert packed == len(plain_linears(model)) > 0
        assert all("forward" in vars(layer) for layer in plain_linears(model))
        during = logits(model)
    assert not any("forward" in vars(layer) for layer in plain_linears(model))
    torch.testing.assert_close(during, before, atol=1e-5, rtol=1e-5)
    assert torch.equal(logits(model), before)


@torch.no_grad()
@pytest.mark.skipif(torch.bfloat16 not in packable_dtypes(), reason="oneDNN has no bfloat16 on this CPU")
def test_bfloat16_layers_are_packed_and_agree():
    model = build_model("llama").to(torch.bfloat16)
    layer = plain_linears(model)[0]
    inputs = torch.randn(5, layer.in_features, dtype=torch.bfloat16)
    expected = layer(inputs)
    with prepacked_linears(model, rows=5) as packed:
        assert packed == len(plain_linears(model))
        torch.testing.assert_close(layer(inputs), expected)


class ScaledLinear(nn.Linear):
    """A subclass (like a quantized layer) whose forward is not nn.Linear's."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(inputs)


@torch.no_grad()
def test_only_plain_linears_with_their_own_forward_are_packed():
    hooked, subclass, half = nn.Linear(4, 3), ScaledLinear(4, 3), nn.Linear(4, 3).half()
    hooked.forward = lambda inputs: torch.zeros(len(inputs), 3)  # as accelerate's hooks replace it
    model = nn.ModuleList([nn.Linear(4, 3), hooked, subclass, half, nn.Linear(4, 3).to("meta")])
    assert packable_linears(model) == [model[0]]
    with prepacked_linears(model, rows=2) as packed:
        assert packed == 1
        assert torch.equal(hooked(torch.ones(2, 4)), torch.zeros(2, 3))
    assert "forward" in vars(hooked)  # the replaced forward is left in place


def test_nothing_is_packed_with_gradients_or_cpu_autocast_on_or_when_disabled():
    model = build_model("llama")
    with prepacked_linears(model, rows=2) as packed:
        assert packed == 0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), prepacked_linears(model, rows=2) as packed:
        assert packed == 0
    with torch.no_grad(), prepacked_linears(model, rows=2, enabled=False) as packed:
        assert packed == 0


@torch.no_grad()
def test_layers_are_restored_when_the_call_fails():
    model = build_model("llama")
    with pytest.raises(RuntimeError, match="inside"), prepacked_linears(model, rows=2):
        raise RuntimeError("inside")
    assert not any("forward" in vars(layer) for layer in plain_linears(model))


def packed_and_plain(model: nn.Module, call: Callable[[bool], Any]) -> tuple[Any, Any]:
    """``call(prepack_weights)`` both ways, checking that the model's layers ran packed exactly when asked."""
    layer = plain_linears(model)[0]
    packed_during_call: list[bool] = []
    handle = layer.register_forward_pre_hook(lambda module, args: packed_during_call.append("forward" in vars(module)))
    results = {}
    try:
        for prepack in (True, False):
            packed_during_call.clear()
            results[prepack] = call(prepack)
            assert packed_during_call and all(value is prepack for value in packed_during_call)
    finally:
        handle.remove()
    return results[True], results[False]


def test_sample_candidates_runs_on_packed_layers_with_the_same_candidates():
    model = build_model("llama")

    def sample(prepack: bool) -> Any:
        torch.manual_seed(0)
        sampling = {"num_candidates": 3, "layers": [1, 3], "max_new_tokens": 6}
        return sample_candidates(model, *left_padded_prompts(), **sampling, prepack_weights=prepack)

    packed, plain = packed_and_plain(model, sample)
    assert torch.equal(packed.sequences, plain.sequences)
    for layer_index in (1, 3):
        torch.testing.assert_close(packed.candidate_features[layer_index], plain.candidate_features[layer_index])
        torch.testing.assert_close(packed.prompt_features[layer_index], plain.prompt_features[layer_index])


def test_rank_candidates_runs_on_packed_layers_with_the_same_scores():
    model = build_model("llama")
    tokenizer = build_tokenizer()
    ranker = LanguageRanker.for_model(model, feature_layer=2)
    prompts = [[5, 6, 7, 8], [9, 10]]
    candidates = [[[11, 12, 13, EOS], [14, 15]], [[16, EOS], [17, 18, 19], [20]]]
    packed, plain = packed_and_plain(
        model,
        lambda prepack: rank_candidates(
            model, tokenizer, prompts, candidates, ranker, candidate_batch_size=2, prepack_weights=prepack
        ),
    )
    for packed_scores, plain_scores in zip(packed.scores, plain.scores):
        torch.testing.assert_close(packed_scores, plain_scores)
    assert torch.equal(packed.best_indices, plain.best_indices)


@torch.no_grad()
def test_nothing_is_packed_when_the_copy_would_not_fit_in_memory(monkeypatch, caplog):
    model = build_model("llama")
    weight_bytes = sum(layer.weight.numel() * layer.weight.element_size() for layer in plain_linears(model))
    monkeypatch.setattr(prepacked_linears_module, "available_memory_bytes", lambda: weight_bytes)  # needs 2x
    with caplog.at_level(logging.WARNING), prepacked_linears(model, rows=2) as packed:
        assert packed == 0
    assert "Not packing the linear layers" in caplog.text and "prepack_weights=False" in caplog.text
    monkeypatch.setattr(prepacked_linears_module, "available_memory_bytes", lambda: 2 * weight_bytes)
    with prepacked_linears(model, rows=2) as packed:
        assert packed == len(plain_linears(model))
    monkeypatch.setattr(prepacked_linears_module, "available_memory_bytes", lambda: None)  # unknown: pack
    with prepacked_linears(model, rows=2) as packed:
        assert packed == len(plain_linears(model))
