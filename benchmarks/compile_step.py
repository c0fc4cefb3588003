"""Does `torch.compile` of the model's forward speed up sampling on a CPU? Ranked `generate` and plain sampling.

    python benchmarks/compile_step.py [--dtype bfloat16] [--compile]

On the embedded SmolLM2-135M-Instruct with the released mixture ranker, one arithmetic prompt, N=16 candidates of 64
tokens each (every candidate runs the whole budget): one warm-up call (with ``--compile``: after
``model.forward = torch.compile(model.forward, dynamic=True)``, its time includes the compilation), then ranked
`generate` and plain transformers sampling (``num_return_sequences=16``) alternately, twice each, in milliseconds per
decoding step. Writes ``benchmarks/results/samplers/compile_step[_compiled].{md,json}`` (issue 30's exploration).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _common import write_results

from hf_language_ranker import LanguageRanker
from hf_language_ranker.embedded import load_model_and_tokenizer
from hf_language_ranker.prompts import encode_prompts, resolve_chat_template
from hf_language_ranker.tasks import load_task

STEPS, CANDIDATES = 64, 16
RESULTS = Path(__file__).parent / "results" / "samplers"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model_and_tokenizer(None, dtype=args.dtype)
    ranker = LanguageRanker.from_pretrained("smollm2-135m-instruct-mixture")
    use_template = resolve_chat_template(tokenizer, None)
    prompt = load_task("arithmetic", size=1, seed=3)[0]["prompt"]
    inputs = encode_prompts(tokenizer, [prompt], use_template)

    def sample(ranked: bool) -> float:
        torch.manual_seed(0)
        budget = {"max_new_tokens": STEPS, "min_new_tokens": STEPS}
        started = time.perf_counter()
        if ranked:
            model.generate(**inputs, ranker=ranker, num_candidates=CANDIDATES, tokenizer=tokenizer, **budget)
        else:
            model.generate(**inputs, do_sample=True, num_return_sequences=CANDIDATES, **budget)
        return time.perf_counter() - started

    if args.compile:
        model.forward = torch.compile(model.forward, dynamic=True)
    warm_up = sample(True)
    per_step = {"ranked generate": [], "plain sampling": []}
    for ranked in (True, False, True, False):
        per_step["ranked generate" if ranked else "plain sampling"].append(round(sample(ranked) / STEPS * 1e3, 1))
    run = "torch.compile(model.forward, dynamic=True)" if args.compile else "uncompiled"
    lines = [
        f"# {run}: ms per decoding step, {args.dtype}, N={CANDIDATES} x {STEPS} tokens, {args.threads} threads",
        "",
        f"warm-up{' with compilation' if args.compile else ''}: {warm_up:.1f} s",
        "",
        *(f"- {name}: {', '.join(map(str, values))}" for name, values in per_step.items()),
        "",
        f"`python benchmarks/compile_step.py{' --compile' if args.compile else ''} --dtype {args.dtype}`",
    ]
    stem = "compile_step_compiled" if args.compile else "compile_step"
    write_results(RESULTS, stem, "\n".join(lines) + "\n", {"run": run, "warm_up_seconds": warm_up, **per_step})


if __name__ == "__main__":
    main()
