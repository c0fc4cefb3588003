"""Ranked `generate` and `collect_candidates` with the row-dropping decoding loop against a baseline revision.

    python benchmarks/decoding_loop.py [--baseline a55b1ba] [--prompts 4] [--collect-prompts 8]
                                       [--dtypes bfloat16 float32] [--rounds 2] [--threads 2]
                                       [--output-name decoding_loop]

The ranked path samples with `decoding.sample_dropping_finished_rows` (issue 30): finished candidates leave the
batch, and tokens are drawn by inverse transform sampling instead of ``torch.multinomial``. This measures what that
gives, against the library as it was at ``--baseline`` (default a55b1ba, the last revision that sampled with
transformers' own loop), in one run: the baseline's package and its released rankers are extracted with
``git archive``, and each revision runs in its own process, alternately, ``--rounds`` times per dtype (so both see
the same machine load).

Each process loads the embedded SmolLM2-135M-Instruct and the released mixture ranker, then, with the collections'
sampling settings (temperature 0.8, top-k 50, N=16, up to 64 new tokens):

* ranked `generate` on ``--prompts`` arithmetic prompts, one call per prompt, after one warm-up prompt: seconds per
  prompt and per real generated token (EOS included);
* `collect_candidates` of ``--collect-prompts`` other arithmetic prompts in one batch (its default ``batch_size`` 8),
  labels and features included: real tokens per second, the throughput its progress bar shows.

The revisions draw different samples (another random stream), so answers differ in length: compare the seconds per
token as well as per prompt. Last, in the parent process, the two ways of drawing a token are timed alone on the
processed scores of 16 rows over the model's vocabulary (temperature 0.8, top-k 50): ``torch.multinomial`` (what
transformers' loop calls) and `decoding.sample_tokens`. Writes ``benchmarks/results/samplers/<output-name>.{md,json}``.
The checkout measured is named by its commit: later changes, such as `prepacked_linears`, count in its figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import real_tokens, write_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "samplers"
SAMPLING = {"temperature": 0.8, "top_k": 50}
CANDIDATES, MAX_NEW_TOKENS = 16, 64
#: the embedded SmolLM2-135M-Instruct's vocabulary
VOCAB_SIZE = 49_152


def ranked_generate(model: Any, tokenizer: Any, ranker: Any, inputs: Any, **options: Any) -> Any:
    """Ranked `generate` on encoded ``inputs`` with the benchmarks' N, token budget and sampling (dict output)."""
    return model.generate(
        **inputs,
        ranker=ranker,
        num_candidates=CANDIDATES,
        max_new_tokens=MAX_NEW_TOKENS,
        tokenizer=tokenizer,
        return_dict_in_generate=True,
        **SAMPLING,
        **options,
    )


def measure(dtype: str, prompts: int, collect_prompts: int, threads: int) -> dict[str, float]:
    """One revision's figures, in this process (the package on ``sys.path`` is the revision's)."""
    import torch

    from hf_language_ranker import LanguageRanker, collect_candidates
    from hf_language_ranker.embedded import load_model_and_tokenizer
    from hf_language_ranker.layout import eos_token_ids
    from hf_language_ranker.prompts import encode_prompts, resolve_chat_template
    from hf_language_ranker.tasks import load_task, task_verifier

    torch.set_num_threads(threads)
    model, tokenizer = load_model_and_tokenizer(None, dtype=dtype)
    ranker = LanguageRanker.from_pretrained("smollm2-135m-instruct-mixture")
    use_template = resolve_chat_template(tokenizer, None)
    eos_ids = set(eos_token_ids(model, tokenizer))
    examples = load_task("arithmetic", size=1 + prompts + collect_prompts, seed=3)
    seconds, tokens = 0.0, 0
    for index, example in enumerate(examples[: 1 + prompts]):
        inputs = encode_prompts(tokenizer, [example["prompt"]], use_template)
        torch.manual_seed(index)
        started = time.perf_counter()
        output = ranked_generate(model, tokenizer, ranker, inputs)
        if index:  # the first prompt warms up
            seconds += time.perf_counter() - started
            tokens += real_tokens(output.candidate_sequences[:, :, inputs["input_ids"].shape[1] :], eos_ids)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        collected = collect_candidates(
            model,
            tokenizer,
            examples[1 + prompts :],
            task_verifier("arithmetic"),
            output_dir=folder,
            num_candidates=CANDIDATES,
            max_new_tokens=MAX_NEW_TOKENS,
            **SAMPLING,
        )
        collect_seconds = time.perf_counter() - started
        collect_tokens = sum(sum(lengths) for lengths in collected["lengths"])
    return {
        "generate_s_per_prompt": seconds / prompts,
        "generate_tokens_per_prompt": tokens / prompts,
        "generate_ms_per_token": seconds / tokens * 1e3,
        "collect_tokens_per_s": collect_tokens / collect_seconds,
        "collect_tokens": collect_tokens,
    }


def time_token_draws(vocab_size: int, rows: int = 16, repeats: int = 200) -> dict[str, float]:
    """Milliseconds per draw of one token for each of ``rows`` rows: ``torch.multinomial`` and `sample_tokens`."""
    import torch
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper

    from hf_language_ranker.decoding import sample_tokens

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(rows, vocab_size, generator=generator) * 4
    processors = LogitsProcessorList(
        [TemperatureLogitsWarper(SAMPLING["temperature"]), TopKLogitsWarper(SAMPLING["top_k"])]
    )
    scores = processors(torch.zeros(rows, 1, dtype=torch.long), logits)
    draws = {
        "multinomial": lambda: torch.multinomial(torch.softmax(scores, dim=-1), 1),
        "sample_tokens": lambda: sample_tokens(scores),
    }
    timings = {}
    for name, draw in draws.items():
        draw()
        started = time.perf_counter()
        for _ in range(repeats):
            draw()
        timings[name] = (time.perf_counter() - started) / repeats * 1e3
    return timings


def run_revision(tree: Path, dtype: str, args: argparse.Namespace) -> dict[str, float]:
    command = [sys.executable, __file__, "--worker", "--dtypes", dtype, "--prompts", str(args.prompts)]
    command += ["--collect-prompts", str(args.collect_prompts), "--threads", str(args.threads)]
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode:
        raise SystemExit(f"the worker for {tree} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="a55b1ba")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--collect-prompts", type=int, default=8)
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output-name", default="decoding_loop")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.dtypes[0], args.prompts, args.collect_prompts, args.threads)))
        return

    from hf_language_ranker.embedded import native_bf16_cpu_capabilities

    with tempfile.TemporaryDirectory() as folder:
        paths = ["hf_language_ranker", "model_cards"]  # the package, and the released rankers it links to
        archive = subprocess.run(
            ["git", "archive", args.baseline, *paths], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        checkout = f"this checkout ({head.stdout.strip()})"
        trees = {f"baseline {args.baseline}": Path(folder), checkout: ROOT}
        runs = []
        for dtype in args.dtypes:
            for round_index in range(args.rounds):
                for label, tree in trees.items():
                    figures = run_revision(tree, dtype, args)
                    runs.append({"dtype": dtype, "round": round_index + 1, "revision": label, **figures})
                    print(json.dumps(runs[-1]), flush=True)

    capabilities = native_bf16_cpu_capabilities()
    lines = [
        f"# Ranked generate and collection: {checkout} against {args.baseline}",
        "",
        f"{cpu_name()}, {args.threads} threads; native bfloat16: {', '.join(capabilities) or 'none'}. Arithmetic "
        f"prompts, N={CANDIDATES}, up to {MAX_NEW_TOKENS} tokens, temperature 0.8, top-k 50; {args.prompts} prompts "
        f"for `generate` (one call each), {args.collect_prompts} for `collect_candidates` (one batch).",
        "",
        "| dtype | round | revision | generate s/prompt | tokens/prompt | ms/token | collect tokens/s |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for run in runs:
        lines.append(
            f"| {run['dtype']} | {run['round']} | {run['revision']} | {run['generate_s_per_prompt']:.2f} | "
            f"{run['generate_tokens_per_prompt']:.0f} | {run['generate_ms_per_token']:.2f} | "
            f"{run['collect_tokens_per_s']:.0f} |"
        )
    lines += ["", f"Speed-up of {checkout} over the baseline (mean of the rounds' ratios):", ""]
    summary = {}
    for dtype in args.dtypes:
        pairs = [
            [run for run in runs if run["dtype"] == dtype and run["round"] == number]
            for number in range(1, args.rounds + 1)
        ]
        ratios = {
            key: sum(old[key] / new[key] for old, new in pairs) / len(pairs)
            for key in ("generate_s_per_prompt", "generate_ms_per_token")
        }
        throughput = [new["collect_tokens_per_s"] / old["collect_tokens_per_s"] for old, new in pairs]
        ratios["collect_tokens_per_s"] = sum(throughput) / len(throughput)
        summary[dtype] = ratios
        lines.append(
            f"- {dtype}: ranked `generate` {ratios['generate_s_per_prompt']:.2f}x faster per prompt, "
            f"{ratios['generate_ms_per_token']:.2f}x per token; collection {ratios['collect_tokens_per_s']:.2f}x the "
            "tokens per second"
        )
    import torch

    torch.set_num_threads(args.threads)
    draws = time_token_draws(VOCAB_SIZE)
    lines += [
        "",
        f"Drawing one token for each of 16 rows over {VOCAB_SIZE:,} tokens: `torch.multinomial` "
        f"{draws['multinomial']:.2f} ms, `sample_tokens` {draws['sample_tokens']:.2f} ms "
        f"({draws['multinomial'] / draws['sample_tokens']:.1f}x).",
        "",
        "`python benchmarks/decoding_loop.py " + " ".join(sys.argv[1:]) + "`",
    ]
    payload = {
        "cpu": cpu_name(),
        "bf16_capabilities": list(capabilities),
        "runs": runs,
        "speedup": summary,
        "token_draw_ms": draws,
    }
    write_results(RESULTS, args.output_name, "\n".join(lines) + "\n", payload)


if __name__ == "__main__":
    main()
