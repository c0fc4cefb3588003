"""The demo's first part: the shipped ranker against majority vote of the same candidates on fresh prompts.

A tiny model and a tiny ranker stand in for the embedded SmolLM2 and its shipped ranker; the pipeline that
follows is stubbed (tests/test_cli.py runs it)."""

from __future__ import annotations

import json
import types

import pytest
import torch

from hf_language_ranker import LanguageRanker
from hf_language_ranker.cli import main
from hf_language_ranker.configuration import RankerConfig
from hf_language_ranker.evaluation import paired_bootstrap
from hf_language_ranker.evaluation.shipped import SHIPPED_JSON, fresh_prompts

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def embedded_is_tiny(tiny_model_dir, tmp_path, monkeypatch):
    """The embedded model and its shipped ranker are a tiny Llama and a tiny ranker; the pipeline prints a mark."""
    import hf_language_ranker.embedded as embedded
    import hf_language_ranker.evaluation.experiment as experiment

    config = RankerConfig(
        hidden_size=32,
        num_hidden_layers=4,
        feature_layer=2,
        model_type="llama",
        answer_extractor="math",
        selection="weighted_vote",
        use_vote_share=True,
        use_mean_log_prob=True,
    )
    torch.manual_seed(0)
    LanguageRanker(config).save_pretrained(tmp_path / "shipped")
    load = embedded.load_model_and_tokenizer
    monkeypatch.setattr(
        embedded, "load_model_and_tokenizer", lambda name=None, **kw: load(name or tiny_model_dir, **kw)
    )
    monkeypatch.setattr(embedded, "embedded_default_ranker", lambda: tmp_path / "shipped")
    stub = types.SimpleNamespace(summary=lambda: "PIPELINE", example=None, files={})
    monkeypatch.setattr(experiment, "run_experiment", lambda *args, **kwargs: print("PIPELINE RUNS") or stub)
    return tmp_path / "shipped"


def test_demo_compares_the_shipped_ranker_with_majority_vote_first(embedded_is_tiny, tmp_path, capsys):
    output_dir = tmp_path / "demo"
    assert main(["demo", "--shipped-prompts", "3", "--output-dir", str(output_dir)]) == 0
    printed = capsys.readouterr().out
    assert "on 3 fresh arithmetic prompts" in printed and "ranker − majority vote" in printed
    assert "majority vote of the same candidates" in printed and "oracle (pass@16)" in printed
    assert " won, " in printed and "e.g. Calculate" in printed
    assert printed.index("ranker − majority vote") < printed.index("PIPELINE RUNS")
    results = json.loads((output_dir / SHIPPED_JSON).read_text())
    assert results["num_prompts"] == 3 and results["sampling"]["num_candidates"] == 16
    assert results["ranker"] == str(embedded_is_tiny) and results["ranker_selection"] == "weighted_vote"
    outcomes = results["per_prompt"]
    assert set(outcomes) == {"shipped ranker", "majority vote"} and all(len(v) == 3 for v in outcomes.values())
    for name, values in outcomes.items():
        assert results["accuracy"][name] == sum(values) / 3
    difference = paired_bootstrap(outcomes["shipped ranker"], outcomes["majority vote"])
    assert results["difference"] == {
        "difference": difference.difference,
        "low": difference.low,
        "high": difference.high,
        "wins": difference.wins,
        "losses": difference.losses,
    }
    example = results["example"]
    assert example["prompt"].startswith("Calculate") and {"shipped ranker", "majority vote"} <= set(example)


def test_demo_skips_the_shipped_ranker_with_0_prompts_or_another_model(
    embedded_is_tiny, tiny_model_dir, tmp_path, capsys, monkeypatch
):
    import hf_language_ranker.evaluation.shipped as shipped

    monkeypatch.setattr(shipped, "compare_with_majority_vote", lambda *a, **k: pytest.fail("compared"))
    assert main(["demo", "--shipped-prompts", "0", "--output-dir", str(tmp_path / "zero")]) == 0
    printed = capsys.readouterr().out
    assert "Shipped ranker" not in printed and "PIPELINE RUNS" in printed
    assert not (tmp_path / "zero" / SHIPPED_JSON).exists()
    assert main(["demo", "--model", str(tiny_model_dir), "--output-dir", str(tmp_path / "other")]) == 0
    printed = capsys.readouterr().out
    notes = [line for line in printed.splitlines() if "Shipped ranker" in line]
    assert len(notes) == 1 and "skipped" in notes[0] and "--model" in notes[0] and "PIPELINE RUNS" in printed
    assert not (tmp_path / "other" / SHIPPED_JSON).exists()
    with pytest.raises(SystemExit):
        main(["demo", "--shipped-prompts", "-1"])
    assert "expected an integer >= 0" in capsys.readouterr().err


def test_demo_without_the_shipped_ranker_says_so_and_runs_the_pipeline(embedded_is_tiny, tmp_path, capsys, monkeypatch):
    import hf_language_ranker.embedded as embedded

    def missing():
        raise FileNotFoundError("The ranker shipped for the embedded model is not at somewhere.")

    monkeypatch.setattr(embedded, "embedded_default_ranker", missing)
    assert main(["demo", "--shipped-prompts", "2", "--output-dir", str(tmp_path / "none")]) == 0
    printed = capsys.readouterr().out
    assert "Shipped ranker: skipped. The ranker shipped" in printed and "PIPELINE RUNS" in printed


def test_fresh_prompts_are_none_the_shipped_rankers_or_the_demo_saw():
    from hf_language_ranker.evaluation.experiment import PRESETS, task_splits

    fresh = fresh_prompts("arithmetic", 30)
    assert len(fresh) == len({row["prompt"] for row in fresh}) == 30 and fresh == fresh_prompts("arithmetic", 30)
    for preset in ("arithmetic", "demo"):
        seen = {row["prompt"] for rows in task_splits(PRESETS[preset]).values() for row in rows}
        assert not seen & {row["prompt"] for row in fresh}, preset
