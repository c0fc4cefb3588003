"""Peak memory of the shared-prefix second pass (`rank_candidates`) on the embedded SmolLM2-135M-Instruct, CPU.

    python benchmarks/rank_memory.py                          # 8 and 64 candidates of 1,024 tokens (10-25 min, 2 cores)
    python benchmarks/rank_memory.py --runs 8:256 64:256 8:1024 # N:tokens per run (the committed result, 9.5 min)

One chat-formatted arithmetic prompt and N candidates of exactly T token ids each (random ids outside the special
tokens, so none ends early on an EOS: memory and time do not depend on the ids) are ranked with the shipped mixture
ranker, which reads mean log-probabilities, so the pass runs the whole model and the LM head over every answer
position: the most memory the pass can take. `--candidate-batch-size` (pairs per forward pass, the memory bound) is
8, as in `rank`. Each run (N candidates of T tokens) goes in a fresh process that loads the model, then resets the
kernel's peak-RSS mark (``/proc/self/clear_refs``) so that the peak measured is the ranking pass's, model included,
not the loading's.

The target was 64 candidates x 1,024 tokens in 24 GB. Past the prefill, a pass of N candidates is N /
candidate_batch_size forward passes of the same shape (tests/test_ranking.py checks that what they hold does not
grow with N), so 8 candidates of 1,024 tokens show the peak of 64 in an eighth of the time.

Writes ``benchmarks/results/rank_memory/results.md`` and ``results.json``: per run, the RSS before the pass, the peak
RSS during it, the peak while the model loaded, the wall time, with the command, torch's thread count and
the CPU (``lscpu``'s model name).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from _common import write_results

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "benchmarks" / "results" / "rank_memory"
PROMPT = "Calculate 47 + 38 * 2.\nGive the final answer as 'The answer is N'."


def rss_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} is not in /proc/self/status")


def measure(num_candidates: int, candidate_tokens: int, candidate_batch_size: int, dtype: str) -> dict:
    """In this process: load the model, reset the peak-RSS mark, rank, and report memory and time."""
    import torch

    from hf_language_ranker import LanguageRanker, load_model_and_tokenizer, rank_candidates
    from hf_language_ranker.embedded import embedded_default_ranker
    from hf_language_ranker.prompts import format_prompt

    model, tokenizer = load_model_and_tokenizer(None, dtype=dtype)
    ranker = LanguageRanker.from_pretrained(embedded_default_ranker())
    prompt = format_prompt(tokenizer, PROMPT, True)
    special = set(tokenizer.all_special_ids)
    allowed = torch.tensor([token for token in range(len(tokenizer)) if token not in special])
    generator = torch.Generator().manual_seed(0)
    picks = torch.randint(len(allowed), (num_candidates, candidate_tokens), generator=generator)
    candidates = allowed[picks].tolist()
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand the loading's freed memory back before the mark is reset
    loading_peak = rss_mb("VmHWM")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (getrusage's ru_maxrss follows it too)
    before = rss_mb("VmRSS")
    started = time.perf_counter()
    result = rank_candidates(
        model,
        tokenizer,
        [prompt],
        [candidates],
        ranker,
        candidate_batch_size=candidate_batch_size,
        return_features=True,
    )
    seconds = time.perf_counter() - started
    assert result.features.lengths.tolist() == [[candidate_tokens] * num_candidates]  # every token was read
    return {
        "num_candidates": num_candidates,
        "candidate_tokens": candidate_tokens,
        "candidate_batch_size": candidate_batch_size,
        "dtype": dtype,
        "rss_before_pass_mb": round(before, 1),
        "peak_rss_during_pass_mb": round(rss_mb("VmHWM"), 1),
        "loading_peak_rss_mb": round(loading_peak, 1),
        "seconds": round(seconds, 1),
        "torch_threads": torch.get_num_threads(),
        "reads_mean_log_prob": bool(ranker.config.use_mean_log_prob),
    }


def cpu_model() -> str:
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    names = [line.split(":", 1)[1].strip() for line in output.splitlines() if line.startswith("Model name:")]
    return names[0] if names else "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--runs", nargs="+", default=["8:1024", "64:1024"], help="N:T, N candidates of T tokens; a process each"
    )
    parser.add_argument("--candidate-batch-size", type=int, default=8)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [tuple(int(part) for part in run.split(":")) for run in args.runs]
    if args.child:
        ((n, tokens),) = sizes
        print(json.dumps(measure(n, tokens, args.candidate_batch_size, args.dtype)))
        return
    runs = []
    for n, tokens in sizes:
        child = [sys.executable, __file__, "--child", "--runs", f"{n}:{tokens}", "--dtype", args.dtype]
        child += ["--candidate-batch-size", str(args.candidate_batch_size)]
        completed = subprocess.run(child, capture_output=True, text=True)
        if completed.returncode != 0:
            raise SystemExit(completed.stderr[-3000:])
        runs.append(json.loads(completed.stdout.strip().splitlines()[-1]))
        print(json.dumps(runs[-1]), flush=True)
    command = "python benchmarks/rank_memory.py " + " ".join(sys.argv[1:])
    result = {"command": command.strip(), "cpu": cpu_model(), "torch_threads": runs[0]["torch_threads"], "runs": runs}
    rows = [
        f"| {run['num_candidates']} | {run['candidate_tokens']:,} | {run['rss_before_pass_mb']:,.0f} | "
        f"{run['peak_rss_during_pass_mb']:,.0f} | {run['peak_rss_during_pass_mb'] - run['rss_before_pass_mb']:,.0f} | "
        f"{run['loading_peak_rss_mb']:,.0f} | {run['seconds']:.0f} |"
        for run in runs
    ]
    markdown = "\n".join(
        [
            "# Peak memory of the shared-prefix second pass (`rank_candidates`), SmolLM2-135M-Instruct, CPU",
            "",
            f"One prompt, N candidates of T tokens each, {runs[0]['dtype']}, candidate_batch_size "
            f"{runs[0]['candidate_batch_size']}, the shipped mixture ranker (reads mean log-probabilities: the whole "
            f"model and the LM head over every answer position), {result['torch_threads']} torch threads, "
            f"CPU: {result['cpu']}. Each N in a fresh process; the peak-RSS mark is reset after the model loads.",
            "",
            "| N | T (tokens per candidate) | RSS before the pass (MB) | peak RSS during the pass (MB) | pass peak - "
            "before (MB) | peak RSS while the model loaded (MB) | pass (s) |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            "The target was 64 candidates x 1,024 tokens in 24 GB. Past the prefill a pass is N / candidate_batch_size "
            "forward passes of the same shape, so its peak does not depend on N (tests/test_ranking.py, "
            "test_peak_memory_of_the_shared_prefix_pass_does_not_grow_with_the_number_of_candidates).",
            "",
            f"`{result['command']}`",
            "",
        ]
    )
    write_results(TARGET, "results", markdown, result)


if __name__ == "__main__":
    main()
