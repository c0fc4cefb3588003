"""Sampling the embedded model's GGUF with llama.cpp (llama-cpp-python), for `rank_candidates` to rank.

    llm = embedded_llama(threads=2)
    texts, finished = sample_with_llama_cpp(llm, prompt_ids, num_candidates=8, max_tokens=64, temperature=0.8, seed=0)

llama-cpp-python builds from source; install it with ``make llama-cpp`` (portable flags: a native build segfaults on
CPUs with AMX, llama.cpp #20824).
"""

from __future__ import annotations

from typing import Any

from .embedded import EMBEDDED_GGUF, embedded_model_folder


def embedded_llama(threads: int, n_ctx: int = 1024) -> Any:
    """The embedded GGUF in llama.cpp; a clear error when llama-cpp-python is not installed."""
    try:
        from llama_cpp import Llama
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "llama-cpp-python is not installed: run `make llama-cpp`, which builds it from source for any x86-64 CPU "
            "with AVX2 (a plain native build segfaults on CPUs with AMX; the README gives the pip command).",
            name="llama_cpp",
        ) from error
    return Llama(model_path=str(embedded_model_folder() / EMBEDDED_GGUF), n_ctx=n_ctx, n_threads=threads, verbose=False)


def sample_with_llama_cpp(
    llm: Any, prompt_ids: list[int], num_candidates: int, max_tokens: int, temperature: float, seed: int
) -> tuple[list[str], list[bool]]:
    """N answers to one prompt, one ``create_completion`` each (seeds ``seed``, ``seed + 1``, ...): their texts and
    whether each stopped on EOS (not on the token budget).

    Sampling is set to what transformers does with ``temperature`` alone: no top-k, min-p or repetition penalty.
    """
    texts, finished = [], []
    for index in range(num_candidates):
        choice = llm.create_completion(
            prompt=prompt_ids,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=1.0,
            top_k=0,
            min_p=0.0,
            repeat_penalty=1.0,
            seed=seed + index,
        )["choices"][0]
        texts.append(choice["text"])
        finished.append(choice["finish_reason"] == "stop")
    return texts, finished
