"""Cost of ranked generation against plain best-of-N sampling, on the CPU, in one run.

    python benchmarks/bench_generate.py [--prompt-length 512] [--new-tokens 256] [--num-candidates 16]

A tiny random Llama (4M parameters) samples N candidates of exactly `--new-tokens` tokens
(`min_new_tokens` holds EOS back in both runs) for one prompt of `--prompt-length` tokens:

* plain:  `generate(num_return_sequences=N, do_sample=True)`: the prompt is prefilled N times;
* ranked: `generate(ranker=..., num_candidates=N)`: one shared prefill, hooks capture the features,
  one extra step feeds the last tokens, the ranker scores the candidates.

Each is timed `--repeats` times, alternating, with the same seed; the minimum is kept. The last line is a JSON
object: `time_ratio` (ranked / plain), `feature_memory_ratio` (bytes the ranked path keeps for features /
bytes of `output_hidden_states` for the same sampling), `prefill_speedup` (N-fold prefill / shared prefill).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hf_language_ranker import LanguageRanker, attach_ranker, sample_candidates
from hf_language_ranker.generation import prefill_shared_prompt


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=2048,
        hidden_size=256,
        intermediate_size=704,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return attach_ranker(LlamaForCausalLM(config).eval())


def best_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views of one buffer count once)."""
    storages = {tensor.untyped_storage().data_ptr(): tensor.untyped_storage().nbytes() for tensor in tensors}
    return sum(storages.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt-length", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--num-candidates", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = tiny_llama()
    ranker = LanguageRanker.for_model(model)
    parameters = sum(p.numel() for p in model.parameters())
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, model.config.vocab_size, (1, args.prompt_length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    n = args.num_candidates
    sampling = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=True, top_k=0)

    def plain():
        torch.manual_seed(0)
        with torch.no_grad():
            return model.generate(input_ids, attention_mask=attention_mask, num_return_sequences=n, **sampling)

    def ranked():
        torch.manual_seed(0)
        return model.generate(input_ids, attention_mask=attention_mask, ranker=ranker, num_candidates=n, **sampling)

    plain_seconds, ranked_seconds = [], []
    for _ in range(args.repeats):  # alternate so that machine noise hits both alike
        plain_seconds.append(best_time(plain, 1))
        ranked_seconds.append(best_time(ranked, 1))
    plain_time, ranked_time = min(plain_seconds), min(ranked_seconds)
    assert plain().shape[1] == ranked().shape[1] == args.prompt_length + args.new_tokens

    # feature memory: what the ranked path keeps vs what output_hidden_states would keep for the same sampling
    torch.manual_seed(0)
    candidates = sample_candidates(
        model, input_ids, attention_mask, num_candidates=n, layers=[ranker.config.feature_layer], **sampling
    )
    feature_bytes = storage_bytes([*candidates.prompt_features.values(), *candidates.candidate_features.values()])
    torch.manual_seed(0)
    with torch.no_grad():
        hidden = model.generate(
            input_ids,
            attention_mask=attention_mask,
            num_return_sequences=n,
            output_hidden_states=True,
            return_dict_in_generate=True,
            **sampling,
        ).hidden_states
    hidden_bytes = storage_bytes(tensor for step in hidden for tensor in step)
    del hidden

    # prefill: N copies of the prompt vs the prompt once and a repeated cache
    expanded_ids = input_ids.repeat(n, 1)
    with torch.no_grad():
        n_fold = best_time(lambda: model(expanded_ids, attention_mask=torch.ones_like(expanded_ids)), args.repeats)
        shared = best_time(
            lambda: prefill_shared_prompt(model, input_ids[:, :-1], attention_mask[:, :-1], n), args.repeats
        )

    result = {
        "time_ratio": round(ranked_time / plain_time, 4),
        "feature_memory_ratio": round(feature_bytes / hidden_bytes, 6),
        "prefill_speedup": round(n_fold / shared, 2),
        "plain_seconds": round(plain_time, 3),
        "ranked_seconds": round(ranked_time, 3),
        "feature_bytes": feature_bytes,
        "hidden_states_bytes": hidden_bytes,
        "n_fold_prefill_seconds": round(n_fold, 4),
        "shared_prefill_seconds": round(shared, 4),
        "model_parameters": parameters,
        "ranker_parameters": ranker.num_parameters,
        "prompt_length": args.prompt_length,
        "new_tokens": args.new_tokens,
        "num_candidates": n,
        "threads": args.threads,
    }
    print(f"{'measure':<34}{'value':>16}")
    print("-" * 50)
    rows = [
        ("plain sampling (s)", plain_time),
        ("ranked generate (s)", ranked_time),
        ("time ratio (target <= 1.05)", result["time_ratio"]),
        ("feature bytes", feature_bytes),
        ("output_hidden_states bytes", hidden_bytes),
        ("feature memory ratio (<= 0.01)", result["feature_memory_ratio"]),
        ("N-fold prefill (s)", n_fold),
        ("shared prefill (s)", shared),
        ("prefill speedup (target >= 1.5)", result["prefill_speedup"]),
    ]
    for name, value in rows:
        print(f"{name:<34}{value:>16.4f}" if isinstance(value, float) else f"{name:<34}{value:>16,}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
