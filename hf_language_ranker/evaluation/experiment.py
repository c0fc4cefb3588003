"""The evaluation protocol end to end: collect task splits, train rankers, compare with every baseline.

Used by ``hf-language-ranker demo`` (small preset), ``hf-language-ranker evaluate`` and
``benchmarks/quality.py`` (full presets), so they all run the same pipeline.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import GenerationMixin, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils.logging import is_progress_bar_enabled

from ..candidates import CORRECT_THRESHOLD, feature_layers
from ..collection import collect_candidates
from ..features import text_config
from ..prompts import format_prompt, padding_tokenizer, resolve_chat_template, tokenize_prompts
from ..tasks import TASKS, load_task, split_task, task_verifier
from ..verifiers import as_verifier
from .accuracy import evaluate
from .report import EvaluationResult
from .scorers import ProbeScorer, RankerScorer, Scorer, TextRewardScorer, validation_accuracy
from .selection import MAJORITY_VOTE, MEAN_LOG_PROB, SELECTION_RULES, num_candidates

SPLITS = ("train", "validation", "test")

#: The Language Ranker variants every run trains and reports (each with its feature layer chosen on validation,
#: under each selection rule): the paper's heads, then the agreement inputs of `hf_language_ranker.agreement`.
RANKER_VARIANTS: dict[str, dict[str, Any]] = {
    "Language Ranker (listwise)": {"head": "listwise"},
    "Language Ranker (pointwise)": {"head": "pointwise"},
    "Language Ranker (listwise + log-prob)": {"head": "listwise", "use_mean_log_prob": True},
    "Language Ranker (pointwise + log-prob)": {"head": "pointwise", "use_mean_log_prob": True},
    "Language Ranker (listwise + log-prob + vote share)": {
        "head": "listwise",
        "use_mean_log_prob": True,
        "use_vote_share": True,
    },
    "Language Ranker (pointwise + log-prob + vote share)": {
        "head": "pointwise",
        "use_mean_log_prob": True,
        "use_vote_share": True,
    },
    "Language Ranker (pointwise + log-prob + vote share, marginal loss)": {
        "head": "pointwise",
        "use_mean_log_prob": True,
        "use_vote_share": True,
        "loss": "marginal",
    },
    "Language Ranker (listwise + log-prob + vote share + centrality)": {
        "head": "listwise",
        "use_mean_log_prob": True,
        "use_vote_share": True,
        "use_centrality": True,
    },
    "Language Ranker (pointwise + log-prob + vote share + centrality)": {
        "head": "pointwise",
        "use_mean_log_prob": True,
        "use_vote_share": True,
        "use_centrality": True,
    },
}
#: The report row of the method chosen on validation (variant, layer and selection rule).
CHOSEN = "chosen on validation"
#: The baselines the chosen method is compared with, paired over test prompts.
COMPARED_WITH = (MAJORITY_VOTE, MEAN_LOG_PROB, "MiniLM reward model", "linear probe")


@dataclass(frozen=True)
class Preset:
    """Sizes and sampling settings of one run of the protocol."""

    task: str = "arithmetic"
    train_prompts: int = 600
    validation_prompts: int = 100
    test_prompts: int = 200
    train_candidates: int = 8
    eval_candidates: int = 16
    max_new_tokens: int = 64
    temperature: float = 0.8
    top_p: float = 1.0
    layer_fractions: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)
    batch_size: int = 4
    seed: int = 0
    #: dtype the model is loaded in for the run ("bfloat16" is about 1.7x faster than float32 on CPUs with AMX)
    dtype: str = "float32"
    #: prompts drawn before splitting (generated tasks repeat some); fixing it keeps the held-out splits when
    #: ``train_prompts`` changes. Default: 25% more than needed.
    pool_size: int | None = None
    ns: tuple[int, ...] = (1, 2, 4, 8, 16)
    reward_model_max_pairs: int = 4000
    extra: dict[str, Any] = field(default_factory=dict)

    def layers(self, model: PreTrainedModel) -> list[int]:
        num_layers = int(text_config(model).num_hidden_layers)
        return sorted({max(1, round(fraction * num_layers)) for fraction in self.layer_fractions})

    def candidates(self, split: str) -> int:
        return self.train_candidates if split == "train" else self.eval_candidates


PRESETS: dict[str, Preset] = {
    # 7.5 minutes on 2 CPU cores with the embedded SmolLM2-135M-Instruct (measured: 7:28 wall, 2.1 GB peak RSS)
    "demo": Preset(
        train_prompts=120,
        validation_prompts=30,
        test_prompts=50,
        train_candidates=8,
        eval_candidates=8,
        max_new_tokens=40,
        layer_fractions=(0.4, 0.6, 0.8),
        ns=(1, 2, 4, 8),
        reward_model_max_pairs=400,
    ),
    # the full protocol for benchmarks/quality.py (about 85 minutes of sampling on 2 CPU cores in bfloat16):
    # 400 test prompts for +-0.03 paired intervals, 150 validation prompts for the choices, 400 training prompts
    # (where the cross-validated learning curve flattens, benchmarks/results/arithmetic/learning_curve.md), each
    # with 16 candidates as at test time (training still draws groups of 8 per step; all 16 at once did no better
    # on validation: benchmarks/results/arithmetic/ablation.md)
    "arithmetic": Preset(
        train_prompts=400,
        validation_prompts=150,
        test_prompts=400,
        train_candidates=16,
        pool_size=1135,
        layer_fractions=(0.4, 0.6, 0.8, 1.0),
        dtype="bfloat16",
    ),
    # a second math task: a 40-prompt probe put it inside the 10-70% first-sample window, the full run found 1-3%
    # (benchmarks/results/task_difficulty.md)
    "products": Preset(task="products", train_prompts=300, layer_fractions=(0.4, 0.6, 0.8, 1.0), dtype="bfloat16"),
}


def task_splits(preset: Preset) -> dict[str, list[dict[str, Any]]]:
    """The prompts of each split (disjoint by prompt, deterministic for the preset's seed)."""
    held_out = preset.validation_prompts + preset.test_prompts
    needed = preset.train_prompts + held_out
    margin = TASKS[preset.task].repeats_prompts if preset.task in TASKS else False
    pool_size = preset.pool_size or (int(needed * 1.25) + 10 if margin else needed)
    examples = load_task(preset.task, size=pool_size, seed=preset.seed)
    splits = split_task(examples, validation=preset.validation_prompts, test=preset.test_prompts, seed=preset.seed)
    if len(splits["train"]) < preset.train_prompts:
        raise ValueError(f"Task {preset.task!r} has only {len(splits['train'])} training prompts after splitting.")
    splits["train"] = splits["train"][: preset.train_prompts]
    return splits


def collect_splits(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    preset: Preset,
    output_dir: str | Path,
    splits: tuple[str, ...] = SPLITS,
) -> dict[str, Dataset]:
    """Collect (or resume, or reload) the candidate dataset of each split under ``output_dir/<split>``."""
    prompts = task_splits(preset)
    verifier = task_verifier(preset.task)
    datasets = {}
    for split in splits:
        datasets[split] = collect_candidates(
            model,
            tokenizer,
            prompts[split],
            verifier,
            output_dir=Path(output_dir) / split,
            num_candidates=preset.candidates(split),
            layers=preset.layers(model),
            batch_size=preset.batch_size,
            max_new_tokens=preset.max_new_tokens,
            seed=preset.seed + SPLITS.index(split),
            temperature=preset.temperature,
            top_p=preset.top_p,
        )
    return datasets


def preset_from(name: str, **overrides: Any) -> Preset:
    """A named preset with some fields replaced (``None`` values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    return replace(PRESETS[name], **{key: value for key, value in overrides.items() if value is not None})


def preset_json(preset: Preset) -> str:
    return json.dumps(asdict(preset), sort_keys=True)


def greedy_decode(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[dict[str, Any]],
    preset: Preset,
) -> list[str]:
    """Greedy answers to ``prompts`` (the greedy-decoding baseline), formatted like collection does."""
    use_template = resolve_chat_template(tokenizer, None)
    tokenizer = padding_tokenizer(tokenizer)
    answers = []
    for start in tqdm(
        range(0, len(prompts), preset.batch_size * 4), desc="Greedy decoding", disable=not is_progress_bar_enabled()
    ):
        batch = prompts[start : start + preset.batch_size * 4]
        texts = [format_prompt(tokenizer, example["prompt"], use_template) for example in batch]
        inputs = tokenize_prompts(tokenizer, texts, use_template).to(model.device)
        with torch.no_grad():
            output = GenerationMixin.generate(
                model,
                **inputs,
                do_sample=False,
                max_new_tokens=preset.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
        generated = output[:, inputs["input_ids"].shape[1] :]
        answers.extend(tokenizer.batch_decode(generated, skip_special_tokens=True))
    return answers


@dataclass
class ExperimentOutputs:
    """What `run_experiment` wrote and found."""

    result: EvaluationResult
    ranker_dir: Path
    files: dict[str, Path]
    example: dict[str, Any]


@dataclass
class TrainedScorers:
    """Every learned selector of a run, the selection rule of each row, and what validation chose."""

    scorers: dict[str, Scorer]
    selections: dict[str, str]
    chosen: dict[str, Any]
    #: the ranker row with the best validation accuracy (all candidates)
    best: str


def _train_scorers(datasets: dict[str, Dataset], preset: Preset, text_reward_model: bool) -> TrainedScorers:
    """Fit every learned selector; feature layers, hyper-parameters and selection rules are chosen on validation."""
    train, validation = datasets["train"], datasets["validation"]
    layers = feature_layers(train)
    training = {"seed": preset.seed, "report_to": "none", "disable_tqdm": True}
    scorers: dict[str, Scorer] = {}
    selections: dict[str, str] = {}
    chosen: dict[str, Any] = {}
    ranker_accuracy: dict[str, float] = {}
    fits = [(name, layer) for name in RANKER_VARIANTS for layer in layers]
    fitted: dict[tuple[str, int], tuple[Scorer, dict[str, float]]] = {}
    for name, layer in tqdm(fits, desc="Rankers (variant x layer)", disable=not is_progress_bar_enabled()):
        scorer = RankerScorer(feature_layer=layer, **RANKER_VARIANTS[name], **training).fit(train, validation)
        fitted[name, layer] = scorer, {rule: validation_accuracy(scorer, validation, rule) for rule in SELECTION_RULES}
    for name in RANKER_VARIANTS:
        for rule in SELECTION_RULES:
            by_layer = {layer: fitted[name, layer][1][rule] for layer in layers}
            layer = max(by_layer, key=by_layer.get)  # ties go to the first (shallowest) layer
            row = selection_row(name, rule)
            scorers[row], selections[row] = fitted[name, layer][0], rule
            ranker_accuracy[row] = by_layer[layer]
            chosen[row] = {"feature_layer": layer, "validation_accuracy_by_layer": by_layer}
    probe = ProbeScorer().fit(train, validation)
    learned = {"linear probe": probe}
    chosen["linear probe"] = {"feature_layer": probe.layer, "weight_decay": probe.weight_decay}
    if text_reward_model:
        learned["MiniLM reward model"] = TextRewardScorer(
            max_length=128, max_train_pairs=preset.reward_model_max_pairs
        ).fit(train, validation)
    for name, scorer in learned.items():
        for rule in SELECTION_RULES:
            scorers[selection_row(name, rule)], selections[selection_row(name, rule)] = scorer, rule
    best = max(ranker_accuracy, key=ranker_accuracy.get)  # ties go to the first (simplest) row
    chosen[CHOSEN] = {"method": best, "validation_accuracy": ranker_accuracy[best]}
    return TrainedScorers(scorers, selections, chosen, best)


def selection_row(name: str, rule: str) -> str:
    """The report row of a learned scorer under a selection rule (``argmax`` keeps the scorer's name)."""
    return name if rule == "argmax" else f"{name} + weighted vote"


def run_experiment(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    preset: Preset,
    output_dir: str | Path,
    *,
    text_reward_model: bool = True,
) -> ExperimentOutputs:
    """Collect, train every selector, evaluate on test, and write ``results.md``, ``results.json``, the plot and
    the best ranker (``ranker/``, with a model card holding the evaluation) under ``output_dir``."""
    output_dir = Path(output_dir)
    datasets = collect_splits(model, tokenizer, preset, output_dir / "candidates")
    test_prompts = task_splits(preset)["test"]
    verifier = as_verifier(task_verifier(preset.task))
    greedy_answers = greedy_decode(model, tokenizer, test_prompts, preset)
    greedy_labels = [verifier(example, answer) for example, answer in zip(test_prompts, greedy_answers)]
    greedy_accuracy = sum(label >= CORRECT_THRESHOLD for label in greedy_labels) / len(greedy_labels)

    trained = _train_scorers(datasets, preset, text_reward_model)
    result = evaluate(
        datasets["test"],
        trained.scorers,
        ns=preset.ns,
        greedy_accuracy=greedy_accuracy,
        task=preset.task,
        dataset_name=f"{preset.task} test split",
        selections=trained.selections,
    )
    result.add_alias(CHOSEN, trained.best)
    chosen = trained.chosen
    best_variant = trained.best
    ranker = trained.scorers[best_variant].ranker
    ranker.config.selection = trained.selections[best_variant]
    ranker_dir = output_dir / "ranker"
    (ranker_dir / "README.md").unlink(missing_ok=True)
    ranker.save_pretrained(
        ranker_dir,
        model_card_kwargs={
            "training": {
                "task": preset.task,
                "train prompts": len(datasets["train"]),
                "candidates per prompt": preset.train_candidates,
                "sampling": f"temperature {preset.temperature}, top_p {preset.top_p}, "
                f"max_new_tokens {preset.max_new_tokens}",
                "variant, layer and selection chosen on validation": f"{best_variant}, layer "
                f"{ranker.config.feature_layer}",
            },
            "evaluation": result.to_model_card_evaluation(),
        },
    )
    files = {
        "results_markdown": output_dir / "results.md",
        "results_json": output_dir / "results.json",
        "plot": output_dir / "accuracy_vs_n.png",
        "ranker": ranker_dir,
        "candidates": output_dir / "candidates",
    }
    example = _ranked_example(
        datasets["test"], trained.scorers[best_variant], test_prompts, greedy_answers, greedy_labels
    )
    compared = [name for name in COMPARED_WITH if name in result.accuracy]
    files["results_markdown"].write_text(
        f"# {preset.task}: best-of-N selection accuracy\n\n{result.to_markdown()}\n"
        f"`{CHOSEN}` is {best_variant} (layer {ranker.config.feature_layer}), the best ranker row on the validation "
        f"split.\n\n{result.comparisons_markdown(CHOSEN, compared)}\n"
        f"Choices made on the validation split: `{json.dumps(chosen)}`\n\nPreset: `{preset_json(preset)}`\n"
    )
    result.to_json(files["results_json"])
    payload = json.loads(files["results_json"].read_text())
    payload.update(preset=asdict(preset), chosen_on_validation=chosen, example=example)
    files["results_json"].write_text(json.dumps(payload, indent=2, default=str))
    result.plot(files["plot"])
    return ExperimentOutputs(result=result, ranker_dir=ranker_dir, files=files, example=example)


def _ranked_example(
    test: Dataset,
    scorer: RankerScorer,
    prompts: list[dict[str, Any]],
    greedy_answers: list[str],
    greedy_labels: list[float],
) -> dict[str, Any]:
    """One test prompt where the ranker's choice and greedy decoding differ in correctness, if any."""
    scores = scorer.score(test, num_candidates(test))
    choices = SELECTION_RULES[scorer.ranker.config.selection](test, scores)
    rows = list(range(len(test)))
    rows.sort(key=lambda row: test[row]["labels"][int(choices[row])] - greedy_labels[row], reverse=True)
    row = rows[0]
    choice = int(choices[row])
    return {
        "prompt": prompts[row]["prompt"],
        "reference": prompts[row].get("answer"),
        "greedy": greedy_answers[row].strip(),
        "greedy_correct": greedy_labels[row] >= CORRECT_THRESHOLD,
        "ranked": test[row]["candidates"][choice].strip(),
        "ranked_correct": test[row]["labels"][choice] >= CORRECT_THRESHOLD,
    }
