"""The embedded model's linear layers in int8 and int4 against the packed float32 and bfloat16 layers of today.

    python benchmarks/quantized_linears.py [--rows 16] [--repeats 20] [--threads 2]

Issue 30 names int8 weights as a way to stream fewer bytes per decoding step (llama.cpp streams 4-bit ones). torch
offers int8 and int4 CPU kernels that need no compile step. This script measures them on the embedded
SmolLM2-135M-Instruct's own weights and its own hidden states (the inputs every linear layer receives at the last
token of ``--rows`` arithmetic prompts, one forward pass in float32):

* **packed float32 / bfloat16**: today's path (`prepacked_linears`, oneDNN on weights packed once);
* **int8 weight-only**: ``torch.ops.aten._weight_int8pack_mm``, int8 weights with a scale per output channel,
  activations in bfloat16 and in float32;
* **int4 weight-only**: ``torch.ops.aten._weight_int4pack_mm_for_cpu``, 4-bit weights with a scale and an offset per
  32 inputs (llama.cpp's Q4_1 blocks), activations in bfloat16;
* **int8 dynamic**: ``torch.ao.quantization.quantize_dynamic`` (fbgemm/x86), int8 weights, and activations
  quantized to int8 at every call with one scale for the whole batch.

As a floor, it also times reading every weight once in float32 and in bfloat16 (a maximum over each weight's bytes,
no arithmetic): what a step that only streamed the weights from memory would take.

For each it prints the milliseconds every linear layer of the model takes once (one decoding step's matrix products
at ``--rows`` rows), the relative error of the layers' outputs against float64 products (median and largest over
layers of ``||y - y_exact|| / ||y_exact||``), and how much a row's output depends on the rows beside it: the largest
relative difference, over layers, between a row computed alone and the same row computed in the batch. Ranked
`generate` drops finished rows and `rank_candidates` batches candidates differently, so a kernel whose row depends on
its neighbours breaks feature parity however fast it is.

Writes ``benchmarks/results/samplers/quantized_linears.{md,json}``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable

import torch
from _common import milliseconds, write_results
from decoding_loop import RESULTS, cpu_name

from hf_language_ranker.embedded import load_model_and_tokenizer, native_bf16_cpu_capabilities
from hf_language_ranker.features import dtype_name
from hf_language_ranker.prepacked_linears import packable_dtypes, packable_linears
from hf_language_ranker.prompts import encode_prompts, resolve_chat_template
from hf_language_ranker.tasks import load_task

Kernel = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def layer_inputs(model: torch.nn.Module, tokenizer: object, rows: int) -> list[tuple[torch.nn.Linear, torch.Tensor]]:
    """Every linear layer with the input it receives at the last token of ``rows`` arithmetic prompts."""
    examples = load_task("arithmetic", size=rows, seed=3)
    inputs = encode_prompts(
        tokenizer, [example["prompt"] for example in examples], resolve_chat_template(tokenizer, None)
    )
    captured: dict[torch.nn.Linear, torch.Tensor] = {}
    hooks = [
        layer.register_forward_pre_hook(lambda layer, args: captured.__setitem__(layer, args[0][:, -1].clone()))
        for layer in packable_linears(model)
    ]
    try:
        model(**inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return list(captured.items())


def packed(layer: torch.nn.Linear, dtype: torch.dtype, rows: int) -> Kernel:
    weight = torch.ops.mkldnn._reorder_linear_weight(layer.weight.detach().to(dtype), rows)
    return lambda x: torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")


def int8_weight_only(layer: torch.nn.Linear, dtype: torch.dtype) -> Kernel:
    weight = layer.weight.detach().float()
    scales = weight.abs().amax(dim=1).clamp(min=1e-12) / 127
    quantized = (weight / scales[:, None]).round().clamp(-128, 127).to(torch.int8)
    scales = scales.to(dtype)
    return lambda x: torch.ops.aten._weight_int8pack_mm(x, quantized, scales)


def int4_weight_only(layer: torch.nn.Linear, group_size: int = 32) -> Kernel:
    """4-bit weights with a scale and an offset per ``group_size`` inputs (llama.cpp's Q4_1 layout, 32 per block)."""
    weight = layer.weight.detach().float()
    groups = weight.reshape(weight.shape[0], -1, group_size)
    low, high = groups.amin(dim=-1), groups.amax(dim=-1)
    scales = (high - low).clamp(min=1e-12) / 15
    codes = ((groups - low[..., None]) / scales[..., None]).round().clamp(0, 15).to(torch.int32)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.reshape(weight.shape), 1)
    # torch's kernel computes (code - 8) * scale + zero per group
    scales_and_zeros = torch.stack([scales, low + 8 * scales], dim=-1).transpose(0, 1).contiguous().bfloat16()
    return lambda x: torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, group_size, scales_and_zeros)


def int8_dynamic(layer: torch.nn.Linear) -> Kernel:
    float_layer = torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    float_layer.load_state_dict({name: tensor.float() for name, tensor in layer.state_dict().items()})
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(float_layer), {torch.nn.Linear}, torch.qint8)


def relative(difference: torch.Tensor, reference: torch.Tensor) -> float:
    return (difference.float().norm() / reference.float().norm().clamp(min=1e-12)).item()


@torch.no_grad()
def measure(
    name: str, kernels: list[Kernel], inputs: list[torch.Tensor], references: list[torch.Tensor], repeats: int
) -> dict[str, float | str]:
    """One kernel family's step time, error against the float64 ``references`` and dependence of a row on its
    neighbours."""

    def step() -> list[torch.Tensor]:
        return [kernel(x) for kernel, x in zip(kernels, inputs)]

    step_milliseconds = milliseconds(step, repeats)
    outputs = step()
    errors = sorted(relative(y.float() - reference, reference) for y, reference in zip(outputs, references))
    neighbours = max(
        relative(kernel(x[:1]).float() - y[:1].float(), y[:1]) for kernel, x, y in zip(kernels, inputs, outputs)
    )
    return {
        "kernel": name,
        "ms_per_step": step_milliseconds,
        "median_error": errors[len(errors) // 2],
        "max_error": errors[-1],
        "row_alone_vs_in_batch": neighbours,
    }


def reading_milliseconds(layers: list[torch.nn.Linear], dtype: torch.dtype, repeats: int) -> float:
    """Milliseconds to read every layer's weight once, in ``dtype``, without arithmetic (a step's memory floor)."""
    words = [layer.weight.detach().to(dtype).contiguous().view(torch.int32) for layer in layers]
    return milliseconds(lambda: [word.max() for word in words], repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model_and_tokenizer(None, dtype="float32")
    captured = layer_inputs(model, tokenizer, args.rows)
    layers = [layer for layer, _ in captured]
    inputs = [x for _, x in captured]
    references = [x.double() @ layer.weight.detach().double().T for layer, x in captured]

    bfloat16 = torch.bfloat16 in packable_dtypes()  # as `prepacked_linears` decides
    families: dict[str, tuple[torch.dtype, Callable[[torch.nn.Linear], Kernel]]] = {
        "packed float32 (today's float32 path)": (torch.float32, lambda layer: packed(layer, torch.float32, args.rows)),
        "packed bfloat16 (today's bfloat16 path)": (
            torch.bfloat16,
            lambda layer: packed(layer, torch.bfloat16, args.rows),
        ),
        "int8 weight-only, bfloat16 activations": (
            torch.bfloat16,
            lambda layer: int8_weight_only(layer, torch.bfloat16),
        ),
        "int8 weight-only, float32 activations": (torch.float32, lambda layer: int8_weight_only(layer, torch.float32)),
        "int4 weight-only (groups of 32), bfloat16 activations": (torch.bfloat16, int4_weight_only),
        "int8 dynamic (fbgemm), float32 activations": (torch.float32, int8_dynamic),
    }
    results = [
        measure(name, [build(layer) for layer in layers], [x.to(dtype) for x in inputs], references, args.repeats)
        for name, (dtype, build) in families.items()
        if bfloat16 or "packed bfloat16" not in name
    ]

    floors = {dtype: reading_milliseconds(layers, dtype, args.repeats) for dtype in (torch.float32, torch.bfloat16)}
    parameters = sum(layer.weight.numel() for layer in layers)
    capabilities = native_bf16_cpu_capabilities()
    lines = [
        "# The embedded model's linear layers in int8 and int4 against today's packed layers",
        "",
        f"{cpu_name()}, {args.threads} threads; native bfloat16: {', '.join(capabilities) or 'none'}. Embedded "
        f"SmolLM2-135M-Instruct's {len(layers)} linear layers, its own weights, fed the hidden states of {args.rows} "
        f"arithmetic prompts' last tokens; {args.repeats} timed repeats. Errors are "
        "`||y - y_exact|| / ||y_exact||` per layer (`y_exact`: the product in float64); the last column is the "
        "largest, over layers, of that difference between a row computed alone and the same row in the batch.",
        "",
        "| kernel | ms per step (every linear layer once) | median error | largest error | row alone vs in batch |",
        "|---|---:|---:|---:|---:|",
    ]
    for result in results:
        lines.append(
            f"| {result['kernel']} | {result['ms_per_step']:.1f} | {result['median_error']:.1e} | "
            f"{result['max_error']:.1e} | {result['row_alone_vs_in_batch']:.1e} |"
        )
    lines += [
        "",
        "Reading every weight once, no arithmetic (the floor of a step that streams them): "
        + ", ".join(
            f"{dtype_name(dtype)} {parameters * dtype.itemsize / 1e6:.0f} MB in {ms:.1f} ms"
            for dtype, ms in floors.items()
        )
        + ".",
        "",
        "`python benchmarks/quantized_linears.py " + " ".join(sys.argv[1:]) + "`",
    ]
    payload = {
        "cpu": cpu_name(),
        "bf16_capabilities": list(capabilities),
        "threads": args.threads,
        "rows": args.rows,
        "results": results,
        "weight_reading_ms": {dtype_name(dtype): ms for dtype, ms in floors.items()},
    }
    write_results(RESULTS, "quantized_linears", "\n".join(lines) + "\n", payload)


if __name__ == "__main__":
    main()
