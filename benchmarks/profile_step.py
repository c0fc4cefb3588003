"""Where a decoding step of ranked `generate` spends its time on a CPU: `torch.profiler` over ranked generate.

    python benchmarks/profile_step.py [--dtypes float32 bfloat16] [--attention sdpa eager] [--num-candidates 16]
                                      [--max-new-tokens 64] [--threads 2] [--output-name profile]

On the embedded SmolLM2-135M-Instruct with the released mixture ranker, one arithmetic prompt: one warm-up call,
then one profiled call per dtype and attention implementation (transformers' ``sdpa``, the default, or
``eager``), every candidate forced to run the whole token budget (``min_new_tokens``), so each
step has N rows. It reports the wall time per decoding step, the top operators by self CPU time as a share of the
wall time, and the share spent outside every operator (Python, dispatch, transformers' loop bookkeeping, the
ranker's hooks' Python side). bfloat16 is profiled only where the CPU computes it natively (AMX-BF16 or
AVX512-BF16). Writes ``benchmarks/results/samplers/<output-name>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from hf_language_ranker import LanguageRanker
from hf_language_ranker.embedded import load_model_and_tokenizer, native_bf16_cpu_capabilities
from hf_language_ranker.prompts import encode_prompts, resolve_chat_template
from hf_language_ranker.tasks import load_task

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "samplers"
RANKER = "smollm2-135m-instruct-mixture"
TOP = 15


def ranked_generate(model, tokenizer, ranker, inputs, args) -> None:
    torch.manual_seed(0)
    model.generate(
        **inputs,
        ranker=ranker,
        num_candidates=args.num_candidates,
        max_new_tokens=args.max_new_tokens,
        min_new_tokens=args.max_new_tokens,
        tokenizer=tokenizer,
    )


def profile_dtype(dtype: str, attention: str, args: argparse.Namespace) -> dict:
    model, tokenizer = load_model_and_tokenizer(None, dtype=dtype)
    model.set_attn_implementation(attention)
    ranker = LanguageRanker.from_pretrained(RANKER)
    prompt = load_task("arithmetic", size=1, seed=3)[0]["prompt"]
    use_template = resolve_chat_template(tokenizer, None)
    inputs = encode_prompts(tokenizer, [prompt], use_template)
    ranked_generate(model, tokenizer, ranker, inputs, args)  # warm-up
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        ranked_generate(model, tokenizer, ranker, inputs, args)
    wall_ms = (time.perf_counter() - start) * 1e3
    averages = profiler.key_averages()
    inside_ms = sum(event.self_cpu_time_total for event in averages) / 1e3
    top = sorted(averages, key=lambda event: event.self_cpu_time_total, reverse=True)[:TOP]
    return {
        "dtype": dtype,
        "attention": attention,
        "wall_ms": wall_ms,
        "ms_per_step": wall_ms / args.max_new_tokens,
        "outside_operators_share": max(0.0, 1 - inside_ms / wall_ms),
        "top_operators": [
            {
                "name": event.key,
                "calls": event.count,
                "self_ms": event.self_cpu_time_total / 1e3,
                "share_of_wall": event.self_cpu_time_total / 1e3 / wall_ms,
            }
            for event in top
        ],
    }


def markdown(results: list[dict], args: argparse.Namespace, command: str) -> str:
    lines = [
        f"# One decoding step of ranked `generate`, profiled ({time.strftime('%Y-%m-%d')})",
        "",
        f"`{command}` on {torch.cpu.get_capabilities().get('cpu_name', 'an unnamed CPU')} ({args.threads} threads; "
        "native bfloat16: "
        f"{', '.join(native_bf16_cpu_capabilities()) or 'no'}); embedded SmolLM2-135M-Instruct, {RANKER}, one "
        f"prompt, N={args.num_candidates}, {args.max_new_tokens} new tokens (all candidates run the whole budget). "
        "The profiler adds its own overhead, so shares are more telling than absolute times.",
        "",
    ]
    for result in results:
        lines += [
            f"## {result['dtype']}, {result['attention']} attention: {result['ms_per_step']:.1f} ms per step "
            f"({result['wall_ms'] / 1e3:.2f} s for the call), {result['outside_operators_share']:.0%} of the wall "
            "time outside every operator",
            "",
            "| operator | calls | self ms | share of wall |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| `{op['name']}` | {op['calls']} | {op['self_ms']:.0f} | {op['share_of_wall']:.1%} |"
            for op in result["top_operators"]
        ]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--attention", nargs="+", default=["sdpa"], choices=["sdpa", "eager"])
    parser.add_argument("--num-candidates", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output-name", default="profile")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtypes = [dtype for dtype in args.dtypes if dtype == "float32" or native_bf16_cpu_capabilities()]
    skipped = sorted(set(args.dtypes) - set(dtypes))
    if skipped:
        print(f"Skipped {skipped}: this CPU does not compute bfloat16 natively.")
    results = [profile_dtype(dtype, attention, args) for dtype in dtypes for attention in args.attention]
    command = "python benchmarks/profile_step.py " + " ".join(
        f"--{name.replace('_', '-')} {' '.join(map(str, value)) if isinstance(value, list) else value}"
        for name, value in vars(args).items()
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.output_name}.md").write_text(markdown(results, args, command))
    (RESULTS / f"{args.output_name}.json").write_text(json.dumps({"command": command, "results": results}, indent=2))
    print(markdown(results, args, command))


if __name__ == "__main__":
    main()
