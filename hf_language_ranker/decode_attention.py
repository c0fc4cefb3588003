"""A bfloat16 CPU model's attention over one new token runs in float32, for the length of a call.

At each decoding step every layer attends from one query token to the whole cache. On a CPU, torch's flash
attention kernel can take about twice as long over bfloat16 tensors as over float32 copies of them, conversion
included, while the keys and values are few (`benchmarks/decode_attention.py` measures it in ranked `generate`: 16
rows). With many, converting them costs more memory traffic than it saves (`collect_candidates` of 64 and 128 rows
sampled 2-18% fewer tokens a second), so a step converts only up to `FLOAT32_STEP_MAX_ELEMENTS` keys and values.
`float32_decode_attention` switches, until the context closes, the model's ``sdpa`` attention to
`sdpa_attention_in_float32`, which converts the query, keys and values of a one-token step to float32, runs
transformers' sdpa attention on them and returns its output in the model's dtype. Longer queries (prefill) and
steps over more keys and values run as before, and so does every model that is not bfloat16 on a CPU or whose
attention is not ``sdpa``.

The result is at least as precise as the bfloat16 kernel, which also sums in float32 but rounds the attention weights
to bfloat16; it is not the same bit for bit, so sampled candidates differ from those of the bfloat16 kernel as they
would between two CPUs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

#: the attention implementation `float32_decode_attention` switches ``sdpa`` models to
IMPLEMENTATION = "sdpa_decode_in_float32"
#: the most keys and values (elements: 2 MiB in bfloat16) a step converts to float32. Measured on one CPU (AMD Zen 5)
#: with the embedded model: 16 rows (up to about 1M) gained, 32 rows (1-2M) broke even, 64 and 128 rows (2-8M) lost
FLOAT32_STEP_MAX_ELEMENTS = 2**20


def sdpa_attention_in_float32(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' sdpa attention, on float32 copies of a one-token step's bfloat16 inputs (output in bfloat16),
    where its keys and values are at most `FLOAT32_STEP_MAX_ELEMENTS`."""
    few_keys = key.numel() + value.numel() <= FLOAT32_STEP_MAX_ELEMENTS
    if query.shape[2] != 1 or query.dtype != torch.bfloat16 or not few_keys:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.float()
    output, _ = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask, **kwargs)
    return output.to(query.dtype), None


AttentionInterface.register(IMPLEMENTATION, sdpa_attention_in_float32)
AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)


def _sdpa_configs(model: nn.Module) -> list[Any]:
    """The distinct configs of ``model`` and its submodules whose attention implementation is ``sdpa``."""
    configs = {id(config): config for module in model.modules() if (config := getattr(module, "config", None))}
    return [config for config in configs.values() if getattr(config, "_attn_implementation", None) == "sdpa"]


def _runs_in_bfloat16_on_cpu(model: nn.Module) -> bool:
    parameter = next(model.parameters(), None)
    return parameter is not None and parameter.device.type == "cpu" and parameter.dtype == torch.bfloat16


@contextmanager
def float32_decode_attention(model: nn.Module, enabled: bool = True) -> Iterator[int]:
    """Run ``model``'s one-token attention steps in float32 until the context closes (a bfloat16 model on a CPU).

    Yields:
        The number of configs switched (0 when disabled, when the model is not bfloat16 on a CPU, or when no
        attention in it is ``sdpa``).
    """
    configs = _sdpa_configs(model) if enabled and _runs_in_bfloat16_on_cpu(model) else []
    try:
        for config in configs:
            config._attn_implementation_internal = IMPLEMENTATION
        yield len(configs)
    finally:
        for config in configs:
            config._attn_implementation_internal = "sdpa"
