"""A shipped ranker against majority vote of the same candidates, on fresh prompts of a task it was trained on.

The demo's first part: ranked `generate` samples N candidates per prompt and picks one with the ranker; majority
vote (`selection.majority_vote_choices`) picks among the very same candidates, so the two picks are paired and
`report.paired_bootstrap` gives the interval of their difference.

    comparison = compare_with_majority_vote(model, tokenizer, ranker, fresh_prompts("arithmetic", 20))
    print(comparison.summary()); comparison.to_json("shipped_ranker.json")
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..candidates import ANSWERS, LABELS, MEAN_LOG_PROBS, correct_candidates
from ..prompts import format_prompt, resolve_chat_template, tokenize_prompts
from ..verifiers import as_verifier
from .report import PairedDifference, paired_bootstrap
from .selection import MAJORITY_VOTE, chosen_correct, majority_vote_choices

#: the task the demo measures the shipped ranker on (the home task of both shipped rankers)
SHIPPED_TASK = "arithmetic"
#: seed of the fresh prompts. The shipped rankers' train / validation / test prompts are the seed-0 draws of the
#: presets (benchmarks/mixture_collect.py: prefixes of `task_splits`); its screening drew seed 101
FRESH_SEED = 7
#: sampling of the shipped rankers' training data (benchmarks/mixture_collect.py SAMPLING and test CANDIDATES)
SHIPPED_SAMPLING = {"num_candidates": 16, "max_new_tokens": 64, "temperature": 0.8, "top_p": 1.0}
SHIPPED_JSON = "shipped_ranker.json"
RANKER_PICK = "shipped ranker"


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


@dataclass
class ShippedComparison:
    """Ranker pick against majority vote of the same candidates: accuracies, paired difference, one example."""

    ranker: str
    task: str
    seed: int
    num_prompts: int
    sampling: dict[str, Any]
    ranker_selection: str
    accuracy: dict[str, float]
    difference: PairedDifference
    #: 0/1 correctness of each pick per prompt, in prompt order
    per_prompt: dict[str, list[int]] = field(default_factory=dict)
    example: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        n = self.sampling["num_candidates"]
        oracle = f"oracle (pass@{n})"
        rows = [
            f"The shipped ranker ({Path(self.ranker).name}) on {self.num_prompts} fresh {self.task} prompts "
            f"(seed {self.seed}), N={n} candidates each from ranked generate:",
            f"  {RANKER_PICK + ' (' + self.ranker_selection + ')':<36} {self.accuracy[RANKER_PICK]:.3f}",
            f"  {MAJORITY_VOTE + ' of the same candidates':<36} {self.accuracy[MAJORITY_VOTE]:.3f}",
            f"  {oracle:<36} {self.accuracy[oracle]:.3f}",
            f"  ranker − majority vote: {self.difference}  (paired bootstrap 95% interval over prompts)",
        ]
        example = self.example
        if example:
            rows.append(f"  e.g. {' '.join(example['prompt'].split())}   (reference answer: {example['reference']})")
            for kind in (RANKER_PICK, MAJORITY_VOTE):
                pick = example[kind]
                verdict = "correct" if pick["correct"] else "wrong"
                rows.append(
                    f"    {kind:<15} [{verdict}] answer {pick['answer']} ({pick['votes']} of {n} votes): "
                    f"{' '.join(pick['text'].split())[:160]}"
                )
        return "\n".join(rows)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")


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
    task: str = SHIPPED_TASK,
    prompt_seed: int = FRESH_SEED,
    name: str = "ranker",
) -> ShippedComparison:
    """Ranked `generate` with ``ranker`` on ``examples``; label its pick and majority vote's pick of the same
    candidates with ``verifier``. Majority vote parses answers with the verifier (as collection does); ties between
    equally common answers go to the earliest candidate (ranked generate returns no log-probs to break them).
    ``task``, ``prompt_seed`` and ``name`` (the ranker's folder or Hub id) are recorded in the result."""
    verifier_ = as_verifier(verifier)
    extractor = ranker.config.answer_extractor or verifier
    use_template = resolve_chat_template(tokenizer, None)
    rows: dict[str, list[Any]] = {"labels": [], "answers": [], "texts": [], "best": []}
    torch.manual_seed(seed)
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        texts = [format_prompt(tokenizer, example["prompt"], use_template) for example in batch]
        inputs = tokenize_prompts(tokenizer, texts, use_template).to(model.device)
        with torch.no_grad():
            output = model.generate(
                **inputs,
                ranker=ranker,
                num_candidates=num_candidates,
                tokenizer=tokenizer,
                answer_extractor=extractor,
                return_dict_in_generate=True,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
            )
        prompt_length = inputs["input_ids"].shape[1]
        for example, candidates, best in zip(batch, output.candidate_sequences, output.best_indices.tolist()):
            decoded = tokenizer.batch_decode(candidates[:, prompt_length:], skip_special_tokens=True)
            rows["texts"].append(decoded)
            rows["labels"].append([verifier_(example, text) for text in decoded])
            rows["answers"].append([verifier_.parse(text) for text in decoded])
            rows["best"].append(best)
    dataset = Dataset.from_dict(  # the candidate-dataset columns the selection rules read
        {
            LABELS: rows["labels"],
            ANSWERS: rows["answers"],
            MEAN_LOG_PROBS: [[math.nan] * num_candidates for _ in examples],
        }
    )
    majority = majority_vote_choices(dataset, num_candidates)
    correct = {
        RANKER_PICK: chosen_correct(dataset, rows["best"]).astype(int).tolist(),
        MAJORITY_VOTE: chosen_correct(dataset, majority).astype(int).tolist(),
    }
    accuracy = {name: sum(values) / len(values) for name, values in correct.items()}
    accuracy[f"oracle (pass@{num_candidates})"] = float(correct_candidates(dataset, num_candidates).any(1).mean())
    picks = {RANKER_PICK: rows["best"], MAJORITY_VOTE: majority.tolist()}
    # the example: the first prompt where the two picks disagree in correctness, else in answer, else the first
    disagree = [i for i in range(len(examples)) if correct[RANKER_PICK][i] != correct[MAJORITY_VOTE][i]]
    answers = [[row[chosen[i]] for chosen in picks.values()] for i, row in enumerate(rows["answers"])]
    differ = [i for i, (ranked, voted) in enumerate(answers) if ranked != voted]
    index = (disagree or differ or [0])[0]
    votes = Counter(answer for answer in rows["answers"][index] if answer is not None)
    example = {"prompt": examples[index]["prompt"], "reference": examples[index].get("answer")}
    for kind, chosen in picks.items():
        answer = rows["answers"][index][chosen[index]]
        example[kind] = {
            "text": rows["texts"][index][chosen[index]],
            "answer": answer,
            "votes": votes[answer] if answer is not None else 0,
            "correct": bool(correct[kind][index]),
        }
    return ShippedComparison(
        ranker=name,
        task=task,
        seed=prompt_seed,
        num_prompts=len(examples),
        sampling={
            "num_candidates": num_candidates,
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "seed": seed,
        },
        ranker_selection=str(ranker.config.selection),
        accuracy=accuracy,
        difference=paired_bootstrap(correct[RANKER_PICK], correct[MAJORITY_VOTE]),
        per_prompt=correct,
        example=example,
    )
