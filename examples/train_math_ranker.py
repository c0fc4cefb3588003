"""Train a Language Ranker for arithmetic and compare it with plain sampling on held-out prompts.

    python examples/train_math_ranker.py   # embedded SmolLM2-135M-Instruct: about 10 min on 2 CPU cores
    python examples/train_math_ranker.py --model <hub id or folder> --train-prompts 400 --num-candidates 16

It splits reasoning-gym arithmetic problems into train / validation / test prompts, samples N candidates per
prompt and labels them with the math verifier (`collect_candidates`, resumable), trains a ranker on the train
candidates (validation accuracy is logged every epoch), and prints the selection accuracy on the test candidates
of first sample, majority vote, mean log-prob, self-certainty, the ranker and the oracle at every N. It saves the
ranker with a model card and answers one test prompt with `model.generate(..., ranker=ranker)`.
"""

from __future__ import annotations

from _common import run_task_example

from hf_language_ranker.evaluation.experiment import Preset

PRESET = Preset(
    task="arithmetic", train_prompts=60, validation_prompts=20, test_prompts=40, eval_candidates=8, max_new_tokens=40
)

if __name__ == "__main__":
    run_task_example(__doc__, PRESET, output_dir="runs/examples/math")
