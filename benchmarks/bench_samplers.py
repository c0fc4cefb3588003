"""Which path to take on a CPU: ranked `generate` against sampling elsewhere + `rank_candidates`.

    python benchmarks/bench_samplers.py [--prompts 8] [--num-candidates 16] [--max-new-tokens 64]

On the embedded SmolLM2-135M-Instruct with the shipped arithmetic ranker, the same arithmetic prompts, N answers
each, three paths, each in its own process (so peak RSS is the path's own):

* ``generate``: ranked `generate` (one pass: features captured while sampling);
* ``hf+rank``: plain transformers sampling (``num_return_sequences=N``), then `rank_candidates` on the ids (two
  passes, the paper's official code's design with HF sampling);
* ``llama.cpp+rank``: llama.cpp samples the texts from the GGUF, then `rank_candidates` on the texts (two passes;
  skipped with a note when llama-cpp-python is not installed).

It prints wall seconds per prompt (sampling and ranking apart), peak RSS, the picks' accuracy and, for
``hf+rank``, on how many prompts it sampled the same candidates and picked the same one as ``generate``
(same seed; llama.cpp draws other samples, so its picks are not comparable). A last process checks the memory
bound: `rank_candidates` on 64 candidates of 1,024 random tokens for one prompt (``candidate_batch_size=8``, the
shipped ranker reads log-probs, so logits over the answer positions are computed). Writes
``benchmarks/results/samplers/results.md`` and ``results.json``; the last line printed is the JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from hf_language_ranker import LanguageRanker, rank_candidates
from hf_language_ranker.embedded import load_model_and_tokenizer
from hf_language_ranker.prompts import format_prompt
from hf_language_ranker.tasks import load_task, task_verifier
from hf_language_ranker.verifiers import as_verifier

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "samplers"
SHIPPED_RANKER = ROOT / "model_cards" / "smollm2-135m-instruct-arithmetic"
PATHS = ("generate", "hf+rank", "llama.cpp+rank")
MEMORY_CHECK = "rank-64x1024"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_check(args: argparse.Namespace) -> dict:
    """Peak RSS and time of ranking 64 candidates x 1,024 tokens in this process."""
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model_and_tokenizer()
    ranker = LanguageRanker.from_pretrained(SHIPPED_RANKER)
    generator = torch.Generator().manual_seed(0)
    special = set(tokenizer.all_special_ids)
    pool = torch.tensor([token for token in range(len(tokenizer)) if token not in special])
    candidates = [pool[torch.randint(len(pool), (1024,), generator=generator)].tolist() for _ in range(64)]
    prompt = tokenizer(format_prompt(tokenizer, "Calculate 2 + 2.", True), add_special_tokens=False)["input_ids"]
    started = time.perf_counter()
    rank_candidates(model, tokenizer, [prompt], [candidates], ranker, candidate_batch_size=8, answer_extractor="math")
    return {"path": MEMORY_CHECK, "seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb()}


def run_path(path: str, args: argparse.Namespace) -> dict:
    """One path in this process: picks, timings and peak RSS."""
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model_and_tokenizer()
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
    llm = None
    if path == "llama.cpp+rank":
        from llama_cpp import Llama

        from hf_language_ranker.embedded import EMBEDDED_GGUF, embedded_model_folder

        llm = Llama(
            model_path=str(embedded_model_folder() / EMBEDDED_GGUF), n_ctx=1024, n_threads=args.threads, verbose=False
        )
    for index, ids in enumerate(prompt_ids):
        inputs = torch.tensor([ids])
        torch.manual_seed(args.seed + index)
        started = time.perf_counter()
        if path == "generate":
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
        elif path == "hf+rank":
            sequences = model.generate(input_ids=inputs, do_sample=True, num_return_sequences=n, **sampling)
            answers = [row[len(ids) :].tolist() for row in sequences]
            sample_seconds += time.perf_counter() - started
            started = time.perf_counter()
            result = rank_candidates(model, tokenizer, [ids], [answers], ranker, candidate_batch_size=n)
            rank_seconds += time.perf_counter() - started
            texts = tokenizer.batch_decode(answers, skip_special_tokens=True)
            best = int(result.best_indices[0])
        else:
            texts, finished = [], []
            for draw in range(n):
                choice = llm.create_completion(
                    prompt=ids,
                    max_tokens=args.max_new_tokens,
                    temperature=args.temperature,
                    top_p=1.0,
                    top_k=0,
                    min_p=0.0,
                    repeat_penalty=1.0,
                    seed=args.seed + 1000 * index + draw,
                )["choices"][0]
                texts.append(choice["text"])
                finished.append(choice["finish_reason"] == "stop")
            sample_seconds += time.perf_counter() - started
            started = time.perf_counter()
            result = rank_candidates(
                model, tokenizer, [ids], [texts], ranker, append_eos=[finished], candidate_batch_size=n
            )
            rank_seconds += time.perf_counter() - started
            best = int(result.best_indices[0])
        candidates.append(texts)
        picks.append(best)
    correct = [verifier(example, texts[best]) >= 0.5 for example, texts, best in zip(examples, candidates, picks)]
    return {
        "path": path,
        "prompts": len(examples),
        "sample_seconds_per_prompt": sample_seconds / len(examples),
        "rank_seconds_per_prompt": rank_seconds / len(examples),
        "peak_rss_mb": peak_rss_mb(),
        "accuracy": sum(correct) / len(correct),
        "candidates": candidates,
        "picks": picks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--num-candidates", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--path", choices=(*PATHS, MEMORY_CHECK), default=None, help="run one path in this process (internal)"
    )
    args = parser.parse_args()
    if args.path:
        print(json.dumps(memory_check(args) if args.path == MEMORY_CHECK else run_path(args.path, args)))
        return

    options = [f"--{key.replace('_', '-')}={value}" for key, value in vars(args).items() if key != "path"]
    runs, notes = {}, []
    for path in (*PATHS, MEMORY_CHECK):
        if path == "llama.cpp+rank" and importlib.util.find_spec("llama_cpp") is None:
            notes.append('llama.cpp+rank skipped: llama-cpp-python is not installed (pip install ".[llama-cpp]").')
            continue
        completed = subprocess.run(
            [sys.executable, __file__, "--path", path, *options], capture_output=True, text=True, check=True
        )
        runs[path] = json.loads(completed.stdout.strip().splitlines()[-1])

    memory = runs.pop(MEMORY_CHECK)
    notes.append(
        f"Memory bound: rank_candidates on 64 candidates x 1,024 tokens (one prompt, candidate_batch_size=8) took "
        f"{memory['seconds']:.0f} s at {memory['peak_rss_mb']:.0f} MB peak RSS."
    )
    reference = runs["generate"]
    rows = []
    for path, run in runs.items():
        total = run["sample_seconds_per_prompt"] + run["rank_seconds_per_prompt"]
        if path == "hf+rank":
            same = [a == b for a, b in zip(run["candidates"], reference["candidates"])]
            agree = [same_texts and pa == pb for same_texts, pa, pb in zip(same, run["picks"], reference["picks"])]
            agreement = f"same candidates {sum(same)}/{len(same)}, same pick {sum(agree)}/{len(agree)}"
        else:
            agreement = "—" if path == "generate" else "other samples"
        run["total_seconds_per_prompt"] = total
        cells = [
            f"{run['sample_seconds_per_prompt']:.2f}",
            f"{run['rank_seconds_per_prompt']:.2f}",
            f"{total:.2f}",
            f"{total / reference['sample_seconds_per_prompt']:.2f}",
            f"{run['peak_rss_mb']:.0f}",
            f"{run['accuracy']:.3f}",
            agreement,
        ]
        rows.append(f"| {path} | " + " | ".join(cells) + " |")
    command = "python benchmarks/bench_samplers.py " + " ".join(sys.argv[1:])
    markdown = "\n".join(
        [
            f"# Samplers: ranked generate vs sampling elsewhere + rank_candidates ({args.prompts} prompts, "
            f"N={args.num_candidates}, up to {args.max_new_tokens} new tokens, {args.threads} CPU threads)",
            "",
            "| path | sampling s/prompt | ranking s/prompt | total s/prompt | time vs generate | peak RSS (MB) | "
            "picks correct | agreement with generate |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
            *rows,
            "",
            *[line for note in notes for line in (note, "")],
            f"`{command}` (SmolLM2-135M-Instruct in float32, shipped arithmetic ranker; each path in its own "
            "process, one run on a shared machine)",
            "",
        ]
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "results.md").write_text(markdown)
    summary = {path: {k: v for k, v in run.items() if k not in ("candidates", "picks")} for path, run in runs.items()}
    report = {"command": command, "runs": summary, "memory_check": memory}
    (RESULTS / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(markdown)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
