"""Ranked `generate` with the model's linear layers on weights packed for oneDNN, against torch's own kernels.

    python benchmarks/prepacked_linears.py [--prompts 4] [--rounds 2] [--dtypes float32 bfloat16] [--threads 2]

`prepacked_linears` (issue 30) packs each ``nn.Linear`` weight once per call into oneDNN's blocked layout instead of
letting torch run float32 layers through MKL and reorder bfloat16 weights at every call. For each dtype this loads
the embedded SmolLM2-135M-Instruct and the released mixture ranker in one process and prints:

* the time of every linear layer of the model once (one decoding step's matrix products) for 1, 8 and 16 rows, with
  torch's kernels and packed, and the time to pack all of them;
* ranked `generate` (N=16, up to 64 new tokens, temperature 0.8, top-k 50, arithmetic prompts, one call per prompt,
  after one warm-up call each way) with ``prepack_weights=True`` and ``False``, alternately, ``--rounds`` times:
  seconds per prompt and the speed-up, both measured in this run;
* whether the answers change: with the same seed per prompt, how many candidates are token for token the same, how
  many picks are the same, and the largest difference of a candidate's score where a prompt's candidates are the
  same both ways;
* `rank_candidates` (the second pass that ranks answers sampled elsewhere) on the candidates ranked `generate` drew
  with torch's kernels, the same way: seconds per prompt both ways, same picks, largest score difference.

Writes ``benchmarks/results/samplers/prepacked_linears.{md,json}``.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import torch
from _common import milliseconds, write_results
from decoding_loop import CANDIDATES, MAX_NEW_TOKENS, RESULTS, cpu_name, ranked_generate

from hf_language_ranker import LanguageRanker, rank_candidates
from hf_language_ranker.embedded import load_model_and_tokenizer, native_bf16_cpu_capabilities
from hf_language_ranker.prepacked_linears import packable_linears, prepacked_linears
from hf_language_ranker.prompts import encode_prompts, resolve_chat_template
from hf_language_ranker.tasks import load_task

ROWS = (1, 8, 16)


@torch.no_grad()
def time_linear_layers(model: torch.nn.Module) -> dict[str, float]:
    """Milliseconds for every linear layer once, per row count, with torch's kernels and packed; packing time."""
    layers = packable_linears(model)
    timings: dict[str, float] = {}
    for rows in ROWS:
        inputs = [torch.randn(rows, layer.in_features, dtype=layer.weight.dtype) for layer in layers]

        def every_layer(inputs: list[torch.Tensor] = inputs) -> list[torch.Tensor]:
            return [layer(x) for layer, x in zip(layers, inputs)]

        timings[f"torch_{rows}"] = milliseconds(every_layer)
        with prepacked_linears(model, rows):
            timings[f"packed_{rows}"] = milliseconds(every_layer)
    started = time.perf_counter()
    with prepacked_linears(model, 16):
        timings["pack_all_ms"] = (time.perf_counter() - started) * 1e3
    return timings


def time_second_pass(
    model: Any, tokenizer: Any, ranker: LanguageRanker, encoded: list[Any], outputs: list[Any], rounds: int
) -> dict[str, Any]:
    """`rank_candidates` on ranked `generate`'s candidates, packed and with torch's kernels. The generated ids go in
    whole: `rank_candidates` cuts each after its first EOS, dropping the padding."""
    prompts = [inputs["input_ids"][0].tolist() for inputs in encoded]
    candidates = [
        output.candidate_sequences[0, :, inputs["input_ids"].shape[1] :].tolist()
        for inputs, output in zip(encoded, outputs)
    ]
    seconds: dict[bool, list[float]] = {True: [], False: []}
    ranked: dict[bool, Any] = {}
    for _ in range(rounds):
        for prepack in (False, True):
            started = time.perf_counter()
            ranked[prepack] = rank_candidates(model, tokenizer, prompts, candidates, ranker, prepack_weights=prepack)
            seconds[prepack].append((time.perf_counter() - started) / len(prompts))
    differences = [(a - b).abs().max() for a, b in zip(ranked[True].scores, ranked[False].scores)]
    return {
        "s_per_prompt": {"packed": seconds[True], "torch": seconds[False]},
        "speedups": [old / new for old, new in zip(seconds[False], seconds[True])],
        "same_picks": int((ranked[True].best_indices == ranked[False].best_indices).sum()),
        "max_score_difference": float(max(differences)),
    }


def measure(dtype: str, prompts: int, rounds: int) -> dict[str, Any]:
    model, tokenizer = load_model_and_tokenizer(None, dtype=dtype)
    ranker = LanguageRanker.from_pretrained("smollm2-135m-instruct-mixture")
    use_template = resolve_chat_template(tokenizer, None)
    examples = load_task("arithmetic", size=1 + prompts, seed=3)
    encoded = [encode_prompts(tokenizer, [example["prompt"]], use_template) for example in examples]

    def generate(index: int, prepack: bool) -> Any:
        torch.manual_seed(index)
        return ranked_generate(model, tokenizer, ranker, encoded[index], prepack_weights=prepack)

    layers = time_linear_layers(model)
    for prepack in (True, False):
        generate(0, prepack)  # warm-up
    seconds: dict[bool, list[float]] = {True: [], False: []}
    outputs: dict[bool, list[Any]] = {True: [], False: []}
    for _ in range(rounds):
        for prepack in (False, True):
            started = time.perf_counter()
            outputs[prepack] = [generate(index, prepack) for index in range(1, 1 + prompts)]
            seconds[prepack].append((time.perf_counter() - started) / prompts)
    same_candidates = same_picks = 0
    score_differences = []
    for packed, plain in zip(outputs[True], outputs[False]):
        rows_equal = (packed.candidate_sequences == plain.candidate_sequences).all(-1)
        same_candidates += int(rows_equal.sum())
        same_picks += int(torch.equal(packed.sequences, plain.sequences))
        if rows_equal.all():
            score_differences.append(float((packed.candidate_scores - plain.candidate_scores).abs().max()))
    second_pass = time_second_pass(model, tokenizer, ranker, encoded[1:], outputs[False], rounds)
    return {
        "dtype": dtype,
        "linear_layers_ms": layers,
        "second_pass": second_pass,
        "generate_s_per_prompt": {"packed": seconds[True], "torch": seconds[False]},
        "speedups": [old / new for old, new in zip(seconds[False], seconds[True])],
        "same_candidates": same_candidates,
        "candidates": prompts * CANDIDATES,
        "same_picks": same_picks,
        "prompts": prompts,
        "max_score_difference": max(score_differences) if score_differences else None,
        "prompts_with_same_candidates": len(score_differences),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = [measure(dtype, args.prompts, args.rounds) for dtype in args.dtypes]

    capabilities = native_bf16_cpu_capabilities()
    lines = [
        "# Linear layers on weights packed for oneDNN against torch's kernels",
        "",
        f"{cpu_name()}, {args.threads} threads; native bfloat16: {', '.join(capabilities) or 'none'}. Embedded "
        f"SmolLM2-135M-Instruct, released mixture ranker; ranked `generate` on {args.prompts} arithmetic prompts, "
        f"N={CANDIDATES}, up to {MAX_NEW_TOKENS} tokens, temperature 0.8, top-k 50, {args.rounds} alternating rounds.",
        "",
        "Every linear layer of the model once (one decoding step's matrix products), milliseconds:",
        "",
        "| dtype | " + " | ".join(f"rows={rows}: torch → packed" for rows in ROWS) + " | packing all |",
        "|---|" + "---:|" * (len(ROWS) + 1),
    ]
    for result in results:
        layers = result["linear_layers_ms"]
        cells = [f"{layers[f'torch_{rows}']:.1f} → {layers[f'packed_{rows}']:.1f}" for rows in ROWS]
        lines.append(f"| {result['dtype']} | " + " | ".join(cells) + f" | {layers['pack_all_ms']:.0f} ms |")
    lines += [
        "",
        "Ranked `generate`, seconds per prompt (each round: torch's kernels, then packed), and what changes:",
        "",
        "| dtype | torch | packed | speed-up | same candidates | same picks | largest score difference |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for result in results:
        timing = result["generate_s_per_prompt"]
        speedup = sum(result["speedups"]) / len(result["speedups"])
        difference = result["max_score_difference"]
        lines.append(
            f"| {result['dtype']} | {', '.join(f'{s:.2f}' for s in timing['torch'])} | "
            f"{', '.join(f'{s:.2f}' for s in timing['packed'])} | {speedup:.2f}x | "
            f"{result['same_candidates']}/{result['candidates']} | {result['same_picks']}/{result['prompts']} | "
            f"{'n/a' if difference is None else f'{difference:.1e}'} "
            f"({result['prompts_with_same_candidates']} prompts) |"
        )
    lines += [
        "",
        "`rank_candidates` on those candidates (torch's kernels' draws, ids), seconds per prompt:",
        "",
        "| dtype | torch | packed | speed-up | same picks | largest score difference |",
        "|---|---|---|---:|---:|---:|",
    ]
    for result in results:
        second = result["second_pass"]
        timing = second["s_per_prompt"]
        lines.append(
            f"| {result['dtype']} | {', '.join(f'{s:.2f}' for s in timing['torch'])} | "
            f"{', '.join(f'{s:.2f}' for s in timing['packed'])} | "
            f"{sum(second['speedups']) / len(second['speedups']):.2f}x | {second['same_picks']}/{result['prompts']} | "
            f"{second['max_score_difference']:.1e} |"
        )
    lines += ["", "`python benchmarks/prepacked_linears.py " + " ".join(sys.argv[1:]) + "`"]
    payload = {"cpu": cpu_name(), "bf16_capabilities": list(capabilities), "threads": args.threads, "results": results}
    write_results(RESULTS, "prepacked_linears", "\n".join(lines) + "\n", payload)


if __name__ == "__main__":
    main()
