"""Cost of ranked generation against plain best-of-N sampling, on the CPU (or a GPU: `--device`), in one run.

    python benchmarks/bench_generate.py [--prompt-length 512] [--new-tokens 256] [--num-candidates 16]
    python benchmarks/bench_generate.py --model embedded     # the real-model table (SmolLM2-135M-Instruct)
    python benchmarks/bench_generate.py --device cuda         # the tiny model on a GPU (scripts/gpu_check.sh)

A tiny random Llama (4M parameters) samples N candidates of exactly `--new-tokens` tokens
(`min_new_tokens` holds EOS back in both runs) for one prompt of `--prompt-length` tokens:

* plain:  `generate(num_return_sequences=N, do_sample=True)`: the prompt is prefilled N times;
* ranked: `generate(ranker=..., num_candidates=N)`: one shared prefill, hooks capture the features,
  one extra step feeds the last tokens, the ranker scores the candidates.

Each is timed `--repeats` times, alternating, with the same seed; the minimum is kept. The last line is a JSON
object: `time_ratio` (ranked / plain), `feature_memory_ratio` (bytes the ranked path keeps for features /
bytes of `output_hidden_states` for the same sampling), `prefill_speedup` (N-fold prefill / shared prefill).

With ``--model embedded`` it measures the embedded SmolLM2-135M-Instruct (float32) on one chat-formatted
arithmetic prompt, N=16, for 64 and 256 new tokens: plain sampling, ranked `generate` with the shipped ranker, and
the two-pass design (plain sampling, then `featurize_candidates` with ``output_hidden_states``), each as a ratio
to plain sampling in the same run; then, each in a fresh process, peak RSS with N=64 (64 new tokens). Results go
to ``benchmarks/results/generate_cost/``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from _common import write_results
from transformers import LlamaConfig, LlamaForCausalLM

from hf_language_ranker import LanguageRanker, attach_ranker, featurize_candidates, sample_candidates
from hf_language_ranker.sampling import prefill_shared_prompt

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_RANKER = ROOT / "model_cards" / "smollm2-135m-instruct-arithmetic"
EMBEDDED_METHODS = ("plain", "ranked", "two-pass")


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
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # a GPU call may return before its kernels finish
        times.append(time.perf_counter() - start)
    return min(times)


def storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views of one buffer count once)."""
    storages = {tensor.untyped_storage().data_ptr(): tensor.untyped_storage().nbytes() for tensor in tensors}
    return sum(storages.values())


def embedded_setup(num_candidates: int, new_tokens: int):
    """The embedded model, the shipped ranker, one chat prompt and a call per method (fixed answer lengths)."""
    from hf_language_ranker import load_model_and_tokenizer
    from hf_language_ranker.prompts import format_prompt

    model, tokenizer = load_model_and_tokenizer()
    ranker = LanguageRanker.from_pretrained(SHIPPED_RANKER)
    text = format_prompt(tokenizer, "Calculate 47 + 38 * 2.\nGive the final answer as 'The answer is N'.", True)
    inputs = tokenizer([text], return_tensors="pt", add_special_tokens=False)
    sampling = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=True, temperature=0.8)
    n, layer = num_candidates, ranker.config.feature_layer

    def plain():
        torch.manual_seed(0)
        with torch.no_grad():
            return model.generate(**inputs, num_return_sequences=n, **sampling)

    def ranked():
        torch.manual_seed(0)
        return model.generate(**inputs, ranker=ranker, num_candidates=n, tokenizer=tokenizer, **sampling)

    def two_pass():
        sequences = plain()
        prompt_length = inputs["input_ids"].shape[1]
        generated = sequences[:, prompt_length:].reshape(1, n, -1)
        lengths = torch.full((1, n), generated.shape[-1])
        return featurize_candidates(model, inputs["input_ids"], inputs["attention_mask"], generated, lengths, [layer])

    return {"plain": plain, "ranked": ranked, "two-pass": two_pass}


def embedded_peak_rss(method: str, num_candidates: int, new_tokens: int) -> float:
    """Peak RSS (MB) of a fresh process that loads the model and runs one method once."""
    code = (
        "import resource, sys; sys.path.insert(0, {root!r}); import bench_generate as b; "
        "b.embedded_setup({n}, {t})[{method!r}](); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    ).format(root=str(ROOT / "benchmarks"), n=num_candidates, t=new_tokens, method=method)
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(completed.stdout.strip().splitlines()[-1])


def embedded_table(args: argparse.Namespace) -> None:
    rows, result = [], {"threads": args.threads, "repeats": args.repeats, "times": {}, "peak_rss_mb_n64": {}}
    for new_tokens in (64, 256):
        calls = embedded_setup(16, new_tokens)
        seconds = {method: [] for method in EMBEDDED_METHODS}
        for _ in range(args.repeats):  # alternate so that machine noise hits every method alike
            for method in EMBEDDED_METHODS:
                seconds[method].append(best_time(calls[method], 1))
        best = {method: min(values) for method, values in seconds.items()}
        result["times"][new_tokens] = best
        ratios = " | ".join(f"{best[method] / best['plain']:.2f}" for method in EMBEDDED_METHODS[1:])
        rows.append(f"| {new_tokens} | {best['plain']:.1f} | {ratios} |")
    for method in EMBEDDED_METHODS:
        result["peak_rss_mb_n64"][method] = embedded_peak_rss(method, 64, 64)
    memory = " | ".join(f"{result['peak_rss_mb_n64'][method]:.0f}" for method in EMBEDDED_METHODS)
    command = "python benchmarks/bench_generate.py " + " ".join(sys.argv[1:])
    markdown = "\n".join(
        [
            "# Cost of ranked generate on SmolLM2-135M-Instruct (float32, CPU)",
            "",
            f"One chat prompt, N=16, fixed answer lengths, best of {args.repeats} alternating runs, "
            f"{args.threads} threads.",
            "",
            "| new tokens | plain sampling (s) | ranked generate / plain | "
            "two-pass (plain + featurize_candidates) / plain |",
            "|---:|---:|---:|---:|",
            *rows,
            "",
            "Peak RSS (MB) of a fresh process, N=64, 64 new tokens: "
            + " | ".join(f"{method}" for method in EMBEDDED_METHODS)
            + f" = {memory}.",
            "",
            f"`{command}`",
            "",
        ]
    )
    write_results(ROOT / "benchmarks" / "results" / "generate_cost", "results", markdown, result)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt-length", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--num-candidates", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", choices=("tiny", "embedded"), default="tiny")
    parser.add_argument("--device", default="cpu", help="where the tiny model runs (cpu, cuda); embedded: cpu only")
    args = parser.parse_args()
    if args.model == "embedded" and args.device != "cpu":
        parser.error("--model embedded measures the CPU (its table and peak RSS); use --device with the tiny model")
    torch.set_num_threads(args.threads)
    if args.model == "embedded":
        embedded_table(args)
        return

    model = tiny_llama().to(args.device)
    ranker = LanguageRanker.for_model(model).to(args.device)
    parameters = sum(p.numel() for p in model.parameters())
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, model.config.vocab_size, (1, args.prompt_length), generator=generator)
    input_ids = input_ids.to(args.device)
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
        "device": torch.cuda.get_device_name(model.device) if model.device.type == "cuda" else "cpu",
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
