"""Task mixtures: one candidate dataset drawn evenly from several tasks' collections, for a ranker that serves them all.

A ranker trained on one task is a specialist; trained on a balanced mixture it learns what "right" looks like in the
model's hidden states across tasks. `mix_tasks` builds such a split from per-task collections (the same layout,
the same number of candidates per prompt) and `check_disjoint_prompts` guards the train / validation / test
separation that every honest comparison rests on.
"""

from __future__ import annotations

from collections.abc import Mapping

from datasets import Dataset, concatenate_datasets

from .candidates import PROMPT

__all__ = ["TASK_COLUMN", "check_disjoint_prompts", "mix_tasks"]

#: The column naming each prompt's task in a mixed dataset.
TASK_COLUMN = "task"


def mix_tasks(datasets: Mapping[str, Dataset], *, prompts_per_task: int | None = None, seed: int = 0) -> Dataset:
    """The same number of prompts from every task's candidate dataset, tagged with their task and shuffled.

    Args:
        datasets: task name -> a candidate dataset (`collect_candidates` layout); all with the same columns and
            number of candidates per prompt.
        prompts_per_task: prompts drawn from each task (default: as many as the smallest task has), so no task
            outweighs another in training or in a validation score.
        seed: which prompts are drawn (when a task has more) and the order of the mixed rows.
    """
    if not datasets:
        raise ValueError("mix_tasks needs at least one task's dataset.")
    names = list(datasets)
    first = datasets[names[0]]
    for name in names[1:]:
        if datasets[name].features != first.features:
            raise ValueError(
                f"Task {name!r} has another layout than {names[0]!r} (columns, layers or candidates per prompt "
                "differ): mix collections made with the same layers and number of candidates."
            )
    smallest = min(len(dataset) for dataset in datasets.values())
    count = smallest if prompts_per_task is None else prompts_per_task
    if count < 1 or count > smallest:
        sizes = {name: len(dataset) for name, dataset in datasets.items()}
        raise ValueError(
            f"prompts_per_task must be between 1 and the smallest task's size; got {count}, sizes {sizes}."
        )
    parts = []
    for name in names:
        dataset = datasets[name].shuffle(seed=seed).select(range(count)).flatten_indices()
        if TASK_COLUMN in dataset.column_names:
            dataset = dataset.remove_columns(TASK_COLUMN)
        parts.append(dataset.add_column(TASK_COLUMN, [name] * count))
    mixed = concatenate_datasets(parts).shuffle(seed=seed).flatten_indices()
    mixed.info.description = first.info.description  # the collection's settings (CollectionInfo), shared by all
    return mixed


def check_disjoint_prompts(splits: Mapping[str, Dataset]) -> None:
    """Raise if a prompt text appears in two splits (e.g. ``{"train": ..., "validation": ..., "test": ...}``)."""
    seen: dict[str, str] = {}
    for split, dataset in splits.items():
        for prompt in dataset[PROMPT]:
            other = seen.setdefault(prompt, split)
            if other != split:
                raise ValueError(f"Prompt {prompt[:80]!r} is in both the {other!r} and the {split!r} split.")
