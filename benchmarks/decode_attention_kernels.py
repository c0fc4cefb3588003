"""One decoding step's attention in the embedded model's shapes, by the way torch's CPU kernel is called.

    python benchmarks/decode_attention_kernels.py [--rows 16 64 128] [--lengths 64 192] [--repeats 30] [--threads 2]

SmolLM2-135M-Instruct has 9 query heads sharing 3 key/value heads (grouped-query attention) of 64 dimensions in each
of its 30 layers. A one-token step reaches ``torch.nn.functional.scaled_dot_product_attention`` in one of two layouts:

* **enable_gqa**: the query as ``[rows, 9, 1, 64]`` with ``enable_gqa=True``, which is how transformers' sdpa
  attention calls it when the step has no mask (ranked `generate` passes none when its prompts need no padding);
* **packed**: the query heads of each key/value head packed as its queries, ``[rows, 3, 3, 64]``, which is how
  transformers calls it when the step has a mask (``pack_gqa``), and how `packed_query_decode_attention` runs the
  mask-free steps of a bfloat16 model;

and, for bfloat16, **float32 copies** (the query, keys and values converted, run packed, converted back; the previous
`decode_attention` path). For each dtype, number of rows and cache length (random query, keys and values; the shapes
are read from the embedded model's config) it prints milliseconds a step (30 layers' attention calls) and the largest
absolute difference to attention computed in float64.

Writes ``benchmarks/results/samplers/decode_attention_kernels.{md,json}``.
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

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
sdpa = torch.nn.functional.scaled_dot_product_attention


def enable_gqa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return sdpa(query, key, value, enable_gqa=True)


def packed(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    rows, heads, _, dim = query.shape
    return sdpa(query.reshape(rows, key.shape[1], heads // key.shape[1], dim), key, value).reshape(rows, heads, 1, dim)


def float32_copies(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return packed(query.float(), key.float(), value.float()).to(query.dtype)


def exact(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    groups = query.shape[1] // key.shape[1]
    keys, values = (tensor.double().repeat_interleave(groups, dim=1) for tensor in (key, value))
    weights = (query.double() @ keys.transpose(-1, -2) * query.shape[-1] ** -0.5).softmax(-1)
    return weights @ values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[16, 64, 128])
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 192])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
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
    for dtype, by_name in ways.items():
        for rows in args.rows:
            for length in args.lengths:
                query = torch.randn(rows, heads, 1, dim, dtype=dtype) * 2
                key, value = (torch.randn(rows, key_value_heads, length, dim, dtype=dtype) for _ in range(2))
                reference = exact(query, key, value)
                for name, attention in by_name.items():
                    error = (attention(query, key, value).double() - reference).abs().max().item()
                    step = layers * milliseconds(partial(attention, query, key, value), args.repeats, warmups=3)
                    results.append(
                        {
                            "dtype": str(dtype).removeprefix("torch."),
                            "rows": rows,
                            "length": length,
                            "way": name,
                            "ms_per_step": step,
                            "max_error": error,
                        }
                    )
                    print(results[-1], flush=True)

    capabilities = native_bf16_cpu_capabilities()
    lines = [
        "# One decoding step's attention in the embedded model's shapes, by the way the CPU kernel is called",
        "",
        f"{cpu_name()}, {args.threads} threads; native bfloat16: {', '.join(capabilities) or 'none'}. "
        f"{heads} query heads over {key_value_heads} key/value heads of {dim} dimensions, {layers} layers; "
        f"milliseconds a step (every layer's attention call, {args.repeats} timed repeats) and, in brackets, the "
        "largest absolute difference to attention in float64.",
        "",
        "| dtype | rows | cache length | " + " | ".join(ways[torch.bfloat16]) + " |",
        "|---|---:|---:|" + "---:|" * len(ways[torch.bfloat16]),
    ]
    found = {(result["dtype"], result["rows"], result["length"], result["way"]): result for result in results}
    for dtype, rows, length in itertools.product(ways, args.rows, args.lengths):
        name = str(dtype).removeprefix("torch.")
        cells = [
            f"{result['ms_per_step']:.1f} ({result['max_error']:.1e})"
            if (result := found.get((name, rows, length, way)))
            else "—"
            for way in ways[torch.bfloat16]
        ]
        lines.append(f"| {name} | {rows} | {length} | " + " | ".join(cells) + " |")
    lines += ["", "`python benchmarks/decode_attention_kernels.py " + " ".join(sys.argv[1:]) + "`"]
    payload = {"cpu": cpu_name(), "bf16_capabilities": list(capabilities), "threads": args.threads, "results": results}
    write_results(RESULTS, "decode_attention_kernels", "\n".join(lines) + "\n", payload)


if __name__ == "__main__":
    main()
