"""The Hub `custom_generate` folder works through transformers' loader, without the installed library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPO = ROOT / "hub" / "language-ranker-generate"

SCRIPT = r"""
import sys, json, torch
sys.path.insert(0, {tests!r})


class BlockLibrary:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "hf_language_ranker":
            raise ImportError("hf_language_ranker must not be imported by the custom_generate repo")


sys.meta_path.insert(0, BlockLibrary())
from conftest import build_model, left_padded_prompts

model = build_model("llama")
input_ids, attention_mask = left_padded_prompts()
torch.manual_seed(0)
plain = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=3, do_sample=False)
torch.manual_seed(0)
same = model.generate(
    input_ids, attention_mask=attention_mask, max_new_tokens=3, do_sample=False,
    custom_generate={repo!r}, trust_remote_code=True,
)
torch.manual_seed(0)
out = model.generate(
    inputs=input_ids, attention_mask=attention_mask, max_new_tokens=4, custom_generate={repo!r},
    trust_remote_code=True, ranker={ranker!r}, num_candidates=3, return_dict_in_generate=True,
)
print(json.dumps({{
    "plain_unchanged": bool(torch.equal(plain, same)),
    "candidates": list(out.candidate_sequences.shape),
    "scores": out.candidate_scores.tolist(),
    "best": out.best_indices.tolist(),
    "sequences_match": bool(torch.equal(out.sequences, out.candidate_sequences[torch.arange(3), out.best_indices])),
    "library_loaded": any(name.startswith("hf_language_ranker") for name in sys.modules),
}}))
"""


def test_custom_generate_repo_ranks_without_the_library(tmp_path):
    import json

    import torch
    from conftest import build_model, left_padded_prompts

    from hf_language_ranker import LanguageRanker, attach_ranker

    model = attach_ranker(build_model("llama"))
    torch.manual_seed(0)
    ranker = LanguageRanker.for_model(model)
    ranker.save_pretrained(tmp_path / "ranker")
    script = SCRIPT.format(tests=str(ROOT / "tests"), repo=str(REPO), ranker=str(tmp_path / "ranker"))
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf_home")}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["plain_unchanged"] and not report["library_loaded"]
    assert report["candidates"][:2] == [3, 3] and report["sequences_match"]

    # the same seed through the installed library gives the same candidates and scores
    input_ids, attention_mask = left_padded_prompts()
    torch.manual_seed(0)
    expected = model.generate(
        input_ids,
        attention_mask=attention_mask,
        max_new_tokens=4,
        ranker=ranker,
        num_candidates=3,
        return_dict_in_generate=True,
    )
    assert torch.allclose(torch.tensor(report["scores"]), expected.candidate_scores, atol=1e-5)
    assert report["best"] == expected.best_indices.tolist()
