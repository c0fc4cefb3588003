"""Does the shipped ranker keep gaining from N=16 to N=32? A fresh 32-candidate draw of the arithmetic test prompts.

    python benchmarks/scaling_n.py [--work-dir runs/scaling] [--num-candidates 32]

Samples ``--num-candidates`` answers for each of the arithmetic preset's 400 test prompts with a seed the quality
run never used (so N <= 16 here is a replication on new samples, not the quality table again), keeping only the
ranker's feature layer, and scores them with the released ranker in ``model_cards/`` as it is: nothing is trained
or chosen here. Reports selection accuracy at N = 1 ... 32 against majority vote, mean log-prob and the oracle,
with paired bootstrap intervals of ranker - majority at every N. Collection is resumable (66 minutes on 2 CPU
cores in bfloat16, measured); writes ``benchmarks/results/arithmetic/scaling_n.md`` and ``scaling_n.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from _common import write_results

from hf_language_ranker import LanguageRanker, collect_candidates, load_model_and_tokenizer
from hf_language_ranker.evaluation import MAJORITY_VOTE, MEAN_LOG_PROB, ORACLE, RankerScorer, evaluate
from hf_language_ranker.evaluation.experiment import PRESETS, task_splits
from hf_language_ranker.tasks import task_verifier

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "arithmetic"
SHIPPED_RANKER = ROOT / "model_cards" / "smollm2-135m-instruct-arithmetic"
RANKER = "shipped ranker"
#: the quality run samples its splits with seeds 0-2; this draw must be new
SEED = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="runs/scaling", help="where the candidates are collected")
    parser.add_argument("--ranker", default=str(SHIPPED_RANKER))
    parser.add_argument("--num-candidates", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    preset = PRESETS["arithmetic"]
    ranker = LanguageRanker.from_pretrained(args.ranker)
    model, tokenizer = load_model_and_tokenizer(dtype=getattr(torch, preset.dtype))
    started = time.perf_counter()
    test = collect_candidates(
        model,
        tokenizer,
        task_splits(preset)["test"],
        task_verifier(preset.task),
        output_dir=Path(args.work_dir) / "arithmetic" / "test",
        num_candidates=args.num_candidates,
        layers=[ranker.config.feature_layer],
        batch_size=preset.batch_size,
        max_new_tokens=preset.max_new_tokens,
        seed=SEED,
        temperature=preset.temperature,
        top_p=preset.top_p,
    )
    collect_seconds = time.perf_counter() - started

    ns = [n for n in (1, 2, 4, 8, 16, 32, 64) if n <= args.num_candidates]
    result = evaluate(
        test,
        {RANKER: RankerScorer.from_trained(ranker)},
        ns=ns,
        task=preset.task,
        selections={RANKER: ranker.config.selection},
    )
    methods = (MAJORITY_VOTE, MEAN_LOG_PROB, RANKER, ORACLE)
    paired = {n: result.paired(RANKER, MAJORITY_VOTE, n) for n in ns}
    rows = [f"| {n} | " + " | ".join(f"{result.accuracy[m][n]:.3f}" for m in methods) + f" | {paired[n]} |" for n in ns]
    command = " ".join(["python benchmarks/scaling_n.py", *sys.argv[1:]])
    markdown = "\n".join(
        [
            f"# Accuracy against N, up to N={ns[-1]}: the shipped arithmetic ranker on a fresh draw",
            "",
            f"{result.num_prompts} arithmetic test prompts, {args.num_candidates} new candidates each (seed {SEED}; "
            "the quality table's candidates were drawn with other seeds). The ranker is the released one "
            f"(`{Path(args.ranker).name}`: {ranker.config.head} head, layer {ranker.config.feature_layer}, "
            f"selection {ranker.config.selection}), unchanged; every N uses the first N candidates of each prompt.",
            "",
            "| N | majority vote | mean log-prob | shipped ranker | oracle (pass@N) | ranker − majority |",
            "|---:|---:|---:|---:|---:|---|",
            *rows,
            "",
            "Paired differences: mean over prompts, bootstrap 95% interval, prompts won / lost.",
            f"Collection took {collect_seconds / 60:.0f} minutes (0 when reloaded from `--work-dir`).",
            "",
            f"`{command}`",
            "",
        ]
    )
    report = {
        "command": command,
        "seed": SEED,
        "num_prompts": result.num_prompts,
        "accuracy": {m: result.accuracy[m] for m in methods},
        "paired": {n: str(p) for n, p in paired.items()},
        "per_prompt": {m: result.per_prompt[m] for m in methods},
    }
    write_results(RESULTS, "scaling_n", markdown, report)


if __name__ == "__main__":
    main()
