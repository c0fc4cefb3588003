"""Train a Language Ranker for HumanEval with the sandboxed code verifier.

    python examples/train_code_ranker.py   # embedded SmolLM2-135M-Instruct: about 15 min on 2 CPU cores
    python examples/train_code_ranker.py --model <hub id or folder> --train-prompts 90 --max-new-tokens 384

The same flow as `train_math_ranker.py` on HumanEval: every candidate's code runs against the problem's unit
tests in a sandbox (a subprocess with time, memory and process limits) and is labelled 1 only if all pass. Be
aware that a 135M model rarely passes a HumanEval problem, so with the default model nearly every label is 0 and
the ranker has little to learn (prompts without a correct candidate are skipped in training): with the embedded
model this example shows the mechanics. Pass a stronger code model with --model for a meaningful ranker.
"""

from __future__ import annotations

from _common import run_task_example

from hf_language_ranker.evaluation.experiment import Preset

PRESET = Preset(
    task="humaneval", train_prompts=40, validation_prompts=10, test_prompts=20, eval_candidates=4, max_new_tokens=160
)

if __name__ == "__main__":
    run_task_example(__doc__, PRESET, output_dir="runs/examples/code")
