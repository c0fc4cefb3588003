"""What a released ranker is worth, shown two ways: on committed candidate collections, and live.

`compare_on_collections` scores test collections that `collect` wrote (no LLM): the ranker's pick against majority
vote of the same candidates and the oracle, per task and pooled, with paired bootstrap intervals.
`compare_with_majority_vote` samples fresh prompts with ranked `generate` and keeps, per prompt, every candidate's
parsed answer and ranker weight (`PromptPicks`), so each prompt prints compactly: the distinct answers with their
votes and weight, majority vote's pick, the ranker's pick, and which is right. The demo and the quickstart use both.

    comparison = compare_on_collections(ranker, {"addition": load_collection(".../addition/test/dataset")})
    print(comparison.summary())
    live = compare_with_majority_vote(model, tokenizer, ranker, fresh_prompts("addition", 3))
    print(live.summary())
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..candidates import ANSWERS, LABELS, MEAN_LOG_PROBS, CollectionInfo, correct_candidates, num_candidates
from ..prompts import encode_prompts, resolve_chat_template
from ..verifiers import as_verifier
from .accuracy import evaluate
from .baselines import MAJORITY_VOTE, ORACLE, majority_vote_choices
from .scorers import RankerScorer
from .statistics import PairedDifference, paired_bootstrap

#: seed of the fresh prompts. The shipped rankers' train / validation / test prompts are the seed-0 draws of the
#: presets (benchmarks/mixture_collect.py: prefixes of `task_splits`); its screening drew seed 101
FRESH_SEED = 7
#: sampling of the shipped rankers' training data (benchmarks/mixture_collect.py SAMPLING and test CANDIDATES)
SHIPPED_SAMPLING = {"num_candidates": 16, "max_new_tokens": 64, "temperature": 0.8, "top_p": 1.0}
RANKER_PICK = "ranker"
#: answers listed per prompt by `PromptPicks.render`, besides the picked ones (the rest are summed into one line)
SHOWN_ANSWERS = 4


def fresh_prompts(task: str, count: int, seed: int = FRESH_SEED) -> list[dict[str, Any]]:
    """``count`` prompts of ``task`` drawn with ``seed``, leaving out every prompt text of the seed-0 splits of the
    `arithmetic` preset's sizes (a superset of what the shipped rankers trained and were validated on; short
    expressions repeat across seeds, so a new seed alone is not enough)."""
    from ..tasks import load_task
    from .experiment import PRESETS, task_splits

    used = {row["prompt"] for rows in task_splits(replace(PRESETS["arithmetic"], task=task)).values() for row in rows}
    size = 2 * count + 20
    fresh = [row for row in load_task(task, size=size, seed=seed) if row["prompt"] not in used][:count]
    if len(fresh) < count:
        raise ValueError(f"Only {len(fresh)} of {size} {task} prompts drawn with seed {seed} are fresh; ask for fewer.")
    return fresh


class _JsonReport:
    """A dataclass result that writes itself as JSON."""

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")


# ------------------------------------------------------------------------------------------ committed collections
@dataclass
class TaskComparison:
    """The ranker's pick, majority vote and the oracle on one test collection, at N candidates."""

    task: str
    num_prompts: int
    accuracy: dict[str, float]
    difference: PairedDifference


@dataclass
class CollectionsComparison(_JsonReport):
    """`TaskComparison` per task and pooled over every prompt of them, with what the collections record."""

    ranker: str
    num_candidates: int
    selection: str
    collected_with: str
    tasks: list[TaskComparison]
    pooled: TaskComparison
    #: 0/1 correctness per prompt of the ranker's pick and majority vote's, task by task in prompt order
    per_prompt: dict[str, dict[str, list[int]]] = field(default_factory=dict)

    def summary(self) -> str:
        rows = [
            f"{self.ranker} on the committed test collections of {len(self.tasks)} tasks it was trained on "
            f"(N={self.num_candidates} candidates a prompt, {self.collected_with}; picks by {self.selection}):",
            f"  {'task':<18} {'prompts':>7} {'ranker':>7} {'majority':>9} {'oracle':>7}   ranker − majority vote "
            "(95% interval, prompts won/lost)",
        ]
        for row in [*self.tasks, self.pooled]:
            accuracy = row.accuracy
            rows.append(
                f"  {row.task:<18} {row.num_prompts:>7} {accuracy[RANKER_PICK]:>7.3f} {accuracy[MAJORITY_VOTE]:>9.3f} "
                f"{accuracy[ORACLE]:>7.3f}   {row.difference}"
            )
        return "\n".join(rows)


def compare_on_collections(
    ranker: Any, tests: Mapping[str, Dataset], *, n: int | None = None, name: str | None = None
) -> CollectionsComparison:
    """Score each test collection (``{task: dataset}``) with ``ranker`` under its own pick rule and compare with
    majority vote of the same first ``n`` candidates (default: the most every collection holds) and the oracle."""
    if not tests:
        raise ValueError("compare_on_collections needs at least one test collection.")
    n = n or min(num_candidates(dataset) for dataset in tests.values())
    selection = str(ranker.config.selection)
    scorer = RankerScorer.from_trained(ranker)
    tasks, per_prompt = [], {}
    for task, dataset in tests.items():
        result = evaluate(dataset, {RANKER_PICK: scorer}, ns=[n], selections={RANKER_PICK: selection})
        outcomes = {method: result.per_prompt[method][n] for method in (RANKER_PICK, MAJORITY_VOTE, ORACLE)}
        per_prompt[task] = outcomes
        tasks.append(_task_comparison(task, outcomes))
    pooled = {method: [value for task in per_prompt.values() for value in task[method]] for method in per_prompt[task]}
    infos = [CollectionInfo.from_dataset(dataset) for dataset in tests.values()]
    dtypes = sorted({info.model_dtype or "an unrecorded dtype" for info in infos})
    models = sorted({info.model or "an unrecorded model" for info in infos})
    return CollectionsComparison(
        ranker=name or str(ranker.config.base_model or "the ranker"),
        num_candidates=n,
        selection=selection,
        collected_with=f"sampled by {', '.join(models)} in {', '.join(dtypes)}",
        tasks=tasks,
        pooled=_task_comparison(f"all {len(tasks)} tasks", pooled),
        per_prompt=per_prompt,
    )


def _task_comparison(task: str, outcomes: Mapping[str, list[int]]) -> TaskComparison:
    accuracy = {method: float(np.mean(values)) for method, values in outcomes.items()}
    difference = paired_bootstrap(outcomes[RANKER_PICK], outcomes[MAJORITY_VOTE])
    return TaskComparison(task, len(outcomes[RANKER_PICK]), accuracy, difference)


# --------------------------------------------------------------------------------------------------- fresh prompts
@dataclass
class PromptPicks:
    """One prompt's candidates as the ranker and majority vote see them: parsed answers, ranker weights, picks."""

    prompt: str
    reference: str | None
    answers: list[str | None]
    #: softmax of the ranker's scores over the candidates (what the weighted vote sums per answer)
    weights: list[float]
    correct: list[bool]
    texts: list[str]
    ranker_index: int
    majority_index: int

    def answer_table(self) -> list[tuple[str | None, int, float, bool]]:
        """``(answer, votes, summed ranker weight, correct)`` per distinct answer, most voted first."""
        votes = Counter(self.answers)
        weight = Counter()
        for answer, value in zip(self.answers, self.weights):
            weight[answer] += value
        correct = {answer: is_correct for answer, is_correct in zip(self.answers, self.correct)}
        order = sorted(votes, key=lambda answer: (-votes[answer], -weight[answer]))
        return [(answer, votes[answer], weight[answer], correct[answer]) for answer in order]

    def render(self) -> str:
        """A few lines: the prompt, its distinct answers (votes, ranker weight, marks) and both picks' verdicts."""
        picks = {RANKER_PICK: self.ranker_index, MAJORITY_VOTE: self.majority_index}
        prompt = " ".join(self.prompt.split())
        lines = [f"{prompt[:150]}{'...' if len(prompt) > 150 else ''}   (reference: {self.reference})"]
        table = self.answer_table()
        picked = {self.answers[index] for index in picks.values()}
        shown = table[:SHOWN_ANSWERS] + [row for row in table[SHOWN_ANSWERS:] if row[0] in picked]
        for answer, votes, weight, correct in shown:
            marks = [kind for kind, index in picks.items() if self.answers[index] == answer]
            label = "(no answer)" if answer is None else str(answer)
            lines.append(
                f"    {label[:24]:<24} {votes:>2} votes  weight {weight:.2f}  {'right' if correct else 'wrong'}"
                + (f"   <- {' and '.join(marks)}" if marks else "")
            )
        rest = [row for row in table if row not in shown]
        if rest:
            lines.append(
                f"    {len(rest)} more answers: {sum(row[1] for row in rest)} votes, weight "
                f"{sum(row[2] for row in rest):.2f}"
            )
        verdicts = [f"{kind}: {'right' if self.correct[index] else 'wrong'}" for kind, index in picks.items()]
        lines.append(f"    -> {', '.join(verdicts)}")
        return "\n".join(lines)


@dataclass
class ShippedComparison(_JsonReport):
    """Ranker pick against majority vote of the same candidates on fresh prompts: accuracies, paired difference,
    and every prompt's `PromptPicks`."""

    ranker: str
    task: str
    seed: int
    num_prompts: int
    sampling: dict[str, Any]
    ranker_selection: str
    accuracy: dict[str, float]
    difference: PairedDifference
    #: 0/1 correctness of each pick (and of the oracle) per prompt, in prompt order
    per_prompt: dict[str, list[int]] = field(default_factory=dict)
    prompts: list[PromptPicks] = field(default_factory=list)

    def summary(self) -> str:
        n = self.sampling["num_candidates"]
        rows = [
            f"{self.ranker} on {self.num_prompts} fresh prompts ({self.task}, seed {self.seed}), N={n} candidates "
            f"each from ranked generate, picks by {self.ranker_selection}:",
            "",
        ]
        rows += [picks.render() + "\n" for picks in self.prompts]
        rows.append(
            f"Right: ranker {sum(self.per_prompt[RANKER_PICK])} of {self.num_prompts}, majority vote "
            f"{sum(self.per_prompt[MAJORITY_VOTE])}, at least one candidate "
            f"{round(self.accuracy[ORACLE] * self.num_prompts)}."
        )
        return "\n".join(rows)


def compare_with_majority_vote(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    ranker: Any,
    examples: list[dict[str, Any]],
    *,
    verifier: str = "math",
    num_candidates: int = SHIPPED_SAMPLING["num_candidates"],
    max_new_tokens: int = SHIPPED_SAMPLING["max_new_tokens"],
    temperature: float = SHIPPED_SAMPLING["temperature"],
    top_p: float = SHIPPED_SAMPLING["top_p"],
    batch_size: int = 4,
    seed: int = 0,
    task: str = "fresh prompts",
    prompt_seed: int = FRESH_SEED,
    name: str = "ranker",
) -> ShippedComparison:
    """Ranked `generate` with ``ranker`` on ``examples``; label its pick and majority vote's pick of the same
    candidates with ``verifier``. Majority vote parses answers with the verifier (as collection does); ties between
    equally common answers go to the earliest candidate (ranked generate returns no log-probs to break them).
    ``task``, ``prompt_seed`` and ``name`` (the ranker's name or folder) are recorded in the result."""
    use_template = resolve_chat_template(tokenizer, None)
    answer_extractor = ranker.config.answer_extractor or verifier
    verifier = as_verifier(verifier)  # once, not per prompt
    sampling = {
        "num_candidates": num_candidates,
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "top_p": top_p,
    }
    prompts: list[PromptPicks] = []
    torch.manual_seed(seed)
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        inputs = encode_prompts(tokenizer, [example["prompt"] for example in batch], use_template).to(model.device)
        with torch.no_grad():
            output = model.generate(
                **inputs,
                ranker=ranker,
                tokenizer=tokenizer,
                answer_extractor=answer_extractor,
                return_dict_in_generate=True,
                **sampling,
            )
        prompt_length = inputs["input_ids"].shape[1]
        for example, candidates, scores, best in zip(
            batch, output.candidate_sequences, output.candidate_scores, output.best_indices
        ):
            decoded = tokenizer.batch_decode(candidates[:, prompt_length:], skip_special_tokens=True)
            prompts.append(prompt_picks(example, decoded, scores, int(best), verifier))
    outcomes = {
        RANKER_PICK: [int(picks.correct[picks.ranker_index]) for picks in prompts],
        MAJORITY_VOTE: [int(picks.correct[picks.majority_index]) for picks in prompts],
        ORACLE: [int(any(picks.correct)) for picks in prompts],
    }
    comparison = _task_comparison(task, outcomes)
    return ShippedComparison(
        ranker=name,
        task=task,
        seed=prompt_seed,
        num_prompts=len(examples),
        sampling={**sampling, "seed": seed},
        ranker_selection=str(ranker.config.selection),
        accuracy=comparison.accuracy,
        difference=comparison.difference,
        per_prompt=outcomes,
        prompts=prompts,
    )


def prompt_picks(
    example: Mapping[str, Any], texts: list[str], scores: torch.Tensor, ranker_index: int, verifier: Any = "math"
) -> PromptPicks:
    """One prompt's candidates (decoded ``texts``, the ranker's ``scores`` and pick) labelled and parsed by
    ``verifier``, with majority vote's pick among the same candidates (`baselines.majority_vote_choices`: the
    verifier's parsed answers vote; ranked generate returns no log-probs, so ties go to the earliest candidate)."""
    verifier = as_verifier(verifier)
    candidates = Dataset.from_dict(  # one prompt in the candidate-dataset columns the baselines read
        {
            LABELS: [[float(verifier(example, text)) for text in texts]],
            ANSWERS: [[verifier.parse(text) for text in texts]],
            MEAN_LOG_PROBS: [[math.nan] * len(texts)],
        }
    )
    return PromptPicks(
        prompt=example["prompt"],
        reference=None if example.get("answer") is None else str(example["answer"]),
        answers=candidates[0][ANSWERS],
        weights=scores.float().softmax(-1).tolist(),
        correct=correct_candidates(candidates, len(texts))[0].tolist(),
        texts=texts,
        ranker_index=ranker_index,
        majority_index=int(majority_vote_choices(candidates, len(texts))[0]),
    )
