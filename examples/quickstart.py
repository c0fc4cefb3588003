"""Quickstart: best-of-N decoding with a Language Ranker in one `generate` call.

    python examples/quickstart.py                      # embedded SmolLM2-135M-Instruct + its shipped ranker
    python examples/quickstart.py --model <id or folder> --ranker runs/demo/ranker --num-candidates 16

It samples N answers, scores each from the model's own hidden states, prints every candidate with its
score and marks the one `generate` returns. On the embedded model it uses the ranker this project ships for it,
`model_cards/smollm2-135m-instruct-mixture` (trained on nine reasoning-gym tasks; it reads each candidate's
answer vote share and picks by ranker-weighted vote; the README's benchmarks say where it helps and where not).
With another --model and no --ranker it uses a freshly initialised ranker: the mechanics are the same, but its
choice is arbitrary until trained (`hf-language-ranker demo`).
"""

from __future__ import annotations

import argparse

import torch

from hf_language_ranker import LanguageRanker
from hf_language_ranker.configuration import MODEL_DTYPES
from hf_language_ranker.embedded import embedded_default_ranker, load_model_and_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="Hub id or folder of a causal LM (default: embedded SmolLM2)")
    parser.add_argument(
        "--ranker",
        default=None,
        help="Hub id or folder of a trained ranker (default: the shipped one on the embedded "
        "model, else an untrained one)",
    )
    # the shipped ranker was trained on prompts of this form (reasoning-gym tasks), 16 candidates, 64 tokens
    parser.add_argument("--prompt", default="Calculate 17 + 25.\nGive the final answer as 'The answer is N'.")
    parser.add_argument("--num-candidates", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dtype", choices=MODEL_DTYPES, default="auto", help="dtype of the model (auto: bfloat16 where native)"
    )
    args = parser.parse_args()

    model, tokenizer = load_model_and_tokenizer(args.model, dtype=args.dtype)
    if args.ranker:
        ranker = LanguageRanker.from_pretrained(args.ranker)
    elif args.model is None:
        shipped = embedded_default_ranker()
        ranker = LanguageRanker.from_pretrained(shipped)
        print(f"Using the shipped ranker {shipped.name} (trained on nine tasks for SmolLM2-135M-Instruct).")
    else:
        ranker = LanguageRanker.for_model(model)
        print(
            "No --ranker given: using an UNTRAINED ranker, whose pick is arbitrary (train one: hf-language-ranker demo)"
        )
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": args.prompt}], tokenize=False, add_generation_prompt=True
        )
    else:
        text = args.prompt
    inputs = tokenizer([text], return_tensors="pt", add_special_tokens=tokenizer.chat_template is None)

    torch.manual_seed(args.seed)
    output = model.generate(
        **inputs,
        ranker=ranker,
        num_candidates=args.num_candidates,
        max_new_tokens=args.max_new_tokens,
        return_dict_in_generate=True,
        tokenizer=tokenizer,  # rankers that read answer agreement decode the candidates
    )
    prompt_length = inputs["input_ids"].shape[1]
    best = int(output.best_indices[0])
    print(f"Prompt: {args.prompt}\n")
    for index, (sequence, score) in enumerate(zip(output.candidate_sequences[0], output.candidate_scores[0])):
        answer = tokenizer.decode(sequence[prompt_length:], skip_special_tokens=True).strip().replace("\n", " ")
        marker = "->" if index == best else "  "
        print(f"{marker} [{index:2d}] score {score.item():+.3f}  {answer}")
    chosen = tokenizer.decode(output.sequences[0, prompt_length:], skip_special_tokens=True).strip()
    print(f"\nBest answer (candidate {best}): {chosen}")


if __name__ == "__main__":
    main()
