"""Which path to take on a CPU: ranked `generate` against sampling elsewhere + `rank_candidates`, in each dtype.

    python benchmarks/bench_samplers.py [--prompts 8] [--num-candidates 16] [--max-new-tokens 64]
                                        [--dtypes float32 bfloat16] [--paths ...]
                                        [--output-name results]

On the embedded SmolLM2-135M-Instruct with the shipped arithmetic ranker, the same arithmetic prompts, N answers
each, four paths, each in its own process (so peak RSS is the path's own) and run once per transformers dtype:

* ``generate``: ranked `generate` (one pass: features captured while sampling);
* ``hf+rank``: plain transformers sampling (``num_return_sequences=N``), then `rank_candidates` on the ids (two
  passes, the paper's official code's design with HF sampling);
* ``llama.cpp+rank``: llama.cpp samples the texts from the GGUF one sequence at a time (``create_completion``),
  then `rank_candidates` on the texts;
* ``llama.cpp-batched+rank``: llama.cpp samples the N answers of a prompt together, as its server's parallel slots
  do: one context with N sequence ids, the prompt decoded once and its KV cells shared (``llama_memory_seq_cp``),
  then one ``llama_decode`` per step for every unfinished sequence (low-level batch API), then `rank_candidates`.

The llama.cpp paths are skipped with a note when llama-cpp-python is not installed; their sampling runs on the
GGUF's own weights whatever the dtype, which only sets the transformers model that ranks. Times are wall seconds per
prompt; every total is also given as a ratio to ranked `generate` of the same run (same dtype, and float32), and
each two-pass path's ranking time as a ratio to its own sampling time. Each path draws its own samples (ranked
`generate` samples with its own decoding loop, `decoding.sample_dropping_finished_rows`), so their picks are not
compared. The memory bound of `rank_candidates` (64 candidates of 1,024 tokens) is
`rank_memory.py`'s to measure. Writes ``benchmarks/results/samplers/results.md`` and
``results.json`` (or ``--output-name``); the last line printed is the JSON. The report names the CPU's kernels and
whether it computes bfloat16 natively (AMX-BF16 or AVX512-BF16), which bounds the bfloat16 rows, and gives issue
30's verdict where this is a CPU that issue names: an AVX2-only one (run ``--dtypes float32``) or one with AMX
(``--dtypes bfloat16``). On any other CPU, including one whose kernels are held to AVX2, it says that none applies.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import write_results

from hf_language_ranker import LanguageRanker, load_model_and_tokenizer, rank_candidates
from hf_language_ranker.embedded import (
    BF16_CPU_CAPABILITIES,
    native_bf16_cpu_capabilities,
)
from hf_language_ranker.features import token_statistics
from hf_language_ranker.layout import eos_token_ids
from hf_language_ranker.llama_cpp_sampling import embedded_llama, sample_with_llama_cpp
from hf_language_ranker.prompts import format_prompt
from hf_language_ranker.tasks import load_task, task_verifier
from hf_language_ranker.verifiers import as_verifier

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "samplers"
SHIPPED_RANKER = ROOT / "model_cards" / "smollm2-135m-instruct-arithmetic"
GENERATE = "generate"
LLAMA_CPP_PATHS = ("llama.cpp+rank", "llama.cpp-batched+rank")
PATHS = (GENERATE, "hf+rank", *LLAMA_CPP_PATHS)
DTYPES = ("float32", "bfloat16")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------- llama.cpp
class BatchedLlamaCpp:
    """llama.cpp sampling N sequences of one prompt in one batch (the low-level API, as its parallel slots do).

    One context holds ``num_candidates`` sequence ids over a unified KV cache: the prompt is decoded once on
    sequence 0 and its cells are shared with the others (``llama_memory_seq_cp``); each step samples every unfinished
    sequence from its own logits (temperature, then a seeded draw) and decodes their new tokens in one
    ``llama_decode``. A sequence ends at an end-of-generation token (finished) or at the token budget.
    """

    def __init__(self, llm: Any, num_candidates: int, max_prompt_tokens: int, args: argparse.Namespace) -> None:
        import llama_cpp

        self.lib, self.llm, self.args = llama_cpp, llm, args
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = max_prompt_tokens + num_candidates * args.max_new_tokens + 8
        params.n_batch = params.n_ubatch = max(max_prompt_tokens, num_candidates)
        params.n_seq_max = num_candidates
        params.kv_unified = True
        params.n_threads = params.n_threads_batch = args.threads
        self.ctx = llama_cpp.llama_init_from_model(llm.model, params)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a context with several sequences.")
        self.batch = llama_cpp.llama_batch_init(params.n_batch, 0, num_candidates)
        self.vocab = llama_cpp.llama_model_get_vocab(llm.model)

    def close(self) -> None:
        self.lib.llama_batch_free(self.batch)
        self.lib.llama_free(self.ctx)

    def _add(self, token: int, position: int, sequences: Sequence[int], logits: bool) -> int:
        """Append one token to the batch; returns its index (where its logits are read)."""
        index = self.batch.n_tokens
        self.batch.token[index] = token
        self.batch.pos[index] = position
        self.batch.n_seq_id[index] = len(sequences)
        for slot, sequence in enumerate(sequences):
            self.batch.seq_id[index][slot] = sequence
        self.batch.logits[index] = logits
        self.batch.n_tokens += 1
        return index

    def _decode(self) -> None:
        if self.lib.llama_decode(self.ctx, self.batch) != 0:
            raise RuntimeError("llama_decode failed")

    def sample(self, ids: list[int], seed: int) -> tuple[list[str], list[bool], list[float]]:
        """N answers to the prompt ``ids``: texts, whether each ended with an end-of-generation token, and each
        answer's mean token log-probability under the raw logits (end-of-generation token included), as a server
        reports them."""
        lib, n = self.lib, self.args.num_candidates
        vocab_size = lib.llama_vocab_n_tokens(self.vocab)
        sum_log_probs = [0.0] * n
        memory = lib.llama_get_memory(self.ctx)
        lib.llama_memory_clear(memory, True)
        self.batch.n_tokens = 0
        for position, token in enumerate(ids):
            last = self._add(token, position, [0], position == len(ids) - 1)
        self._decode()
        for sequence in range(1, n):
            lib.llama_memory_seq_cp(memory, 0, sequence, -1, -1)
        samplers = []
        for sequence in range(n):
            chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(self.args.temperature))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed + sequence))
            samplers.append(chain)
        tokens: list[list[int]] = [[] for _ in range(n)]
        finished = [False] * n
        logits_index = dict.fromkeys(range(n), last)  # every sequence samples its first token from the prompt's
        try:
            while logits_index:
                self.batch.n_tokens = 0
                indices = {}
                for sequence, index in logits_index.items():
                    logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(self.ctx, index), shape=(vocab_size,))
                    log_normalizer = float(np.logaddexp.reduce(logits.astype(np.float64)))
                    token = lib.llama_sampler_sample(samplers[sequence], self.ctx, index)
                    sum_log_probs[sequence] += float(logits[token]) - log_normalizer
                    if lib.llama_vocab_is_eog(self.vocab, token):
                        finished[sequence] = True
                        continue
                    tokens[sequence].append(token)
                    if len(tokens[sequence]) < self.args.max_new_tokens:
                        position = len(ids) + len(tokens[sequence]) - 1
                        indices[sequence] = self._add(token, position, [sequence], True)
                logits_index = indices
                if logits_index:
                    self._decode()
        finally:
            for chain in samplers:
                lib.llama_sampler_free(chain)
        texts = [self.llm.detokenize(row).decode("utf-8", errors="ignore") for row in tokens]
        counts = [len(row) + done for row, done in zip(tokens, finished)]
        return texts, finished, [total / max(count, 1) for total, count in zip(sum_log_probs, counts)]


def sampled_mean_log_probs(logits: Sequence[torch.Tensor], tokens: torch.Tensor, eos_ids: list[int]) -> list[float]:
    """Each sampled row's mean token log-probability under the raw logits ``generate`` returned
    (``output_logits=True``), over its tokens up to and including its first EOS: what a serving engine reports."""
    log_probs = torch.stack([token_statistics(step, tokens[:, i])[0] for i, step in enumerate(logits)], 1)
    is_eos = torch.isin(tokens, torch.tensor(eos_ids))
    real = (is_eos.long().cumsum(1) - is_eos.long()) == 0  # up to and including the first EOS
    return ((log_probs * real).sum(1) / real.sum(1)).tolist()


# ------------------------------------------------------------------------------------------------- paths
def run_path(path: str, args: argparse.Namespace) -> dict:
    """One path in this process: picks, timings and peak RSS."""
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model_and_tokenizer(dtype=args.dtype)
    ranker = LanguageRanker.from_pretrained(SHIPPED_RANKER)
    examples = load_task("arithmetic", size=args.prompts, seed=args.seed + 7)
    verifier = as_verifier(task_verifier("arithmetic"))
    prompt_ids = [
        tokenizer(format_prompt(tokenizer, example["prompt"], True), add_special_tokens=False)["input_ids"]
        for example in examples
    ]
    sampling = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": 1.0}
    n = args.num_candidates
    picks, candidates, sample_seconds, rank_seconds = [], [], 0.0, 0.0
    reported_rank_seconds, reported_same_pick = 0.0, 0
    llm = batched = None
    if path in LLAMA_CPP_PATHS:
        llm = embedded_llama(args.threads)
        if path == "llama.cpp-batched+rank":
            batched = BatchedLlamaCpp(llm, n, max(map(len, prompt_ids)), args)
    for index, ids in enumerate(prompt_ids):
        inputs = torch.tensor([ids])
        torch.manual_seed(args.seed + index)
        started = time.perf_counter()
        if path == GENERATE:
            output = model.generate(
                input_ids=inputs,
                ranker=ranker,
                num_candidates=n,
                tokenizer=tokenizer,
                return_dict_in_generate=True,
                **sampling,
            )
            texts = tokenizer.batch_decode(output.candidate_sequences[0, :, len(ids) :], skip_special_tokens=True)
            best = int(output.best_indices[0])
            sample_seconds += time.perf_counter() - started
        else:
            reported = None  # the sampler's mean log-probs, where it reports them
            if path == "hf+rank":  # token ids: rank_candidates cuts them after their first EOS
                output = model.generate(
                    input_ids=inputs,
                    do_sample=True,
                    num_return_sequences=n,
                    output_logits=True,
                    return_dict_in_generate=True,
                    **sampling,
                )
                generated = output.sequences[:, len(ids) :]
                reported = sampled_mean_log_probs(output.logits, generated, eos_token_ids(model, tokenizer))
                answers: list[Any] = generated.tolist()
                texts, append_eos = tokenizer.batch_decode(answers, skip_special_tokens=True), True
            else:  # texts, with EOS appended to those that ended on one
                seed = args.seed + 1000 * index
                if batched is not None:
                    texts, finished, reported = batched.sample(ids, seed)
                else:
                    texts, finished = sample_with_llama_cpp(
                        llm, ids, args.num_candidates, args.max_new_tokens, args.temperature, seed
                    )
                answers, append_eos = texts, [finished]
            sample_seconds += time.perf_counter() - started
            rank = functools.partial(
                rank_candidates,
                model,
                tokenizer,
                [ids],
                [answers],
                ranker,
                append_eos=append_eos,
                candidate_batch_size=n,
            )
            started = time.perf_counter()
            best = int(rank().best_indices[0])
            rank_seconds += time.perf_counter() - started
            if reported is not None:  # the same ranking on the sampler's log-probs: no pass above the ranker's layer
                started = time.perf_counter()
                again = int(rank(mean_log_probs=[reported]).best_indices[0])
                reported_rank_seconds += time.perf_counter() - started
                reported_same_pick += again == best
        candidates.append(texts)
        picks.append(best)
    if batched is not None:
        batched.close()
    correct = [verifier(example, texts[best]) >= 0.5 for example, texts, best in zip(examples, candidates, picks)]
    return {
        "path": path,
        "dtype": args.dtype,
        "prompts": len(examples),
        "sample_seconds_per_prompt": sample_seconds / len(examples),
        "rank_seconds_per_prompt": rank_seconds / len(examples),
        "reported_rank_seconds_per_prompt": reported_rank_seconds / len(examples) if reported_rank_seconds else None,
        "reported_same_pick": reported_same_pick,
        "peak_rss_mb": peak_rss_mb(),
        "accuracy": sum(correct) / len(correct),
        "candidates": candidates,
        "picks": picks,
    }


# ------------------------------------------------------------------------------------------------ report
def _ratio(numerator: float, denominator: float | None) -> str:
    return f"{numerator / denominator:.2f}" if denominator else "—"


#: environment variables that limit which kernels torch, oneDNN and MKL use (to run, say, AVX2 kernels on a newer CPU)
KERNEL_LIMITS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


#: issue 30's target for each CPU it names: the dtype of ranked generate, the llama.cpp path, the largest ratio
ISSUE_30_TARGETS = {"AVX2-only": ("float32", "llama.cpp+rank", 1.2), "AMX": ("bfloat16", "llama.cpp-batched+rank", 1.0)}


def issue_30_cpu() -> str | None:
    """Which CPU of issue 30's targets this is: ``"AMX"``, ``"AVX2-only"`` (AVX2 without AVX512), or ``None``."""
    capabilities = torch.cpu.get_capabilities()
    if capabilities.get("amx_bf16"):
        return "AMX"
    return "AVX2-only" if capabilities.get("avx2") and not capabilities.get("avx512_f") else None


def issue_30_verdict(sampling_ratios: dict[tuple[str, str], float]) -> str:
    """Issue 30's target for this CPU, measured or why not, from ranked generate's time over each llama.cpp path's
    sampling time (keyed by path and dtype)."""
    cpu = issue_30_cpu()
    if cpu is None:
        limited = [name for name in KERNEL_LIMITS if name in os.environ]
        return (
            "Issue 30's targets need an AVX2-only CPU (ranked generate in float32 <= 1.2x llama.cpp one-sequence "
            "sampling) or an AMX CPU (in bfloat16 <= 1.0x llama.cpp batched sampling): this CPU is neither"
            + (f" ({', '.join(limited)} set: a stand-in, not the target's CPU)." if limited else ".")
        )
    dtype, path, bound = ISSUE_30_TARGETS[cpu]
    ratio = sampling_ratios.get((path, dtype))
    if ratio is None:
        return f"Issue 30's target on this {cpu} CPU needs ranked generate and {path} in {dtype}: not both run."
    return (
        f"Issue 30's target on this {cpu} CPU: ranked generate ({dtype}) / {path.removesuffix('+rank')} sampling "
        f"{ratio:.2f}, target <= {bound}: {'met' if ratio <= bound else 'not met'}."
    )


def command_line() -> str:
    """This run's command, with the kernel-limiting environment variables it was given."""
    limits = [f"{name}={os.environ[name]}" for name in KERNEL_LIMITS if name in os.environ]
    return " ".join([*limits, "python benchmarks/bench_samplers.py", *sys.argv[1:]])


def report(runs: dict[tuple[str, str], dict], notes: list[str], args: argparse.Namespace) -> str:
    """The markdown table of every (path, dtype) run and the target ratios."""
    totals = {key: run["sample_seconds_per_prompt"] + run["rank_seconds_per_prompt"] for key, run in runs.items()}
    rows = []
    for (path, dtype), run in runs.items():
        sample, rank = run["sample_seconds_per_prompt"], run["rank_seconds_per_prompt"]
        reported = run.get("reported_rank_seconds_per_prompt")
        cells = [
            f"{sample:.2f}",
            f"{rank:.2f}" if path != GENERATE else "—",
            f"{totals[path, dtype]:.2f}",
            _ratio(totals[path, dtype], totals.get((GENERATE, dtype))),
            _ratio(totals[path, dtype], totals.get((GENERATE, "float32"))),
            _ratio(rank, sample) if path != GENERATE else "—",
            f"{reported:.2f}" if reported else "—",
            f"{_ratio(reported, sample)} (same pick {run['reported_same_pick']}/{run['prompts']})" if reported else "—",
            f"{run['peak_rss_mb']:.0f}",
            f"{run['accuracy']:.3f}",
        ]
        rows.append(f"| {path} | {dtype} | " + " | ".join(cells) + " |")
    sampling_ratios = {  # ranked generate / each llama.cpp path's sampling, in the same dtype
        (path, dtype): totals[GENERATE, dtype] / runs[path, dtype]["sample_seconds_per_prompt"]
        for dtype in args.dtypes
        for path in LLAMA_CPP_PATHS
        if totals.get((GENERATE, dtype)) and (path, dtype) in runs
    }
    targets = [
        f"ranked generate ({dtype}) / {path.removesuffix('+rank')} sampling: {ratio:.2f}"
        for (path, dtype), ratio in sampling_ratios.items()
    ]
    native = ", ".join(native_bf16_cpu_capabilities())
    absent = " and ".join(BF16_CPU_CAPABILITIES) + " absent: bfloat16 is emulated"
    notes.append(
        f"CPU: {torch.backends.cpu.get_cpu_capability()} kernels; native bfloat16 matrix products: {native or absent}."
    )
    command = command_line()
    return "\n".join(
        [
            f"# Samplers: ranked generate vs sampling elsewhere + rank_candidates ({args.prompts} prompts, "
            f"N={args.num_candidates}, up to {args.max_new_tokens} new tokens, {args.threads} CPU threads)",
            "",
            "| path | dtype | sampling s/prompt | ranking s/prompt | total s/prompt | vs generate (same dtype) | "
            "vs generate (float32) | ranking / sampling | ranking on the sampler's log-probs s/prompt | "
            "that / sampling | peak RSS (MB) | picks correct |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
            *rows,
            "",
            "Targets (issue 21): ranked generate in bfloat16 <= 1.0x llama.cpp one-sequence sampling; the second pass "
            "<= 0.15x the sampling time it ranks (column ranking / sampling). Where the sampler reports each "
            "answer's mean log-probability (HF `output_logits`, llama.cpp's logits in the batched path; the "
            "one-at-a-time path does not ask for them), `rank_candidates(mean_log_probs=...)` stops at the ranker's "
            "layer: the next two columns, with how often it picked the same candidate as the full pass.",
            "",
            *[f"- {line}" for line in targets],
            "",
            issue_30_verdict(sampling_ratios),
            "",
            *[line for note in notes for line in (note, "")],
            f"`{command}` (SmolLM2-135M-Instruct, shipped arithmetic ranker; each path and dtype in its own process, "
            "one run on a shared machine)",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--num-candidates", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES), help="transformers dtypes to run")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS), help="paths to run (default: all)")
    parser.add_argument("--output-name", default="results", help=f"results file stem under {RESULTS}")
    parser.add_argument("--path", choices=PATHS, default=None, help="one run in this process (internal)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="the dtype of --path (internal)")
    args = parser.parse_args()
    if args.path:
        print(json.dumps(run_path(args.path, args)))
        return

    shared = ["prompts", "num_candidates", "max_new_tokens", "temperature", "threads", "seed"]
    options = [f"--{key.replace('_', '-')}={getattr(args, key)}" for key in shared]
    runs, notes = {}, []
    if importlib.util.find_spec("llama_cpp") is None:
        notes.append('llama.cpp paths skipped: llama-cpp-python is not installed (pip install ".[llama-cpp]").')
    for dtype in args.dtypes:
        for path in args.paths:
            if path in LLAMA_CPP_PATHS and importlib.util.find_spec("llama_cpp") is None:
                continue
            completed = subprocess.run(
                [sys.executable, __file__, "--path", path, "--dtype", dtype, *options],
                capture_output=True,
                text=True,
                check=True,
            )
            runs[path, dtype] = json.loads(completed.stdout.strip().splitlines()[-1])

    markdown = report(runs, notes, args)
    summary = {
        f"{path} [{dtype}]": {k: v for k, v in run.items() if k not in ("candidates", "picks")}
        for (path, dtype), run in runs.items()
    }
    command = command_line()
    write_results(RESULTS, args.output_name, markdown, {"command": command, "runs": summary})
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
