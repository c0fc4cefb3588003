"""How much would dropping finished rows save? transformers' sampling against a loop that drops them (issue 30).

    python benchmarks/row_dropping.py [--prompts 4] [--dtype bfloat16] [--num-candidates 16] [--max-new-tokens 64]

transformers' sampling loop keeps every row of the batch until the longest one ends: a candidate that ended at its
tenth token still costs a row of every later step. On the embedded SmolLM2-135M-Instruct, for each arithmetic prompt
(no ranker, no hooks: sampling alone), alternately:

* ``transformers``: ``generate(do_sample=True, num_return_sequences=N)`` with the prompt once per row;
* ``own loop``: a minimal loop of the same distribution (temperature 0.8, top-k 50, as the collections sample) that
  prefills the prompt once and repeats its cache for the N rows, keeping every row to the end as transformers does
  (the control: what the loop saves by itself);
* ``dropping``: the same loop keeping, after each step, only the rows that have not sampled EOS
  (``DynamicCache.batch_select_indices``).

The paths draw different samples (the loop has its own random stream), so it compares time per generated token as
well as time per prompt. The measurement that motivated the ranked path's own loop (`decoding.py`, measured by
``decoding_loop.py``); the minimal loop here has no ranker. It also counts, in
the committed test collections (``data/mixture``, N=16, 64 tokens), how many of the 16 rows are still generating on
average over the steps transformers runs (until each prompt's longest candidate ends). Writes
``benchmarks/results/samplers/row_dropping.{md,json}``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import real_tokens, write_results
from transformers import DynamicCache, LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper

from hf_language_ranker import load_collection
from hf_language_ranker.embedded import load_model_and_tokenizer
from hf_language_ranker.features import cache_argument
from hf_language_ranker.prompts import encode_prompts, resolve_chat_template
from hf_language_ranker.tasks import load_task

TEMPERATURE, TOP_K = 0.8, 50
DATA = Path(__file__).parent / "data" / "mixture"
RESULTS = Path(__file__).parent / "results" / "samplers"
COLLECTIONS = ("arithmetic", "addition", "number_sequence", "lcm", "linear_equations", "gcd")


def live_rows(task: str) -> float:
    """Mean number of a test prompt's candidates still generating over the steps transformers runs for it."""
    lengths = np.asarray(load_collection(DATA / task / "test")["lengths"])  # [prompts, N], EOS included
    steps_run = lengths.max(1)
    return float(lengths.sum() / steps_run.sum())


@torch.no_grad()
def sample_own_loop(
    model, input_ids: torch.Tensor, num_candidates: int, max_new_tokens: int, eos: int, drop_finished: bool
) -> int:
    """Sample ``num_candidates`` answers of one prompt (dropping each row once it samples EOS, with
    ``drop_finished``); the number of real tokens generated (EOS included)."""
    processors = LogitsProcessorList([TemperatureLogitsWarper(TEMPERATURE), TopKLogitsWarper(TOP_K)])
    cache = DynamicCache(config=model.config)
    model(input_ids=input_ids[:, :-1], **{cache_argument(model): cache}, use_cache=True)
    cache.batch_repeat_interleave(num_candidates)
    tokens = input_ids[:, -1:].repeat(num_candidates, 1)
    running = torch.ones(num_candidates, dtype=torch.bool)
    generated = 0
    for _ in range(max_new_tokens):
        logits = model(input_ids=tokens, **{cache_argument(model): cache}, use_cache=True, logits_to_keep=1).logits
        sampled = torch.multinomial(processors(tokens, logits[:, -1].float()).softmax(-1), 1)
        if drop_finished:
            generated += len(sampled)
            live = (sampled[:, 0] != eos).nonzero().squeeze(-1)
            if not len(live):
                break
            if len(live) < len(sampled):
                cache.batch_select_indices(live)
            tokens = sampled[live]
        else:
            generated += int(running.sum())
            running &= sampled[:, 0] != eos
            if not running.any():
                break
            tokens = sampled
    return generated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--num-candidates", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model_and_tokenizer(None, dtype=args.dtype)
    use_template = resolve_chat_template(tokenizer, None)
    eos = model.generation_config.eos_token_id
    rows = []
    for index, example in enumerate(load_task("arithmetic", size=args.prompts + 1, seed=3)):
        inputs = encode_prompts(tokenizer, [example["prompt"]], use_template)
        torch.manual_seed(index)
        started = time.perf_counter()
        output = model.generate(
            **inputs,
            do_sample=True,
            temperature=TEMPERATURE,
            top_k=TOP_K,
            num_return_sequences=args.num_candidates,
            max_new_tokens=args.max_new_tokens,
        )
        transformers_seconds = time.perf_counter() - started
        transformers_tokens = real_tokens(output[:, inputs["input_ids"].shape[1] :], {eos})
        measured = [transformers_seconds, transformers_tokens]
        for drop_finished in (False, True):
            started = time.perf_counter()
            tokens = sample_own_loop(
                model, inputs["input_ids"], args.num_candidates, args.max_new_tokens, eos, drop_finished
            )
            measured += [time.perf_counter() - started, tokens]
        if index:  # the first prompt warms every path up
            rows.append(measured)
    paths = ("transformers", "own loop", "dropping")
    lines = [
        f"# Sampling with finished rows kept or dropped ({args.dtype}, {len(rows)} arithmetic prompts, "
        f"N={args.num_candidates}, up to {args.max_new_tokens} tokens, {args.threads} threads)",
        "",
        "| prompt | " + " | ".join(f"{path} s | tokens | ms/token" for path in paths) + " |",
        "|---:|" + "---:|---:|---:|" * len(paths),
    ]
    totals = [sum(column) for column in zip(*rows)]
    for label, row in [*((str(number), row) for number, row in enumerate(rows, start=1)), ("all", totals)]:
        cells = [f"{row[i]:.2f} | {row[i + 1]} | {row[i] / row[i + 1] * 1e3:.1f}" for i in range(0, len(row), 2)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    live = {task: round(live_rows(task), 1) for task in COLLECTIONS}
    lines += [
        "",
        "Rows still generating, on average over the steps transformers runs, in the committed test collections:",
        "",
        "| collection | live rows (of 16) |",
        "|---|---:|",
        *(f"| {task} | {value} |" for task, value in live.items()),
        "",
        "`python benchmarks/row_dropping.py " + " ".join(sys.argv[1:]) + "`",
    ]
    payload = {"paths": paths, "rows_seconds_tokens": rows, "live_rows": live}
    write_results(RESULTS, "row_dropping", "\n".join(lines) + "\n", payload)


if __name__ == "__main__":
    main()
