"""Collect ranker training data (sampled candidates, verifier labels, hidden-state features) on one or more devices.

    python examples/accelerate_collect/collect.py prompts.jsonl runs/candidates --verifier math
    accelerate launch --config_file examples/accelerate_collect/multi_gpu.yaml \
        examples/accelerate_collect/collect.py prompts.jsonl runs/candidates --model <hub id or folder>

``prompts.jsonl`` has one JSON object per line with a "prompt" and the fields the verifier reads (for
"math": "answer"). Killed or interrupted, the same command resumes where it stopped.
"""

from __future__ import annotations

import argparse

import datasets

from hf_language_ranker.collection import collect_candidates
from hf_language_ranker.embedded import load_model_and_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompts", help="JSON lines file with a 'prompt' field per line")
    parser.add_argument("output_dir")
    parser.add_argument("--model", default=None, help="Hub id or folder of a causal LM (default: embedded SmolLM2)")
    parser.add_argument("--verifier", default="math", choices=["math", "code", "tools"])
    parser.add_argument("--num-candidates", type=int, default=8)
    parser.add_argument("--layers", type=int, nargs="*", default=None, help="feature layers (default: the paper's)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="discard what output_dir holds and start over")
    args = parser.parse_args()

    model, tokenizer = load_model_and_tokenizer(args.model)
    prompts = datasets.load_dataset("json", data_files=args.prompts, split="train")
    dataset = collect_candidates(
        model,
        tokenizer,
        prompts,
        args.verifier,
        output_dir=args.output_dir,
        num_candidates=args.num_candidates,
        layers=args.layers or None,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        overwrite=args.overwrite,
        temperature=args.temperature,
    )
    accuracy = sum(map(sum, dataset["labels"])) / max(1, len(dataset) * args.num_candidates)
    print(f"{len(dataset)} prompts in {args.output_dir}/dataset, {accuracy:.1%} of the candidates correct")


if __name__ == "__main__":
    main()
