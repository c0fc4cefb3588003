"""A bfloat16 CPU model's mask-free one-token attention steps run on query heads packed per key/value head while the
context is open; prefills, steps with a mask, other dtypes and other attention implementations run as before, and
the model's attention setting comes back whatever happens."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from conftest import FAMILIES, build_model, left_padded_prompts
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from hf_language_ranker import featurize_candidates, sample_candidates
from hf_language_ranker.decode_attention import (
    IMPLEMENTATION,
    packed_query_decode_attention,
    sdpa_attention_packed_query,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HEADS, KEY_VALUE_HEADS, HEAD_DIM = 4, 2, 8  # the tiny Llama's attention (conftest)


@contextmanager
def sdpa_calls(monkeypatch) -> Iterator[list[tuple[tuple[int, ...], torch.dtype, bool]]]:
    """Each call of torch's scaled_dot_product_attention while the context is open: the query's shape and dtype, and
    whether ``enable_gqa`` was on."""
    calls: list[tuple[tuple[int, ...], torch.dtype, bool]] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording(query: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        calls.append((tuple(query.shape), query.dtype, bool(kwargs.get("enable_gqa"))))
        return sdpa(query, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
        yield calls


def one_token_step(model: torch.nn.Module, padded: bool) -> torch.Tensor:
    """The logits of one new token after three prompts (a prefill, then a one-token step on its cache); unpadded
    prompts pass no mask, as ranked `generate` does."""
    input_ids, attention_mask = left_padded_prompts()
    if not padded:
        input_ids, attention_mask = input_ids[:, -2:], None  # every prompt's last two tokens: no padding
    prefill = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True)
    next_ids = prefill.logits[:, -1].argmax(-1, keepdim=True)
    mask = None if attention_mask is None else torch.cat([attention_mask, torch.ones_like(next_ids)], dim=1)
    return model(input_ids=next_ids, attention_mask=mask, cache=prefill.past_key_values).logits


@torch.no_grad()
def test_a_mask_free_one_token_step_runs_on_packed_query_heads(monkeypatch):
    model = build_model("llama").to(torch.bfloat16)
    before = one_token_step(model, padded=False)
    with packed_query_decode_attention(model) as switched, sdpa_calls(monkeypatch) as calls:
        assert switched == 1 and model.config._attn_implementation == IMPLEMENTATION
        logits = one_token_step(model, padded=False)
    layers = model.config.num_hidden_layers
    prefill, step = calls[:layers], calls[layers:]
    assert set(prefill) == {((3, HEADS, 2, HEAD_DIM), torch.bfloat16, True)}  # transformers' own call
    assert step == [((3, KEY_VALUE_HEADS, HEADS // KEY_VALUE_HEADS, HEAD_DIM), torch.bfloat16, False)] * layers
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits, before, atol=2**-6, rtol=2**-7)  # the same kernel: bfloat16 rounding at most
    assert model.config._attn_implementation == "sdpa"


@torch.no_grad()
def test_the_packed_step_is_transformers_attention_in_its_layout():
    """Against attention computed in float64 and against transformers' sdpa attention (``enable_gqa``), the packed
    step's output, in transformers' ``[rows, tokens, heads, dim]`` layout, is off by bfloat16 rounding only."""
    torch.manual_seed(0)
    module = build_model("llama").to(torch.bfloat16).model.layers[0].self_attn
    query = torch.randn(3, HEADS, 1, HEAD_DIM, dtype=torch.bfloat16) * 2
    key, value = (torch.randn(3, KEY_VALUE_HEADS, 9, HEAD_DIM, dtype=torch.bfloat16) for _ in range(2))
    output, _ = sdpa_attention_packed_query(module, query, key, value, None, scaling=HEAD_DIM**-0.5)
    transformers_output, _ = sdpa_attention_forward(module, query, key, value, None, scaling=HEAD_DIM**-0.5)
    keys, values = (tensor.double().repeat_interleave(2, dim=1) for tensor in (key, value))
    weights = (query.double() @ keys.transpose(-1, -2) * HEAD_DIM**-0.5).softmax(-1)
    expected = (weights @ values).transpose(1, 2)
    assert output.shape == transformers_output.shape == (3, 1, HEADS, HEAD_DIM) and output.dtype == torch.bfloat16
    torch.testing.assert_close(output.double(), expected, atol=2**-7, rtol=2**-7)
    torch.testing.assert_close(output, transformers_output, atol=2**-7, rtol=2**-7)


@torch.no_grad()
def test_prefills_and_steps_with_a_mask_are_left_to_transformers(monkeypatch):
    model = build_model("llama").to(torch.bfloat16)
    before = one_token_step(model, padded=True)
    with packed_query_decode_attention(model) as switched, sdpa_calls(monkeypatch) as calls:
        assert switched == 1
        assert torch.equal(one_token_step(model, padded=True), before)
    assert not any(enable_gqa for _, _, enable_gqa in calls)  # a mask: transformers packs the step itself


@torch.no_grad()
def test_a_model_without_grouped_queries_is_left_to_transformers():
    model = build_model("llama", num_key_value_heads=HEADS).to(torch.bfloat16)
    before = one_token_step(model, padded=False)
    with packed_query_decode_attention(model) as switched:
        assert switched == 1
        assert torch.equal(one_token_step(model, padded=False), before)


@torch.no_grad()
@pytest.mark.parametrize(
    ("dtype", "attention", "enabled"),
    [(torch.float32, "sdpa", True), (torch.bfloat16, "eager", True), (torch.bfloat16, "sdpa", False)],
)
def test_nothing_is_switched_in_float32_with_other_attention_or_when_disabled(monkeypatch, dtype, attention, enabled):
    model = build_model("llama", attn_implementation=attention).to(dtype)
    before = one_token_step(model, padded=False)
    with packed_query_decode_attention(model, enabled=enabled) as switched:
        assert switched == 0 and model.config._attn_implementation == attention
        assert torch.equal(one_token_step(model, padded=False), before)


def test_the_attention_setting_comes_back_when_the_call_fails():
    model = build_model("llama").to(torch.bfloat16)
    with pytest.raises(RuntimeError, match="mid-call"), packed_query_decode_attention(model):
        raise RuntimeError("mid-call")
    assert model.config._attn_implementation == "sdpa"


@torch.no_grad()
@pytest.mark.parametrize("padded", [True, False], ids=["padded", "unpadded"])
@pytest.mark.parametrize("family", FAMILIES)
def test_sampled_bfloat16_features_agree_with_a_plain_forward_pass(monkeypatch, family, padded):
    """Decoding steps on packed query heads and a plain bfloat16 pass over the whole text give the same features up to
    bfloat16 rounding, in every family, with and without padding."""
    model = build_model(family).to(torch.bfloat16)
    input_ids, attention_mask = left_padded_prompts()
    if not padded:
        input_ids, attention_mask = input_ids[:, -2:], torch.ones_like(input_ids[:, -2:])
    torch.manual_seed(0)
    with sdpa_calls(monkeypatch) as calls:
        candidates = sample_candidates(
            model, input_ids, attention_mask, num_candidates=3, layers=[2, 4], max_new_tokens=6
        )
    assert {dtype for _, dtype, _ in calls} <= {torch.bfloat16}
    if family in ("llama", "qwen2") and not padded:  # grouped queries, no mask: every step packed, none enable_gqa
        steps = [shape for shape, _, _ in calls if shape[1] == KEY_VALUE_HEADS]
        assert steps and not any(enable_gqa for shape, _, enable_gqa in calls if shape[2] == 1)
    assert model.config._attn_implementation == "sdpa"
    _, reference = featurize_candidates(
        model, input_ids, attention_mask, candidates.generated, candidates.lengths, [2, 4]
    )
    for layer in (2, 4):
        torch.testing.assert_close(candidates.candidate_features[layer], reference[layer], atol=0.1, rtol=0.05)
