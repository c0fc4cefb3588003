"""Quickstart: best-of-N decoding with a Language Ranker in one `generate` call.

    python examples/quickstart.py                      # embedded SmolLM2-135M-Instruct + its released ranker
    python examples/quickstart.py --model <id or folder> --ranker runs/demo/ranker --num-candidates 16

For each of four fixed prompts (one of four tasks the released ranker was trained on; written here before they were
ever run, with their reference answers) it samples N answers with ranked `generate`, then prints compactly: the
distinct answers with their votes and the ranker's weight (softmax of its scores, summed per answer), which answer
majority vote picks, which the ranker picks, and which is right. Whatever happens is printed, right or wrong; a
135M model gets most of these wrong, and on some prompts no candidate is right.

The released ranker for the embedded model is ``smollm2-135m-instruct-mixture`` (installed with the package; it reads
each candidate's hidden state, log-prob, answer vote share and centrality, and picks by ranker-weighted vote).
With another --model and no --ranker it uses a freshly initialised ranker: the mechanics are the same, but its
choice is arbitrary until trained (`hf-language-ranker demo --full`).
"""

from __future__ import annotations

import argparse

import torch

from hf_language_ranker import LanguageRanker, load_model_and_tokenizer
from hf_language_ranker.configuration import MODEL_DTYPES
from hf_language_ranker.embedded import EMBEDDED_DEFAULT_RANKER, is_embedded
from hf_language_ranker.evaluation.shipped import prompt_picks

# fixed before the first run (reasoning-gym generators, seed 11, none of them in the released ranker's data)
PROMPTS = [
    {
        "prompt": "State the final answer to the following arithmetic problem: 43 - 16 =\n"
        "Give the final answer as 'The answer is N'.",
        "answer": "27",
    },
    {"prompt": "-6, -1, -2, 2, ?\nGive the final answer as 'The answer is N'.", "answer": "5"},
    {
        "prompt": "Find the Least Common Multiple (LCM) of these numbers: 37, 48\n"
        "Give the final answer as 'The answer is N'.",
        "answer": "1776",
    },
    {"prompt": "Calculate 5 * 1.\nGive the final answer as 'The answer is N'.", "answer": "5"},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="Hub id or folder of a causal LM (default: embedded SmolLM2)")
    parser.add_argument(
        "--ranker",
        default=None,
        help="Hub id, folder or released name of a trained ranker (default: the released one on the embedded "
        "model, else an untrained one)",
    )
    parser.add_argument("--num-candidates", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)  # the released ranker's training budget
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dtype", choices=MODEL_DTYPES, default="auto", help="dtype of the model (auto: bfloat16 where native)"
    )
    args = parser.parse_args()

    model, tokenizer = load_model_and_tokenizer(args.model, dtype=args.dtype)
    if args.ranker:
        ranker = LanguageRanker.from_pretrained(args.ranker)
    elif is_embedded(args.model):
        ranker = LanguageRanker.from_pretrained(EMBEDDED_DEFAULT_RANKER)
        print(f"Ranker: {EMBEDDED_DEFAULT_RANKER}, released for SmolLM2-135M-Instruct.\n")
    else:
        ranker = LanguageRanker.for_model(model)
        print("No --ranker given: an UNTRAINED ranker, whose pick is arbitrary (train one: hf-language-ranker demo)\n")

    torch.manual_seed(args.seed)
    right = {"ranker": 0, "majority vote": 0}
    for example in PROMPTS:
        messages = [{"role": "user", "content": example["prompt"]}]
        if tokenizer.chat_template:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = example["prompt"]
        inputs = tokenizer([text], return_tensors="pt", add_special_tokens=tokenizer.chat_template is None)
        # the one call: N candidates sampled with one shared prefill, scored from the model's own hidden states
        output = model.generate(
            **inputs,
            ranker=ranker,
            num_candidates=args.num_candidates,
            max_new_tokens=args.max_new_tokens,
            return_dict_in_generate=True,
            tokenizer=tokenizer,  # rankers that read answer agreement decode the candidates
        )
        prompt_length = inputs["input_ids"].shape[1]
        texts = tokenizer.batch_decode(output.candidate_sequences[0, :, prompt_length:], skip_special_tokens=True)
        picks = prompt_picks(example, texts, output.candidate_scores[0], int(output.best_indices[0]), "math")
        print(picks.render() + "\n")
        right["ranker"] += picks.correct[picks.ranker_index]
        right["majority vote"] += picks.correct[picks.majority_index]
    total = len(PROMPTS)
    print(f"Right: ranker {right['ranker']} of {total}, majority vote {right['majority vote']} of {total}.")
    print("Four prompts say little: `hf-language-ranker demo` measures the ranker on 1,000 committed test prompts.")


if __name__ == "__main__":
    main()
