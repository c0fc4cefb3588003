"""A bfloat16 CPU model's one-token attention steps run with the query heads packed per key/value head.

In a model with grouped-query attention (several query heads share a key/value head: SmolLM2, Llama, Qwen2), a
decoding step without an attention mask reaches torch's ``scaled_dot_product_attention`` with ``enable_gqa=True``,
which is how transformers' ``sdpa`` attention calls it whenever there is no mask. On a CPU, torch's bfloat16 flash
kernel is several times slower that way than on the same step with the query heads of each key/value head packed as
that head's queries, the layout transformers itself uses for a one-token step *with* a mask (``pack_gqa``): about
5x in the embedded model's shapes (`benchmarks/decode_attention_kernels.py`; `benchmarks/decode_attention.py`
measures ranked `generate`). Ranked `generate` drops the mask whenever its prompts need no padding, so its steps took
the slow path.

`packed_query_decode_attention` switches, until the context closes, the model's ``sdpa`` attention to
`sdpa_attention_packed_query`, which runs such mask-free one-token steps on the packed layout. It is the same kernel
in the same dtype, so the result is as precise as before; it is not always the same bit for bit (the kernel sees a
query of another length), so sampled candidates can differ as they would between two CPUs. Everything else goes to
transformers' sdpa attention unchanged: the prefill, steps with a mask, models without grouped queries, and every
model that is not bfloat16 on a CPU (torch's float32 kernel is the faster with ``enable_gqa``) or whose attention is
not ``sdpa``.
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

#: the attention implementation `packed_query_decode_attention` switches ``sdpa`` models to
IMPLEMENTATION = "sdpa_decode_packed_query"


def sdpa_attention_packed_query(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' sdpa attention, except that a mask-free one-token step of grouped queries runs on the query
    heads packed per key/value head (``[rows, key/value heads, group, dim]``) instead of with ``enable_gqa``."""
    groups = getattr(module, "num_key_value_groups", 1)
    plain_step = kwargs.get("softcap") is None and kwargs.get("position_bias") is None
    if query.shape[2] != 1 or attention_mask is not None or groups == 1 or not plain_step:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    rows, heads, _, dim = query.shape
    packed = query.reshape(rows, heads // groups, groups, dim)
    output = nn.functional.scaled_dot_product_attention(packed, key, value, dropout_p=dropout, scale=scaling)
    return output.reshape(rows, 1, heads, value.shape[-1]), None  # transformers' layout: [rows, tokens, heads, dim]


AttentionInterface.register(IMPLEMENTATION, sdpa_attention_packed_query)
AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)


def _sdpa_configs(model: nn.Module) -> list[Any]:
    """The distinct configs of ``model`` and its submodules whose attention implementation is ``sdpa``."""
    configs = {id(config): config for module in model.modules() if (config := getattr(module, "config", None))}
    return [config for config in configs.values() if getattr(config, "_attn_implementation", None) == "sdpa"]


def _runs_in_bfloat16_on_cpu(model: nn.Module) -> bool:
    parameter = next(model.parameters(), None)
    return parameter is not None and parameter.device.type == "cpu" and parameter.dtype == torch.bfloat16


@contextmanager
def packed_query_decode_attention(model: nn.Module, enabled: bool = True) -> Iterator[int]:
    """Run ``model``'s mask-free one-token attention steps on packed query heads until the context closes (a
    bfloat16 model on a CPU).

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
