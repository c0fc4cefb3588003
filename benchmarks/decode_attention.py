"""A CPU model's one-token attention steps: transformers' sdpa call against the faster layout, in one run.

    python benchmarks/decode_attention.py [--dtype bfloat16] [--timing-prompts 4] [--rounds 2] [--prompts 16]
        [--collect-batches 1 4 8]

The embedded SmolLM2-135M-Instruct in ``--dtype`` with the released mixture ranker, N=16, up to 64 new tokens,
temperature 0.8, top-k 50, the same seed per prompt both ways. Ranked `generate` runs once with its one-token steps of
grouped queries in the faster layout for the dtype (`hf_language_ranker.decode_attention`, the default: bfloat16 steps
without a mask on packed query heads, float32 steps with a mask with ``enable_gqa``) and once with transformers' sdpa
attention as it is (the context disabled), alternately:

* speed: seconds a prompt over ``--timing-prompts`` arithmetic prompts (after a warm-up prompt), ``--rounds`` times
  each way, then one more round with the attention calls timed. One prompt needs no padding, so its steps have no
  mask: in bfloat16 they change, in float32 they run the same way both times;
* collection: `collect_candidates` of 8 arithmetic prompts (N=16) with each of ``--collect-batches`` prompts per
  batch (16 to 128 rows), tokens per second both ways, ``--rounds`` times alternately. A batch of one prompt has no
  mask, larger ones are padded: in bfloat16 the first changes, in float32 the others;
* quality: ``--prompts`` prompts of each of ``--tasks``, both ways: accuracy of the pick, pass@N, and the paired
  difference of the picks' accuracy with its 95% bootstrap interval (the candidates may differ, as between two CPUs:
  sampling follows any change in the logits);
* agreement with the second pass: `rank_candidates` rescoring each way's candidates; how many picks it shares with
  ranked `generate`, and the largest score difference.

Results go to ``benchmarks/results/samplers/<output-name>.md`` and ``.json``. Earlier forms of this script wrote
``decode_attention.md`` (commit 0f93756: float32 copies against the bfloat16 kernel) and
``decode_attention_packed_query.md`` (commit 9567044: packed query heads, bfloat16 only).
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any
from unittest import mock

import torch
from _common import write_results
from decoding_loop import CANDIDATES, MAX_NEW_TOKENS, RESULTS, SAMPLING, cpu_name, ranked_generate
from transformers import AttentionInterface

from hf_language_ranker import LanguageRanker, collect_candidates, decode_attention, rank_candidates, sampling
from hf_language_ranker.embedded import load_model_and_tokenizer, native_bf16_cpu_capabilities
from hf_language_ranker.evaluation import paired_bootstrap
from hf_language_ranker.prompts import encode_prompts, resolve_chat_template
from hf_language_ranker.tasks import load_task, task_verifier
from hf_language_ranker.verifiers import as_verifier

WAYS = ("transformers' sdpa", "faster layout")


def way(name: str) -> AbstractContextManager[Any]:
    """Ranked `generate` with its decoding steps' attention as ``name`` says."""
    switch = decode_attention.grouped_query_decode_attention
    return mock.patch.object(
        sampling, "grouped_query_decode_attention", lambda model: switch(model, enabled=name == WAYS[1])
    )


@contextmanager
def attention_seconds() -> Iterator[list[float]]:
    """Seconds spent in attention calls (both implementations) while the context is open."""
    spent = [0.0]

    def timed(attention: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return attention(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - started

        return run

    mapping = AttentionInterface._global_mapping
    originals = {name: mapping[name] for name in ("sdpa", decode_attention.IMPLEMENTATION)}
    try:
        mapping.update({name: timed(attention) for name, attention in originals.items()})
        yield spent
    finally:
        mapping.update(originals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--timing-prompts", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=16, help="prompts per task for the quality comparison")
    parser.add_argument("--tasks", nargs="+", default=["number_sequence", "lcm", "linear_equations"])
    parser.add_argument("--collect-batches", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output-name", default="decode_attention")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    capabilities = native_bf16_cpu_capabilities()

    model, tokenizer = load_model_and_tokenizer(None, dtype=args.dtype)
    ranker = LanguageRanker.from_pretrained("smollm2-135m-instruct-mixture")
    use_template = resolve_chat_template(tokenizer, None)

    def generate(example: dict[str, Any], seed: int) -> Any:
        torch.manual_seed(seed)
        encoded = encode_prompts(tokenizer, [example["prompt"]], use_template)
        return encoded["input_ids"][0].tolist(), ranked_generate(model, tokenizer, ranker, encoded)

    timing = load_task("arithmetic", size=1 + args.timing_prompts, seed=3)
    for name in WAYS:
        with way(name):
            generate(timing[0], 0)  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in WAYS}
    attention: dict[str, float] = {}
    for round_index in range(args.rounds + 1):
        for name in WAYS:
            with way(name), attention_seconds() as spent:
                started = time.perf_counter()
                for index, example in enumerate(timing[1:], start=1):
                    generate(example, index)
                elapsed = (time.perf_counter() - started) / args.timing_prompts
            if round_index < args.rounds:
                seconds[name].append(elapsed)
            else:  # the last round times attention too (its wrappers cost a little)
                attention[name] = spent[0] / args.timing_prompts
        print({name: [round(value, 2) for value in values] for name, values in seconds.items()}, flush=True)

    collected = load_task("arithmetic", size=8, seed=5)
    collect_rate: dict[int, dict[str, list[float]]] = {}
    for batch_size, _ in itertools.product(args.collect_batches, range(args.rounds)):
        for name in WAYS:
            with way(name), tempfile.TemporaryDirectory() as folder:
                torch.manual_seed(0)
                started = time.perf_counter()
                result = collect_candidates(
                    model,
                    tokenizer,
                    collected,
                    task_verifier("arithmetic"),
                    output_dir=folder,
                    num_candidates=CANDIDATES,
                    batch_size=batch_size,
                    max_new_tokens=MAX_NEW_TOKENS,
                    **SAMPLING,
                )
                tokens = sum(sum(lengths) for lengths in result["lengths"])
                rate = tokens / (time.perf_counter() - started)
                collect_rate.setdefault(batch_size * CANDIDATES, {}).setdefault(name, []).append(rate)
        print(batch_size * CANDIDATES, "rows:", collect_rate[batch_size * CANDIDATES], flush=True)

    correct: dict[str, list[float]] = {name: [] for name in WAYS}
    oracle: dict[str, list[float]] = {name: [] for name in WAYS}
    shared_picks = {name: 0 for name in WAYS}
    score_gap = {name: 0.0 for name in WAYS}
    per_task: dict[str, dict[str, float]] = {}
    for task in args.tasks:
        verifier = as_verifier(task_verifier(task))
        examples = load_task(task, size=args.prompts, seed=11)
        for name in WAYS:
            with way(name):
                drawn = [generate(example, 100 + index) for index, example in enumerate(examples)]
            picks, any_right = [], []
            for example, (prompt, output) in zip(examples, drawn):
                answers = output.candidate_sequences[0, :, len(prompt) :]
                texts = tokenizer.batch_decode(answers, skip_special_tokens=True)
                right = [verifier(example, text) for text in texts]
                picks.append(right[int(output.best_indices[0])])
                any_right.append(float(max(right)))
            second = rank_candidates(
                model,
                tokenizer,
                [prompt for prompt, _ in drawn],
                [output.candidate_sequences[0, :, len(prompt) :].tolist() for prompt, output in drawn],
                ranker,
            )
            for (_, output), scores, best in zip(drawn, second.scores, second.best_indices):
                shared_picks[name] += int(int(best) == int(output.best_indices[0]))
                score_gap[name] = max(score_gap[name], float((scores - output.candidate_scores[0]).abs().max()))
            correct[name] += picks
            oracle[name] += any_right
            per_task.setdefault(task, {})[name] = sum(picks) / len(picks)
        print(task, per_task[task], flush=True)

    total = len(correct[WAYS[0]])
    difference = paired_bootstrap(correct[WAYS[1]], correct[WAYS[0]])
    speedups = [old / new for old, new in zip(seconds[WAYS[0]], seconds[WAYS[1]])]
    lines = [
        f"# A {args.dtype} model's decoding-step attention on a CPU: transformers' sdpa call against the faster layout "
        f"({time.strftime('%Y-%m-%d')})",
        "",
        f"`python benchmarks/decode_attention.py --dtype {args.dtype} --timing-prompts {args.timing_prompts} "
        f"--rounds {args.rounds} "
        f"--prompts {args.prompts} --tasks {' '.join(args.tasks)} "
        f"--collect-batches {' '.join(map(str, args.collect_batches))} --threads {args.threads}` on {cpu_name()} "
        f"({args.threads} threads; native bfloat16: {', '.join(capabilities) or 'none'}); embedded "
        f"SmolLM2-135M-Instruct in {args.dtype}, smollm2-135m-instruct-mixture, N={CANDIDATES}, up to {MAX_NEW_TOKENS} "
        "new tokens, temperature 0.8, top-k 50, the same seed per prompt both ways.",
        "",
        f"| | {WAYS[0]} | {WAYS[1]} |",
        "|---|---|---|",
        "| ranked `generate`, s/prompt (rounds) | "
        + " | ".join(", ".join(f"{value:.2f}" for value in seconds[name]) for name in WAYS)
        + " |",
        f"| speed-up | | **{', '.join(f'{value:.2f}×' for value in speedups)}** |",
        "| attention, s/prompt (one more round, timed) | "
        + " | ".join(f"{attention[name]:.2f}" for name in WAYS)
        + " |",
        f"| accuracy of the pick ({total} prompts) | "
        + " | ".join(f"{sum(correct[name]) / total:.3f}" for name in WAYS)
        + " |",
        "| pass@N | " + " | ".join(f"{sum(oracle[name]) / total:.3f}" for name in WAYS) + " |",
        f"| picks `rank_candidates` shares with `generate` | {shared_picks[WAYS[0]]}/{total} | "
        f"{shared_picks[WAYS[1]]}/{total} |",
        f"| largest score difference to `rank_candidates` | {score_gap[WAYS[0]]:.4f} | {score_gap[WAYS[1]]:.4f} |",
        *(
            f"| `collect_candidates`, {rows} rows a batch, tokens/s (rounds) | "
            + " | ".join(", ".join(f"{value:.0f}" for value in rate[name]) for name in WAYS)
            + " |"
            for rows, rate in collect_rate.items()
        ),
        "",
        f"Accuracy of the pick, {WAYS[1]} minus {WAYS[0]}: {difference} (paired bootstrap over prompts).",
        "",
        f"| task | {WAYS[0]} | {WAYS[1]} |",
        "|---|---:|---:|",
        *(f"| {task} | {by_way[WAYS[0]]:.3f} | {by_way[WAYS[1]]:.3f} |" for task, by_way in per_task.items()),
    ]
    payload = {
        "cpu": cpu_name(),
        "bf16_capabilities": list(capabilities),
        "arguments": vars(args),
        "generate_s_per_prompt": seconds,
        "speedups": speedups,
        "attention_s_per_prompt": attention,
        "collect_tokens_per_s": collect_rate,
        "accuracy": {name: sum(correct[name]) / total for name in WAYS},
        "pass_at_n": {name: sum(oracle[name]) / total for name in WAYS},
        "difference": vars(difference),
        "shared_picks_with_rank_candidates": shared_picks,
        "max_score_difference_to_rank_candidates": score_gap,
        "per_task": per_task,
        "correct": correct,
    }
    write_results(RESULTS, args.output_name, "\n".join(lines) + "\n", payload)


if __name__ == "__main__":
    main()
