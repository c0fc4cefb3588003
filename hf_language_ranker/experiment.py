"""Compatibility path: the evaluation protocol now lives in `hf_language_ranker.evaluation.experiment`."""

from __future__ import annotations

from .evaluation.experiment import (
    CHOSEN,
    COMPARED_WITH,
    PRESETS,
    RANKER_VARIANTS,
    SPLITS,
    ExperimentOutputs,
    Preset,
    TrainedScorers,
    collect_splits,
    greedy_decode,
    preset_from,
    preset_json,
    run_experiment,
    selection_row,
    task_splits,
)

__all__ = [
    "CHOSEN",
    "COMPARED_WITH",
    "ExperimentOutputs",
    "PRESETS",
    "Preset",
    "RANKER_VARIANTS",
    "SPLITS",
    "TrainedScorers",
    "collect_splits",
    "greedy_decode",
    "preset_from",
    "preset_json",
    "run_experiment",
    "selection_row",
    "task_splits",
]
