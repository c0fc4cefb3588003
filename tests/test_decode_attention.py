"""A bfloat16 CPU model attends from each new token in float32 while the context is open; prefill, other dtypes and
other attention implementations run as before, and the model's attention setting comes back whatever happens."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from conftest import FAMILIES, build_model, left_padded_prompts

from hf_language_ranker import decode_attention, featurize_candidates, sample_candidates
from hf_language_ranker.decode_attention import IMPLEMENTATION, float32_decode_attention, sdpa_attention_in_float32

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@contextmanager
def attention_dtypes(model: torch.nn.Module, monkeypatch) -> Iterator[list[tuple[int, set[torch.dtype]]]]:
    """For each forward pass of ``model`` while the context is open: its number of new tokens, and the query dtypes
    torch's scaled_dot_product_attention saw in it."""
    passes: list[tuple[int, set[torch.dtype]]] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording(query: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        passes[-1][1].add(query.dtype)
        return sdpa(query, *args, **kwargs)

    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: passes.append((kwargs["input_ids"].shape[1], set())), with_kwargs=True
    )
    try:
        with monkeypatch.context() as patch:
            patch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
            yield passes
    finally:
        handle.remove()


def one_token_step(model: torch.nn.Module) -> torch.Tensor:
    """The logits of one new token after the left-padded prompts (a prefill, then a one-token step on its cache)."""
    input_ids, attention_mask = left_padded_prompts()
    prefill = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True)
    next_ids = prefill.logits[:, -1].argmax(-1, keepdim=True)
    mask = torch.cat([attention_mask, torch.ones_like(next_ids)], dim=1)
    return model(input_ids=next_ids, attention_mask=mask, cache=prefill.past_key_values).logits


@torch.no_grad()
def test_one_token_steps_attend_in_float32_and_prefill_in_bfloat16(monkeypatch):
    model = build_model("llama").to(torch.bfloat16)
    with float32_decode_attention(model) as switched, attention_dtypes(model, monkeypatch) as passes:
        assert switched == 1 and model.config._attn_implementation == IMPLEMENTATION
        logits = one_token_step(model)
    assert passes == [(7, {torch.bfloat16}), (1, {torch.float32})]
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    assert model.config._attn_implementation == "sdpa"


@torch.no_grad()
def test_the_float32_step_is_as_precise_as_float32_attention():
    """Against attention computed in float64, the one-token output is off by bfloat16 rounding only."""
    torch.manual_seed(0)
    model = build_model("llama").to(torch.bfloat16)
    module = model.model.layers[0].self_attn
    query = torch.randn(3, 4, 1, 8, dtype=torch.bfloat16)
    key, value = (torch.randn(3, 2, 9, 8, dtype=torch.bfloat16) for _ in range(2))
    mask = torch.ones(3, 1, 1, 9, dtype=torch.bool)
    mask[0, ..., :4] = False  # a left-padded row
    output, _ = sdpa_attention_in_float32(module, query, key, value, mask, scaling=8**-0.5)
    keys, values = (tensor.double().repeat_interleave(2, dim=1) for tensor in (key, value))
    weights = (query.double() @ keys.transpose(-1, -2) * 8**-0.5).masked_fill(~mask, float("-inf")).softmax(-1)
    expected = (weights @ values).transpose(1, 2)
    assert output.dtype == torch.bfloat16
    torch.testing.assert_close(output.double(), expected, atol=0, rtol=2**-8)


@torch.no_grad()
@pytest.mark.parametrize(
    ("dtype", "attention", "enabled"),
    [(torch.float32, "sdpa", True), (torch.bfloat16, "eager", True), (torch.bfloat16, "sdpa", False)],
)
def test_nothing_is_switched_in_float32_with_other_attention_or_when_disabled(monkeypatch, dtype, attention, enabled):
    model = build_model("llama", attn_implementation=attention).to(dtype)
    before = one_token_step(model)
    with float32_decode_attention(model, enabled=enabled) as switched, attention_dtypes(model, monkeypatch) as passes:
        assert switched == 0 and model.config._attn_implementation == attention
        assert torch.equal(one_token_step(model), before)
    assert set().union(*(dtypes for _, dtypes in passes)) <= {dtype}


@torch.no_grad()
def test_steps_over_more_keys_and_values_than_the_limit_keep_the_bfloat16_kernel(monkeypatch):
    model = build_model("llama").to(torch.bfloat16)
    before = one_token_step(model)
    # 3 rows x 2 key/value heads x 8 dimensions, keys and values: the limit holds 7 positions, the step attends to 8
    monkeypatch.setattr(decode_attention, "FLOAT32_STEP_MAX_ELEMENTS", 3 * 2 * 8 * 2 * 7)
    with float32_decode_attention(model) as switched, attention_dtypes(model, monkeypatch) as passes:
        assert switched == 1
        assert torch.equal(one_token_step(model), before)
    assert passes == [(7, {torch.bfloat16}), (1, {torch.bfloat16})]


def test_the_attention_setting_comes_back_when_the_call_fails():
    model = build_model("llama").to(torch.bfloat16)
    with pytest.raises(RuntimeError, match="mid-call"), float32_decode_attention(model):
        raise RuntimeError("mid-call")
    assert model.config._attn_implementation == "sdpa"


@torch.no_grad()
@pytest.mark.parametrize("family", FAMILIES)
def test_sampled_bfloat16_features_agree_with_a_plain_forward_pass(monkeypatch, family):
    """Decoding steps in float32 attention and a bfloat16 prefill over the whole text give the same features up to
    bfloat16 rounding, with padded prompts, in every family."""
    model = build_model(family).to(torch.bfloat16)
    input_ids, attention_mask = left_padded_prompts()
    torch.manual_seed(0)
    with attention_dtypes(model, monkeypatch) as passes:
        candidates = sample_candidates(
            model, input_ids, attention_mask, num_candidates=3, layers=[2, 4], max_new_tokens=6
        )
    if family != "gpt2":  # GPT-2 computes its attention without transformers' sdpa function
        assert {(tokens > 1, *dtypes) for tokens, dtypes in passes} == {(True, torch.bfloat16), (False, torch.float32)}
    assert model.config._attn_implementation == "sdpa"
    _, reference = featurize_candidates(
        model, input_ids, attention_mask, candidates.generated, candidates.lengths, [2, 4]
    )
    for layer in (2, 4):
        torch.testing.assert_close(candidates.candidate_features[layer], reference[layer], atol=0.1, rtol=0.05)
