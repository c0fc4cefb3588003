"""Task mixtures: balanced per task, tagged, deterministic, and splits that never share a prompt."""

from __future__ import annotations

from collections import Counter

import pytest
from test_evaluation import synthetic_dataset

from hf_language_ranker.candidates import CollectionInfo
from hf_language_ranker.mixture import TASK_COLUMN, check_disjoint_prompts, mix_tasks


def task_dataset(task: str, num_prompts: int, seed: int = 0, n: int = 8):
    """A synthetic candidate dataset whose prompts name their task (so tasks never share a prompt)."""
    dataset = synthetic_dataset(num_prompts, n=n, seed=seed)
    return dataset.map(lambda row: {"prompt": f"[{task}] {row['prompt']}"})


def test_every_task_gives_as_many_prompts_as_the_smallest():
    mixed = mix_tasks({"a": task_dataset("a", 30), "b": task_dataset("b", 12, 1), "c": task_dataset("c", 20, 2)})
    assert Counter(mixed[TASK_COLUMN]) == {"a": 12, "b": 12, "c": 12}
    for row in mixed:  # each row keeps its own task's prompt and features
        assert row["prompt"].startswith(f"[{row[TASK_COLUMN]}]")
    assert mixed[TASK_COLUMN][:12] != ["a"] * 12  # rows are shuffled, not task after task


def test_prompts_per_task_and_seed():
    tasks = {"a": task_dataset("a", 30), "b": task_dataset("b", 30, 1)}
    mixed = mix_tasks(tasks, prompts_per_task=5, seed=3)
    assert Counter(mixed[TASK_COLUMN]) == {"a": 5, "b": 5}
    assert mixed["prompt"] == mix_tasks(tasks, prompts_per_task=5, seed=3)["prompt"]
    assert set(mixed["prompt"]) != set(mix_tasks(tasks, prompts_per_task=5, seed=4)["prompt"])


def test_collection_info_survives_mixing():
    dataset = task_dataset("a", 10)
    info = CollectionInfo(
        model="m",
        model_type="llama",
        hidden_size=16,
        num_hidden_layers=4,
        layers=[1, 3],
        num_candidates=8,
        verifier="math",
        generation={},
    )
    dataset.info.description = info.to_json()
    other = task_dataset("b", 10, 1)
    other.info.description = info.to_json()
    assert CollectionInfo.from_dataset(mix_tasks({"a": dataset, "b": other})) == info


@pytest.mark.parametrize(
    ("tasks", "options", "message"),
    [
        ({}, {}, "at least one task"),
        ({"a": 8, "b": 16}, {}, "another layout"),
        ({"a": 8, "b": 8}, {"prompts_per_task": 11}, "between 1 and the smallest"),
        ({"a": 8, "b": 8}, {"prompts_per_task": 0}, "between 1 and the smallest"),
    ],
)
def test_bad_mixtures_are_refused(tasks, options, message):
    datasets = {name: task_dataset(name, 10, n=n) for name, n in tasks.items()}
    with pytest.raises(ValueError, match=message):
        mix_tasks(datasets, **options)


def test_splits_sharing_a_prompt_are_refused():
    train, test = task_dataset("a", 10), task_dataset("a", 10, 1)
    check_disjoint_prompts({"train": task_dataset("a", 10), "test": task_dataset("b", 10)})
    with pytest.raises(ValueError, match="both the 'train' and the 'test' split"):
        check_disjoint_prompts({"train": train, "test": test})
