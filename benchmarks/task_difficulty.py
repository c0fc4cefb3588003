"""Is a built-in task informative for the embedded SmolLM2-135M-Instruct? First-sample and oracle accuracy.

    python benchmarks/task_difficulty.py [--tasks bfcl_simple humaneval]
    python benchmarks/task_difficulty.py --tasks arithmetic chain_sum products gsm_symbolic

Collects a few prompts per task (candidates under runs/difficulty/<task>, resumable) and prints, per task, the
fraction of correct first samples, of correct candidates and of prompts with any correct candidate (oracle).
A task whose oracle is near 0 gives a ranker nothing to choose; the last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from hf_language_ranker import collect_candidates, load_model_and_tokenizer
from hf_language_ranker.candidates import CORRECT_THRESHOLD
from hf_language_ranker.tasks import load_task, task_verifier

SETTINGS = {  # prompts, candidates, max_new_tokens
    "bfcl_simple": (40, 8, 64),
    "humaneval": (20, 4, 192),
    "arithmetic": (40, 8, 64),
    "chain_sum": (40, 8, 64),
    "products": (40, 8, 64),
    "gsm_symbolic": (24, 8, 128),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["bfcl_simple", "humaneval"], choices=sorted(SETTINGS))
    args = parser.parse_args()
    model, tokenizer = load_model_and_tokenizer()
    results = {}
    for task in args.tasks:
        prompts, candidates, tokens = SETTINGS[task]
        started = time.perf_counter()
        dataset = collect_candidates(
            model,
            tokenizer,
            load_task(task, size=prompts, seed=0),
            task_verifier(task),
            output_dir=f"runs/difficulty/{task}",
            num_candidates=candidates,
            batch_size=4,
            max_new_tokens=tokens,
            temperature=0.8,
            seed=0,
        )
        correct = np.array(dataset["labels"]) >= CORRECT_THRESHOLD
        results[task] = {
            "prompts": prompts,
            "candidates": candidates,
            "max_new_tokens": tokens,
            "first_sample": float(correct[:, 0].mean()),
            "mean_candidate": float(correct.mean()),
            "oracle": float(correct.any(1).mean()),
            "seconds": round(time.perf_counter() - started),
        }
        print(f"{task:<12} first sample {results[task]['first_sample']:.3f}  oracle {results[task]['oracle']:.3f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
