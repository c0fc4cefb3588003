"""Train a Language Ranker for function calling on BFCL v4 "simple" with the tool-call verifier.

    python examples/train_tool_ranker.py   # embedded SmolLM2-135M-Instruct: about 10 min on 2 CPU cores
    python examples/train_tool_ranker.py --model <hub id or folder> --train-prompts 200 --num-candidates 16

The same flow as `train_math_ranker.py` on BFCL simple (Python): each prompt lists one function's JSON schema and
a question, a candidate is parsed as a Python list of calls and labelled 1 when it matches one of BFCL's possible
answers (function name, required arguments, allowed values).
"""

from __future__ import annotations

from _common import run_task_example

from hf_language_ranker.evaluation.experiment import Preset

PRESET = Preset(
    task="bfcl_simple", train_prompts=40, validation_prompts=10, test_prompts=20, eval_candidates=8, max_new_tokens=48
)

if __name__ == "__main__":
    run_task_example(__doc__, PRESET, output_dir="runs/examples/tools")
