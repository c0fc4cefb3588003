"""Both released rankers score fixed committed candidates as they did when this file's reference was written, so a
refactor that moves code cannot move a score (≤ 1e-6).

The reference, ``tests/data/shipped_scores.json``, holds their scores of a fixed input (seeded features at the
hidden-state scale of SmolLM2-135M, log-probs and answers) computed by this module's `scores` at commit 981f1f0;
rewrite it only for a deliberate change of what a released ranker computes:
``python tests/test_shipped_scores.py --write``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_language_ranker import LanguageRanker

REFERENCE = Path(__file__).with_name("data") / "shipped_scores.json"
RANKERS = ["smollm2-135m-instruct-arithmetic", "smollm2-135m-instruct-mixture"]
PROMPTS, N, HIDDEN = 4, 8, 576


def scores(name: str) -> np.ndarray:
    """``[PROMPTS, N]`` scores of the released ranker ``name`` on the fixed input (the last row has 5 candidates)."""
    generator = np.random.default_rng(0)
    prompts = torch.from_numpy(generator.normal(0, 2, (PROMPTS, HIDDEN)).astype(np.float32))
    candidates = torch.from_numpy(generator.normal(0, 2, (PROMPTS, N, HIDDEN)).astype(np.float32))
    log_probs = torch.from_numpy(generator.uniform(-2, 0, (PROMPTS, N)).astype(np.float32))
    answer_ids = torch.from_numpy(generator.integers(0, 3, (PROMPTS, N)))
    mask = torch.ones(PROMPTS, N, dtype=torch.bool)
    mask[-1, 5:] = False
    ranker = LanguageRanker.from_pretrained(name)
    with torch.no_grad():
        output = ranker(prompts, candidates, mask, mean_log_probs=log_probs, answer_ids=answer_ids)
    return output.scores.numpy().astype(np.float64)


@pytest.mark.parametrize("name", RANKERS)
def test_released_rankers_score_as_they_did(name):
    expected = np.asarray(json.loads(REFERENCE.read_text())[name], dtype=np.float64)
    np.testing.assert_allclose(scores(name), expected, rtol=0, atol=1e-6)  # masked slots: -inf in both


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    REFERENCE.write_text(json.dumps({name: scores(name).tolist() for name in RANKERS}, indent=1) + "\n")
