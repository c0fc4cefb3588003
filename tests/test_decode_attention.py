"""While the context is open, a CPU model's one-token attention steps of grouped queries take the faster layout for
their dtype (bfloat16 without a mask: packed query heads; float32 with a mask: ``enable_gqa``); prefills, the steps
transformers already lays out that way, other dtypes and other attention implementations run as before, and the
model's attention setting comes back whatever happens."""

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
    grouped_query_decode_attention,
    sdpa_attention_grouped_query_step,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HEADS, KEY_VALUE_HEADS, HEAD_DIM = 4, 2, 8  # the tiny Llama's attention (conftest)
PACKED_STEP = (3, KEY_VALUE_HEADS, HEADS // KEY_VALUE_HEADS, HEAD_DIM)  # three prompts' step, query heads packed
GROUPED_STEP = (3, HEADS, 1, HEAD_DIM)  # the same step with enable_gqa


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


def prompts(padded: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Three left-padded prompts with their mask, or every prompt's last two tokens (no padding) and no mask, as
    ranked `generate` passes them."""
    input_ids, attention_mask = left_padded_prompts()
    return (input_ids, attention_mask) if padded else (input_ids[:, -2:], None)


def one_token_step(model: torch.nn.Module, padded: bool) -> torch.Tensor:
    """The logits of one new token after three prompts (a prefill, then a one-token step on its cache)."""
    input_ids, attention_mask = prompts(padded)
    prefill = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True)
    next_ids = prefill.logits[:, -1].argmax(-1, keepdim=True)
    mask = None if attention_mask is None else torch.cat([attention_mask, torch.ones_like(next_ids)], dim=1)
    return model(input_ids=next_ids, attention_mask=mask, cache=prefill.past_key_values).logits


@torch.no_grad()
@pytest.mark.parametrize(
    ("dtype", "padded", "step_call", "tolerance"),
    [
        (torch.bfloat16, False, (PACKED_STEP, torch.bfloat16, False), 2**-6),
        (torch.float32, True, (GROUPED_STEP, torch.float32, True), 1e-5),
    ],
    ids=["bfloat16-unpadded-packs", "float32-padded-enable_gqa"],
)
def test_a_step_takes_the_faster_layout_for_its_dtype(monkeypatch, dtype, padded, step_call, tolerance):
    model = build_model("llama").to(dtype)
    before = one_token_step(model, padded)
    with grouped_query_decode_attention(model) as switched, sdpa_calls(monkeypatch) as calls:
        assert switched == 1 and model.config._attn_implementation == IMPLEMENTATION
        logits = one_token_step(model, padded)
    layers = model.config.num_hidden_layers
    assert calls[layers:] == [step_call] * layers
    assert logits.dtype == dtype
    torch.testing.assert_close(logits, before, atol=tolerance, rtol=tolerance)  # the same kernel: rounding at most
    assert model.config._attn_implementation == "sdpa"


@torch.no_grad()
@pytest.mark.parametrize(
    ("dtype", "masked", "tolerance"),
    [(torch.bfloat16, False, 2**-7), (torch.float32, True, 1e-6)],
    ids=["bfloat16-unmasked", "float32-masked"],
)
def test_the_step_is_transformers_attention_in_its_layout(dtype, masked, tolerance):
    """Against attention computed in float64 and against transformers' sdpa attention, the step's output, in
    transformers' ``[rows, tokens, heads, dim]`` layout, is off by rounding only."""
    torch.manual_seed(0)
    module = build_model("llama").to(dtype).model.layers[0].self_attn
    query = torch.randn(3, HEADS, 1, HEAD_DIM, dtype=dtype) * 2
    key, value = (torch.randn(3, KEY_VALUE_HEADS, 9, HEAD_DIM, dtype=dtype) for _ in range(2))
    mask = torch.ones(3, 1, 1, 9, dtype=torch.bool)
    mask[0, ..., :4] = False  # a left-padded row
    mask = mask if masked else None
    output, _ = sdpa_attention_grouped_query_step(module, query, key, value, mask, scaling=HEAD_DIM**-0.5)
    transformers_output, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=HEAD_DIM**-0.5)
    keys, values = (tensor.double().repeat_interleave(2, dim=1) for tensor in (key, value))
    scores = query.double() @ keys.transpose(-1, -2) * HEAD_DIM**-0.5
    expected = (scores if mask is None else scores.masked_fill(~mask, float("-inf"))).softmax(-1) @ values
    assert output.shape == transformers_output.shape == (3, 1, HEADS, HEAD_DIM) and output.dtype == dtype
    torch.testing.assert_close(output.double(), expected.transpose(1, 2), atol=tolerance, rtol=tolerance)
    torch.testing.assert_close(output, transformers_output, atol=tolerance, rtol=tolerance)


@torch.no_grad()
@pytest.mark.parametrize(
    ("dtype", "padded"), [(torch.bfloat16, True), (torch.float32, False)], ids=["bfloat16-padded", "float32-unpadded"]
)
def test_steps_transformers_already_lays_out_fast_are_left_to_it(monkeypatch, dtype, padded):
    model = build_model("llama").to(dtype)
    before = one_token_step(model, padded)
    with grouped_query_decode_attention(model) as switched:
        assert switched == 1
        assert torch.equal(one_token_step(model, padded), before)


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_a_model_without_grouped_queries_is_left_to_transformers(dtype):
    """Each dtype's step in the case its branch would otherwise change (bfloat16 unpadded, float32 padded)."""
    model = build_model("llama", num_key_value_heads=HEADS).to(dtype)
    before = one_token_step(model, padded=dtype == torch.float32)
    with grouped_query_decode_attention(model) as switched:
        assert switched == 1
        assert torch.equal(one_token_step(model, padded=dtype == torch.float32), before)


@torch.no_grad()
@pytest.mark.parametrize(
    ("dtype", "attention", "enabled"),
    [(torch.float16, "sdpa", True), (torch.bfloat16, "eager", True), (torch.float32, "sdpa", False)],
)
def test_nothing_is_switched_in_float16_with_other_attention_or_when_disabled(dtype, attention, enabled):
    model = build_model("llama", attn_implementation=attention).to(dtype)
    before = one_token_step(model, padded=True)
    with grouped_query_decode_attention(model, enabled=enabled) as switched:
        assert switched == 0 and model.config._attn_implementation == attention
        assert torch.equal(one_token_step(model, padded=True), before)


def test_the_attention_setting_comes_back_when_the_call_fails():
    model = build_model("llama").to(torch.bfloat16)
    with pytest.raises(RuntimeError, match="mid-call"), grouped_query_decode_attention(model):
        raise RuntimeError("mid-call")
    assert model.config._attn_implementation == "sdpa"


@torch.no_grad()
@pytest.mark.parametrize("padded", [True, False], ids=["padded", "unpadded"])
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.bfloat16, 0.1), (torch.float32, 1e-4)], ids=["bf16", "fp32"])
@pytest.mark.parametrize("family", FAMILIES)
def test_sampled_features_agree_with_a_plain_forward_pass(monkeypatch, family, dtype, tolerance, padded):
    """Decoding steps in the faster layout and a plain pass over the whole text give the same features up to rounding
    (bfloat16's, or float32's 1e-4 parity), in every family, with and without padding."""
    model = build_model(family).to(dtype)
    input_ids, attention_mask = left_padded_prompts()
    if not padded:
        input_ids, attention_mask = input_ids[:, -2:], torch.ones_like(input_ids[:, -2:])
    torch.manual_seed(0)
    with sdpa_calls(monkeypatch) as calls:
        candidates = sample_candidates(
            model, input_ids, attention_mask, num_candidates=3, layers=[2, 4], max_new_tokens=6
        )
    steps = [  # one-token steps: a query of one token, or packed
        (shape, enable_gqa) for shape, _, enable_gqa in calls if shape[2] == 1 or shape[1] == KEY_VALUE_HEADS
    ]
    if family in ("llama", "qwen2") and dtype == torch.bfloat16 and not padded:
        assert steps and all(shape[1] == KEY_VALUE_HEADS and not enable_gqa for shape, enable_gqa in steps)
    if family in ("llama", "qwen2") and dtype == torch.float32:
        assert steps and all(shape[1] == HEADS and enable_gqa for shape, enable_gqa in steps)
    assert model.config._attn_implementation == "sdpa"
    _, reference = featurize_candidates(
        model, input_ids, attention_mask, candidates.generated, candidates.lengths, [2, 4]
    )
    for layer in (2, 4):
        torch.testing.assert_close(
            candidates.candidate_features[layer], reference[layer], atol=tolerance, rtol=tolerance / 2
        )
