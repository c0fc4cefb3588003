"""The full quality protocol on the embedded SmolLM2-135M-Instruct; results go to benchmarks/results/<preset>/.

    python benchmarks/quality.py --preset arithmetic [--work-dir runs/quality] [--no-reward-model]

Collects train / validation / test candidates for the preset's task (resumable: rerun the same command after
an interruption), decodes the test prompts greedily, trains listwise and pointwise Language Rankers, a logistic
probe on the same features and a MiniLM text reward model (feature layers and hyper-parameters chosen on the
validation split only), and reports test selection accuracy for N = 1, 2, 4, 8, 16 against first sample,
greedy, majority vote, mean log-probability, self-certainty and the oracle (pass@N).

Writes `results.md`, `results.json`, `accuracy_vs_n.png` and the ranker's model card into
benchmarks/results/<preset>/, with the command and the preset that made them. The last line printed is a JSON
summary.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from hf_language_ranker import load_model_and_tokenizer
from hf_language_ranker.evaluation.experiment import PRESETS, preset_json, run_experiment

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="arithmetic", choices=sorted(PRESETS))
    parser.add_argument("--work-dir", default="runs/quality", help="collected candidates and trained models")
    parser.add_argument("--no-reward-model", action="store_true", help="skip the MiniLM reward-model baseline")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    preset = PRESETS[args.preset]
    started = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(dtype=getattr(torch, preset.dtype))
    outputs = run_experiment(
        model, tokenizer, preset, Path(args.work_dir) / args.preset, text_reward_model=not args.no_reward_model
    )
    seconds = time.perf_counter() - started

    target = RESULTS / args.preset
    target.mkdir(parents=True, exist_ok=True)
    for name in ("results_markdown", "results_json", "plot"):
        shutil.copy(outputs.files[name], target / outputs.files[name].name)
    shutil.copy(outputs.ranker_dir / "README.md", target / "ranker_card.md")
    command = "python benchmarks/quality.py " + " ".join(sys.argv[1:])
    (target / "command.txt").write_text(f"{command}\n\npreset: {preset_json(preset)}\nwall seconds: {seconds:.0f}\n")

    print(outputs.result.to_markdown())
    largest = max(outputs.result.accuracy["first sample"])
    summary = {method: round(by_n[largest], 4) for method, by_n in outputs.result.accuracy.items()}
    print(json.dumps({"preset": args.preset, "n": largest, "greedy": outputs.result.greedy_accuracy, **summary}))


if __name__ == "__main__":
    main()
