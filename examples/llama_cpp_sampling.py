"""Sample with llama.cpp, rank with the Hugging Face model: `rank_candidates` on candidates from another engine.

    make llama-cpp                                  # builds llama-cpp-python from source into .venv (8-15 min)
    python examples/llama_cpp_sampling.py [--num-candidates 8] [--prompts 3]

`make llama-cpp` builds llama.cpp for any x86-64 CPU with AVX2 and FMA (no -march=native, no AMX). A plain
`pip install "hf-language-ranker[llama-cpp]"` builds it natively, and on CPUs with AMX (recent Intel Xeons) that build
segfaults at the first evaluation (llama.cpp issue #20824). Without make, the same build is:

    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF \\
        -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \\
        pip install --no-cache-dir --no-binary llama-cpp-python "llama-cpp-python>=0.3.16"

llama.cpp samples N answers per prompt from the embedded SmolLM2-135M-Instruct GGUF (the same weights transformers
de-quantizes), fed the very prompt token ids the ranker path uses. The answers come back as texts with a finish
reason; `rank_candidates` re-tokenizes them (EOS appended to answers that stopped), reads the hidden states with one
forward pass per chunk on the transformers model, and the shipped arithmetic ranker picks one per prompt. Each
prompt prints its candidates by score, the pick, and the reference answer.

The same input format serves every engine: prompts (texts or ids) and, per prompt, a list of answer texts or token
ids (`examples/vllm_sampling.py` shows vLLM's). With llama.cpp's OpenAI-compatible server
(`python -m llama_cpp.server --model <gguf>`), pass each choice's ``text`` and ``finish_reason == "stop"`` the same way.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hf_language_ranker import LanguageRanker, load_model_and_tokenizer, rank_candidates
from hf_language_ranker.configuration import MODEL_DTYPES
from hf_language_ranker.llama_cpp_sampling import embedded_llama, sample_with_llama_cpp
from hf_language_ranker.prompts import format_prompt
from hf_language_ranker.tasks import load_task, task_verifier
from hf_language_ranker.verifiers import as_verifier

SHIPPED_RANKER = Path(__file__).resolve().parents[1] / "model_cards" / "smollm2-135m-instruct-arithmetic"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=3, help="arithmetic prompts to answer")
    parser.add_argument("--num-candidates", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--ranker", default=str(SHIPPED_RANKER), help="a ranker trained for SmolLM2-135M-Instruct")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dtype", choices=MODEL_DTYPES, default="auto", help="dtype of the model (auto: bfloat16 where native)"
    )
    args = parser.parse_args()

    model, tokenizer = load_model_and_tokenizer(dtype=args.dtype)
    ranker = LanguageRanker.from_pretrained(args.ranker)
    llm = embedded_llama(args.threads)
    examples = load_task("arithmetic", size=args.prompts, seed=args.seed + 1)
    verifier = as_verifier(task_verifier("arithmetic"))

    prompt_ids = [
        tokenizer(format_prompt(tokenizer, example["prompt"], True), add_special_tokens=False)["input_ids"]
        for example in examples
    ]
    started = time.perf_counter()
    sampled = [
        sample_with_llama_cpp(llm, ids, args.num_candidates, args.max_new_tokens, args.temperature, args.seed)
        for ids in prompt_ids
    ]
    sampling_seconds = time.perf_counter() - started
    started = time.perf_counter()
    result = rank_candidates(
        model,
        tokenizer,
        prompt_ids,
        [texts for texts, _ in sampled],
        ranker,
        append_eos=[finished for _, finished in sampled],
    )
    ranking_seconds = time.perf_counter() - started

    correct = 0
    for example, (texts, _), scores, best in zip(examples, sampled, result.scores, result.best_indices.tolist()):
        print(f"\n### {example['prompt']}\n(reference answer: {example['answer']})")
        for index in scores.argsort(descending=True).tolist():
            marker = "->" if index == best else "  "
            print(f"{marker} {scores[index].item():+.3f}  {' '.join(texts[index].split())[:100]}")
        correct += verifier(example, texts[best]) >= 0.5
    print(
        f"\nllama.cpp sampled {len(examples)} x {args.num_candidates} answers in {sampling_seconds:.1f} s; "
        f"rank_candidates scored them in {ranking_seconds:.1f} s; picks correct: {correct}/{len(examples)}"
    )


if __name__ == "__main__":
    main()
