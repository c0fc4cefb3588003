"""A CPU model's one-token attention steps of grouped queries call torch's kernel in the layout it runs fastest.

In a model with grouped-query attention (several query heads share a key/value head: SmolLM2, Llama, Qwen2),
transformers' ``sdpa`` attention hands a one-token decoding step to torch's ``scaled_dot_product_attention`` in one of
two layouts. Without a mask, the query goes as ``[rows, heads, 1, dim]`` with ``enable_gqa=True``. With a mask, the
query heads of each key/value head are packed as that head's queries, ``[rows, key/value heads, group, dim]`` (its
``pack_gqa``). On a CPU, which layout is faster depends on the dtype (`benchmarks/decode_attention_kernels.py`, the
embedded model's shapes):

* bfloat16: packed, 3.9-6.4x. Ranked `generate` drops the mask whenever its prompts need no padding, so its steps took
  the slow layout;
* float32: ``enable_gqa``, 1.05-1.9x, with a mask as without one. Padded batches (collection) took the slow layout.

`grouped_query_decode_attention` switches, until the context closes, a bfloat16 or float32 CPU model's ``sdpa``
attention to `sdpa_attention_grouped_query_step`, which gives such steps the faster layout: bfloat16 steps without a
mask run packed, float32 steps with a mask run with ``enable_gqa``. It is the same kernel in the same dtype, so the
result is as precise as before; it is not always the same bit for bit (the kernel sees a query of another shape), so
sampled candidates can differ as they would between two CPUs. Everything else goes to transformers' sdpa attention
unchanged: the prefill, the steps already in the faster layout, models without grouped queries, softcapping or
position biases, and every model in another dtype, on another device or whose attention is not ``sdpa``.
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

#: the attention implementation `grouped_query_decode_attention` switches ``sdpa`` models to
IMPLEMENTATION = "sdpa_grouped_query_step"
#: the dtypes whose steps it changes
DTYPES = (torch.bfloat16, torch.float32)


def sdpa_attention_grouped_query_step(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' sdpa attention, except for a one-token step of grouped queries: in bfloat16 without a mask it
    runs on the query heads packed per key/value head, in float32 with a mask it runs with ``enable_gqa``."""
    groups = getattr(module, "num_key_value_groups", 1)
    plain_step = (
        query.shape[2] == 1 and groups > 1 and kwargs.get("softcap") is None and kwargs.get("position_bias") is None
    )
    rows, heads, _, dim = query.shape
    if plain_step and query.dtype == torch.bfloat16 and attention_mask is None:
        packed = query.reshape(rows, heads // groups, groups, dim)
        output = nn.functional.scaled_dot_product_attention(packed, key, value, dropout_p=dropout, scale=scaling)
    elif plain_step and query.dtype == torch.float32 and attention_mask is not None:
        output = nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=True
        )
    else:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    return output.reshape(rows, 1, heads, value.shape[-1]), None  # transformers' layout: [rows, tokens, heads, dim]


AttentionInterface.register(IMPLEMENTATION, sdpa_attention_grouped_query_step)
AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)


def _sdpa_configs(model: nn.Module) -> list[Any]:
    """The distinct configs of ``model`` and its submodules whose attention implementation is ``sdpa``."""
    configs = {id(config): config for module in model.modules() if (config := getattr(module, "config", None))}
    return [config for config in configs.values() if getattr(config, "_attn_implementation", None) == "sdpa"]


def _runs_on_cpu_in(model: nn.Module, dtypes: tuple[torch.dtype, ...]) -> bool:
    parameter = next(model.parameters(), None)
    return parameter is not None and parameter.device.type == "cpu" and parameter.dtype in dtypes


@contextmanager
def grouped_query_decode_attention(model: nn.Module, enabled: bool = True) -> Iterator[int]:
    """Give ``model``'s one-token attention steps of grouped queries the faster layout until the context closes (a
    bfloat16 or float32 model on a CPU).

    Yields:
        The number of configs switched (0 when disabled, when the model is not bfloat16 or float32 on a CPU, or when
        no attention in it is ``sdpa``).
    """
    configs = _sdpa_configs(model) if enabled and _runs_on_cpu_in(model, DTYPES) else []
    try:
        for config in configs:
            config._attn_implementation_internal = IMPLEMENTATION
        yield len(configs)
    finally:
        for config in configs:
            config._attn_implementation_internal = "sdpa"
