"""The training examples run end to end on a tiny random model and tiny sizes, as a newcomer would run them.

The tiny model answers nonsense, so every label is 0: these tests check the mechanics (collection, training,
comparison, saving, ranked generation), not the quality of the rankers.
"""

from __future__ import annotations

import importlib

import pytest
from conftest import ROOT, build_model, run_example
from datasets import Dataset, Features, List, Value
from huggingface_hub import ModelCard

from hf_language_ranker import LanguageRanker

TINY = ["--train-prompts", "6", "--validation-prompts", "2", "--test-prompts", "2", "--num-candidates", "3"]
TINY += ["--max-new-tokens", "3", "--epochs", "1"]


def run_tiny(name: str, model_dir, output_dir, *args: str) -> str:
    return run_example(name, "--model", str(model_dir), "--output-dir", str(output_dir), *TINY, *args)


def load_ranker(folder) -> LanguageRanker:
    ranker = LanguageRanker.from_pretrained(folder)
    ranker.check_fits(build_model("llama"))
    return ranker


def test_math_example_compares_saves_and_generates(tiny_model_dir, tmp_path):
    output = run_tiny("train_math_ranker.py", tiny_model_dir, tmp_path)
    assert "| first sample |" in output and "| Language Ranker |" in output
    assert "Held-out accuracy with N=3: first sample" in output
    assert "model.generate(..., ranker=ranker, num_candidates=3) chose candidate" in output
    assert str(tmp_path / "ranker") in output and (tmp_path / "evaluation.json").is_file()
    load_ranker(tmp_path / "ranker")
    card = ModelCard.load(tmp_path / "ranker" / "README.md")
    metrics = {result.metric_name for result in card.data.eval_results}
    assert {"Language Ranker accuracy@3", "first sample accuracy@3", "oracle (pass@N) accuracy@3"} <= metrics
    assert "- labels: math verifier on arithmetic" in card.text


@pytest.mark.parametrize(
    ("name", "dataset"),
    [
        ("train_code_ranker.py", "openai/openai_humaneval"),
        ("train_tool_ranker.py", "gorilla-llm/Berkeley-Function-Calling-Leaderboard"),
    ],
)
def test_code_and_tool_examples_run(tiny_model_dir, tmp_path, name, dataset):
    output = run_tiny(name, tiny_model_dir, tmp_path)
    assert "Held-out accuracy with N=3" in output
    load_ranker(tmp_path / "ranker")
    assert ModelCard.load(tmp_path / "ranker" / "README.md").data.datasets == [dataset]


def test_personalization_prints_both_rankers_choices(tiny_model_dir, tmp_path):
    output = run_tiny("personalization.py", tiny_model_dir, tmp_path, "--show", "2")
    for row in ("| first sample |", "| correct |", "| concise |"):
        assert row in output
    lines = output.splitlines()
    assert sum(line.strip().startswith("correct -> candidate") for line in lines) == 2
    assert sum(line.strip().startswith("concise -> candidate") for line in lines) == 2
    assert sum("chose the same candidate" in line or "choices differ" in line for line in lines) == 2
    for name in ("correct", "concise"):
        load_ranker(tmp_path / f"ranker-{name}")
        assert "- labels: " in ModelCard.load(tmp_path / f"ranker-{name}" / "README.md").text


def test_concise_labels_keep_short_correct_answers(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    personalization = importlib.import_module("personalization")
    features = Features({"labels": List(Value("float32"), length=4), "lengths": List(Value("int32"), length=4)})
    dataset = Dataset.from_dict(
        {"labels": [[1, 1, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0]], "lengths": [[10, 5, 20, 3], [1, 2, 3, 4], [9, 9, 1, 1]]},
        features=features,
    )
    relabelled = personalization.relabel(dataset)
    assert relabelled["labels"] == [[1, 1, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]]
    assert relabelled.features == features and relabelled["lengths"] == dataset["lengths"]
