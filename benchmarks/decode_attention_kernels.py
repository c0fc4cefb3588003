"""One decoding step's attention in the embedded model's shapes, by the way torch's CPU kernel is called.

    python benchmarks/decode_attention_kernels.py [--rows 16 64 128] [--lengths 64 192] [--repeats 30] [--threads 2]

SmolLM2-135M-Instruct has 9 query heads sharing 3 key/value heads (grouped-query attention) of 64 dimensions in each
of its 30 layers. A one-token step reaches ``torch.nn.functional.scaled_dot_product_attention`` in one of two layouts:

* **enable_gqa**: the query as ``[rows, 9, 1, 64]`` with ``enable_gqa=True``, which is how transformers' sdpa
  attention calls it when the step has no mask (ranked `generate` passes none when its prompts need no padding);
* **packed**: the query heads of each key/value head packed as its queries, ``[rows, 3, 3, 64]``, which is how
  transformers calls it when the step has a mask (``pack_gqa``), and how `grouped_query_decode_attention` runs a
  bfloat16 model's mask-free steps (it gives a float32 model's masked steps ``enable_gqa`` instead);

and, for bfloat16, **float32 copies** (the query, keys and values converted, run packed, converted back; the previous
`decode_attention` path). Each runs without a mask and with one (every third row's prompt left-padded by 8 tokens, as
a padded batch has). For each dtype, mask, number of rows and cache length (random query, keys and values; the shapes
are read from the embedded model's config) it prints milliseconds a step (30 layers' attention calls) and the largest
absolute difference to attention computed in float64.

Writes ``benchmarks/results/samplers/<output-name>.{md,json}`` (default ``decode_attention_kernels``). Run with
``ATEN_CPU_CAPABILITY=avx2`` it holds torch to its AVX2 kernels, a stand-in for an AVX2-only CPU.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable
from functools import partial

import torch
from _common import milliseconds, write_results
from decoding_loop import RESULTS, cpu_name
from transformers import AutoConfig

from hf_language_ranker.embedded import EMBEDDED_GGUF, embedded_model_folder, native_bf16_cpu_capabilities
from hf_language_ranker.features import dtype_name

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
sdpa = torch.nn.functional.scaled_dot_product_attention


def enable_gqa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return sdpa(query, key, value, attn_mask=mask, enable_gqa=True)


def packed(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    rows, heads, _, dim = query.shape
    packed_query = query.reshape(rows, key.shape[1], heads // key.shape[1], dim)
    return sdpa(packed_query, key, value, attn_mask=mask).reshape(rows, heads, 1, dim)


def float32_copies(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    return packed(query.float(), key.float(), value.float(), mask).to(query.dtype)


def exact(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    groups = query.shape[1] // key.shape[1]
    keys, values = (tensor.double().repeat_interleave(groups, dim=1) for tensor in (key, value))
    scores = query.double() @ keys.transpose(-1, -2) * query.shape[-1] ** -0.5
    return (scores if mask is None else scores.masked_fill(~mask, float("-inf"))).softmax(-1) @ values


def left_padding(rows: int, length: int) -> torch.Tensor:
    """A step's boolean mask ``[rows, 1, 1, length]`` where every third row's prompt was left-padded by 8 tokens."""
    mask = torch.ones(rows, 1, 1, length, dtype=torch.bool)
    mask[::3, ..., :8] = False
    return mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[16, 64, 128])
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 192])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output-name", default="decode_attention_kernels")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = AutoConfig.from_pretrained(embedded_model_folder(), gguf_file=EMBEDDED_GGUF)
    heads, key_value_heads = config.num_attention_heads, config.num_key_value_heads
    dim, layers = config.hidden_size // heads, config.num_hidden_layers
    ways: dict[torch.dtype, dict[str, Attention]] = {
        torch.float32: {"enable_gqa": enable_gqa, "packed": packed},
        torch.bfloat16: {"enable_gqa": enable_gqa, "packed": packed, "float32 copies": float32_copies},
    }
    results = []
    torch.manual_seed(0)
    for (dtype, by_name), masked, rows, length in itertools.product(
        ways.items(), (False, True), args.rows, args.lengths
    ):
        query = torch.randn(rows, heads, 1, dim, dtype=dtype) * 2
        key, value = (torch.randn(rows, key_value_heads, length, dim, dtype=dtype) for _ in range(2))
        mask = left_padding(rows, length) if masked else None
        reference = exact(query, key, value, mask)
        for name, attention in by_name.items():
            error = (attention(query, key, value, mask).double() - reference).abs().max().item()
            step = layers * milliseconds(partial(attention, query, key, value, mask), args.repeats, warmups=3)
            result = {"dtype": dtype_name(dtype), "mask": masked, "rows": rows, "length": length}
            results.append({**result, "way": name, "ms_per_step": step, "max_error": error})
            print(results[-1], flush=True)

    capabilities = native_bf16_cpu_capabilities()
    lines = [
        "# One decoding step's attention in the embedded model's shapes, by the way the CPU kernel is called",
        "",
        f"{cpu_name()}, {args.threads} threads; native bfloat16: {', '.join(capabilities) or 'none'}; torch's CPU "
        f"kernels: {torch.backends.cpu.get_cpu_capability()}. "
        f"{heads} query heads over {key_value_heads} key/value heads of {dim} dimensions, {layers} layers; "
        f"milliseconds a step (every layer's attention call, {args.repeats} timed repeats) and, in brackets, the "
        "largest absolute difference to attention in float64. With a mask, every third row was left-padded by 8 "
        "tokens.",
        "",
        "| dtype | mask | rows | cache length | " + " | ".join(ways[torch.bfloat16]) + " |",
        "|---|---|---:|---:|" + "---:|" * len(ways[torch.bfloat16]),
    ]
    found = {
        (result["dtype"], result["mask"], result["rows"], result["length"], result["way"]): result for result in results
    }
    for dtype, masked, rows, length in itertools.product(ways, (False, True), args.rows, args.lengths):
        name = dtype_name(dtype)
        cells = [
            f"{result['ms_per_step']:.1f} ({result['max_error']:.1e})"
            if (result := found.get((name, masked, rows, length, way)))
            else "—"
            for way in ways[torch.bfloat16]
        ]
        lines.append(f"| {name} | {'padded' if masked else 'none'} | {rows} | {length} | " + " | ".join(cells) + " |")
    lines += ["", "`python benchmarks/decode_attention_kernels.py " + " ".join(sys.argv[1:]) + "`"]
    payload = {
        "cpu": cpu_name(),
        "bf16_capabilities": list(capabilities),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": args.threads,
        "results": results,
    }
    write_results(RESULTS, args.output_name, "\n".join(lines) + "\n", payload)


if __name__ == "__main__":
    main()
