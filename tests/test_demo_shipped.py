"""``hf-language-ranker demo``: the released ranker on committed collections, the own-task protocol in small, and
ranked generate live; ``--full`` runs the pipeline instead.

Parts 1 and 2 read the real committed collections (no LLM); part 3 runs a tiny model and a tiny ranker in place of
the embedded SmolLM2 and its released ranker."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch
from conftest import BOTH_AUTO_DTYPES

from hf_language_ranker import LanguageRanker, demo
from hf_language_ranker.cli import main
from hf_language_ranker.configuration import RankerConfig
from hf_language_ranker.evaluation import paired_bootstrap
from hf_language_ranker.evaluation.shipped import SHOWN_ANSWERS, PromptPicks, fresh_prompts

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_parts_1_and_2_score_the_committed_collections_without_an_llm(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(demo, "load_model_and_tokenizer", lambda *a, **k: pytest.fail("loaded an LLM"))
    monkeypatch.setattr(demo, "OWN_TASK_VARIANTS", demo.OWN_TASK_VARIANTS[1:2])  # one variant, 2 folds: quicker
    monkeypatch.setattr(demo, "OWN_TASK_FOLDS", 2)
    output_dir = tmp_path / "demo"
    assert main(["demo", "--live-prompts", "0", "--output-dir", str(output_dir)]) == 0
    printed = capsys.readouterr().out
    assert printed.index("1. The released ranker") < printed.index("2. Your own task") and "Demo finished in" in printed
    assert "3. Ranked generate" not in printed

    released = json.loads((output_dir / "released_ranker.json").read_text())
    assert released["ranker"] == "smollm2-135m-instruct-mixture" and released["selection"] == "weighted_vote"
    assert [task["task"] for task in released["tasks"]] == list(demo.DEMO_TASKS)
    pooled = {method: [] for method in ("ranker", "majority vote", "oracle (pass@N)")}
    for task in released["tasks"]:
        outcomes = released["per_prompt"][task["task"]]
        for method, values in outcomes.items():
            assert task["accuracy"][method] == pytest.approx(np.mean(values)) and len(values) == task["num_prompts"]
            pooled[method] += values
        assert all(oracle >= pick for oracle, pick in zip(outcomes["oracle (pass@N)"], outcomes["ranker"]))
        row = f"{task['task']:<18} {task['num_prompts']:>7} {task['accuracy']['ranker']:>7.3f}"
        assert row in printed
    difference = paired_bootstrap(pooled["ranker"], pooled["majority vote"])
    assert released["pooled"]["difference"]["difference"] == pytest.approx(difference.difference)
    assert str(difference) in printed

    own = json.loads((output_dir / "own_task.json").read_text())
    chosen = LanguageRanker.from_pretrained(output_dir / "own_task_ranker")
    assert chosen.config.feature_layer == 12 and chosen.config.selection in ("argmax", "weighted_vote")
    assert f"chosen ranker {own['accuracy']['chosen ranker']['16']:.3f}" in printed
    assert "chosen − majority vote: " in printed and "hf-language-ranker evaluate --train-dataset" in printed


@pytest.fixture
def embedded_is_tiny(tiny_model_dir, tmp_path, monkeypatch):
    """The embedded model and its released ranker are a tiny Llama and a tiny ranker trained on bfloat16."""
    config = RankerConfig(
        hidden_size=32,
        num_hidden_layers=4,
        feature_layer=2,
        model_type="llama",
        answer_extractor="math",
        selection="weighted_vote",
        use_vote_share=True,
        use_mean_log_prob=True,
        model_dtype="bfloat16",
    )
    torch.manual_seed(0)
    LanguageRanker(config).save_pretrained(tmp_path / "released")
    load = demo.load_model_and_tokenizer
    loaded = []
    monkeypatch.setattr(
        demo, "load_model_and_tokenizer", lambda name, **kw: loaded.append(load(tiny_model_dir, **kw)) or loaded[-1]
    )
    monkeypatch.setattr(demo, "embedded_default_ranker", lambda: tmp_path / "released")
    return loaded


@BOTH_AUTO_DTYPES
def test_part_3_shows_each_prompts_answers_and_both_picks(embedded_is_tiny, tmp_path, capsys, auto_resolves_to):
    output_dir = tmp_path / "demo"
    arguments = ["demo", "--collections", str(tmp_path / "absent"), "--live-prompts", "4"]
    assert main([*arguments, "--output-dir", str(output_dir)]) == 0
    printed = capsys.readouterr().out
    assert "Parts 1 and 2 skipped" in printed and "3. Ranked generate live on 4 fresh prompts" in printed
    # the ranker was trained on bfloat16 features: served so where the CPU computes it natively, else said plainly
    model = embedded_is_tiny[0][0]
    assert model.dtype == auto_resolves_to
    assert ("does not compute natively" in printed) == (auto_resolves_to == torch.float32)
    live = json.loads((output_dir / "live.json").read_text())
    assert live["num_prompts"] == 4 and [row["prompt"] for row in live["prompts"]][:3] == [
        fresh_prompts(task, 2)[0]["prompt"] for task in demo.LIVE_TASKS
    ]
    for row, ranker_right, majority_right in zip(
        live["prompts"], live["per_prompt"]["ranker"], live["per_prompt"]["majority vote"]
    ):
        assert len(row["answers"]) == len(row["weights"]) == 16 and sum(row["weights"]) == pytest.approx(1, abs=1e-4)
        assert row["correct"][row["ranker_index"]] == ranker_right
        assert row["correct"][row["majority_index"]] == majority_right
    blocks = printed.split("(reference: ")[1:]
    assert len(blocks) == 4
    for block in blocks:
        assert " votes  weight " in block and "<- " in block and "-> ranker: " in block


def test_a_prompts_view_lists_the_top_answers_and_always_both_picks():
    answers = ["7", "7", "7", "8", "8", "9", "10", "11", "12", None]
    picks = PromptPicks(
        prompt="Add 3 and 4.",
        reference="7",
        answers=answers,
        weights=[0.2, 0.2, 0.2, 0.1, 0.1, 0.06, 0.05, 0.05, 0.01, 0.03],
        correct=[answer == "7" for answer in answers],
        texts=[str(answer) for answer in answers],
        ranker_index=8,  # "12": one vote, the least weight, beyond the top answers
        majority_index=0,
    )
    assert picks.answer_table()[:2] == [("7", 3, pytest.approx(0.6), True), ("8", 2, pytest.approx(0.2), False)]
    lines = picks.render().splitlines()
    assert lines[0] == "Add 3 and 4.   (reference: 7)" and lines[-1] == "    -> ranker: wrong, majority vote: right"
    rows = [line.split()[0] for line in lines[1:-2]]
    assert rows[:2] == ["7", "8"] and rows[-1] == "12" and len(rows) == SHOWN_ANSWERS + 1
    assert lines[1].endswith("<- majority vote") and "weight 0.01  wrong   <- ranker" in lines[-3]
    assert lines[-2].startswith("    2 more answers: 2 votes")


def test_full_runs_the_pipeline_and_model_needs_full(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import hf_language_ranker.evaluation.experiment as experiment

    stub = types.SimpleNamespace(summary=lambda: "PIPELINE", example=None, files={})
    monkeypatch.setattr(experiment, "run_experiment", lambda *args, **kwargs: print("PIPELINE RUNS") or stub)
    monkeypatch.setattr(demo, "run_quick_demo", lambda *a, **k: pytest.fail("ran the quick demo"))
    assert main(["demo", "--full", "--model", str(tiny_model_dir), "--output-dir", str(tmp_path / "full")]) == 0
    assert "PIPELINE RUNS" in capsys.readouterr().out
    assert main(["demo", "--model", str(tiny_model_dir)]) == 2
    assert "--model needs --full" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--live-prompts", "-1"])
    assert "expected an integer >= 0" in capsys.readouterr().err


def test_fresh_prompts_are_none_the_shipped_rankers_or_the_demo_saw():
    from hf_language_ranker.evaluation.experiment import PRESETS, task_splits

    fresh = fresh_prompts("arithmetic", 30)
    assert len(fresh) == len({row["prompt"] for row in fresh}) == 30 and fresh == fresh_prompts("arithmetic", 30)
    for preset in ("arithmetic", "demo"):
        seen = {row["prompt"] for rows in task_splits(PRESETS[preset]).values() for row in rows}
        assert not seen & {row["prompt"] for row in fresh}, preset
