"""Candidate collection with a tiny random Llama and the tests' char-level tokenizer, offline.

The tests import the helpers and also run this file as a subprocess (plain, or under ``accelerate launch``)::

    python tests/collection_worker.py OUTPUT_DIR --num-prompts 24 --shard-size 4 [--verifier-delay 0.03]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from datasets import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import TOKENIZER_CHARACTERS, build_model, build_tokenizer  # noqa: E402

from hf_language_ranker.collection import collect_candidates  # noqa: E402

#: The settings every collection in the tests shares (a resumed run must use the same ones).
SETTINGS: dict[str, Any] = dict(num_candidates=4, layers=[2, -1], batch_size=2, max_new_tokens=6, seed=0)

#: Seconds the verifier sleeps per candidate, so a test can kill a run in the middle.
verifier_delay = 0.0
verifier_calls = 0


def make_prompts(count: int) -> list[str]:
    """Deterministic prompts of 2..6 characters."""
    letters = TOKENIZER_CHARACTERS.strip()
    return [
        "".join(letters[(7 * index + 3 * position) % len(letters)] for position in range(2 + index % 5))
        for index in range(count)
    ]


def contains_a(prompt: str, candidate: str) -> bool:
    """Toy verifier: a candidate is correct if it contains the letter 'a'."""
    global verifier_calls
    verifier_calls += 1
    time.sleep(verifier_delay)
    return "a" in candidate


def collect(output_dir: str | os.PathLike, num_prompts: int, **overrides: Any) -> Dataset:
    """Collect `make_prompts(num_prompts)` with the shared settings."""
    settings = {**SETTINGS, "shard_size": 4, **overrides}
    return collect_candidates(
        build_model("llama"),
        build_tokenizer(),
        make_prompts(num_prompts),
        contains_a,
        output_dir=output_dir,
        **settings,
    )


def main() -> None:
    global verifier_delay
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("output_dir")
    parser.add_argument("--num-prompts", type=int, default=40)
    parser.add_argument("--shard-size", type=int, default=4)
    parser.add_argument("--verifier-delay", type=float, default=0.0)
    args = parser.parse_args()
    verifier_delay = args.verifier_delay
    dataset = collect(args.output_dir, args.num_prompts, shard_size=args.shard_size)
    print(f"collected {len(dataset)} prompts", flush=True)


if __name__ == "__main__":
    main()
