"""The evaluation protocol end to end: collect splits, choose and train rankers, compare with every baseline.

Three ways in, one protocol (`run_protocol`): a built-in task (`run_experiment`: ``hf-language-ranker demo``,
``evaluate --preset``, ``benchmarks/quality.py``), a user's JSON-lines prompts (`split_prompts` + `collect_splits`:
``evaluate --prompts``), or folders `collect` wrote elsewhere (``evaluate --train-dataset ...``: no LLM needed; what
needs it, such as greedy decoding, is named as missing in the report).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import GenerationMixin, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils.logging import is_progress_bar_enabled

from ..candidates import CANDIDATES, CORRECT_THRESHOLD, LABELS, num_candidates, pool_datasets
from ..collection import collect_candidates
from ..features import dtype_name, text_config
from ..model_card import RankerModelCardData
from ..prompts import encode_prompts, padding_tokenizer, resolve_chat_template
from ..registry import Registry
from ..tasks import TASKS, load_task, split_task, task_verifier
from ..verifiers import as_verifier
from .accuracy import evaluate
from .baselines import MAJORITY_VOTE, MEAN_LOG_PROB, ORACLE, SELECTION_RULES
from .cross_validation import (
    DEFAULT_FOLDS,
    RANKER_VARIANTS,
    RankerSelection,
    fit_setting,
    quiet_training,
    select_ranker,
    selection_row,
)
from .report import CHOSEN, EvaluationResult, headline_methods
from .scorers import ProbeScorer, RankerScorer, Scorer, TextRewardScorer

SPLITS = ("train", "validation", "test")
#: the default shares of a user's prompts held out for validation and test by `split_prompts` (the rest trains)
SPLIT_SHARES = {"validation": 0.2, "test": 0.3}

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
    #: folds of the cross-validation that chooses the ranker (over train + validation prompts)
    folds: int = DEFAULT_FOLDS
    #: `RankerTrainingArguments` fields for every ranker the protocol trains, e.g. ``{"num_train_epochs": 4}``
    training: dict[str, Any] = field(default_factory=dict)
    reward_model_max_pairs: int = 4000
    extra: dict[str, Any] = field(default_factory=dict)

    def layers(self, model: PreTrainedModel) -> list[int]:
        num_layers = int(text_config(model).num_hidden_layers)
        return sorted({max(1, round(fraction * num_layers)) for fraction in self.layer_fractions})

    def candidates(self, split: str) -> int:
        return self.train_candidates if split == "train" else self.eval_candidates


PRESETS: Registry[Preset] = Registry(
    "preset",
    {
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
    },
)


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
    *,
    prompts: dict[str, list[dict[str, Any]]] | None = None,
    verifier: str | None = None,
) -> dict[str, Dataset]:
    """Collect (or resume, or reload) the candidate dataset of each split under ``output_dir/<split>``.

    ``prompts`` (split -> examples) and ``verifier`` default to the preset's task.
    """
    prompts = prompts if prompts is not None else task_splits(preset)
    verifier = verifier or task_verifier(preset.task)
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
        inputs = encode_prompts(tokenizer, [example["prompt"] for example in batch], use_template).to(model.device)
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


# ------------------------------------------------------------------------------------------------------ the data
@dataclass(frozen=True)
class DataSource:
    """Where a run's prompts came from, named in the report and the ranker's card."""

    description: str
    #: file name -> sha256 of each file the data was read from
    files: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        hashes = "; ".join(f"{name} (sha256 {digest})" for name, digest in self.files.items())
        return f"{self.description}{': ' + hashes if hashes else ''}"


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, in hex."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def dataset_sha256(dataset: Dataset) -> str:
    """The sha256 of the Arrow files a dataset loaded from disk reads, in order, in hex."""
    digest = hashlib.sha256()
    for cache_file in dataset.cache_files:
        with open(cache_file["filename"], "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def ns_up_to(count: int) -> tuple[int, ...]:
    """The Ns of a report for ``count`` candidates per prompt: powers of two below it, and ``count`` itself."""
    return tuple(sorted({*(2**k for k in range(count.bit_length()) if 2**k < count), count}))


def split_prompts(
    examples: list[dict[str, Any]],
    *,
    train: int | None = None,
    validation: int | None = None,
    test: int | None = None,
    seed: int = 0,
) -> dict[str, list[dict[str, Any]]]:
    """A user's examples split by prompt (repeated prompts kept once), deterministically for ``seed``.

    Counts default to `SPLIT_SHARES` of the distinct prompts for validation and test, the rest train; ``train``
    caps the train split. Examples without an ``id`` get their position in ``examples``.
    """
    examples = [{"id": index, **example} for index, example in enumerate(examples)]
    distinct = len({example["prompt"] for example in examples})
    validation = validation if validation is not None else round(SPLIT_SHARES["validation"] * distinct)
    test = test if test is not None else round(SPLIT_SHARES["test"] * distinct)
    splits = split_task(examples, validation=validation, test=test, seed=seed)
    if train is not None:
        if len(splits["train"]) < train:
            raise ValueError(
                f"--train-prompts {train}: only {len(splits['train'])} of the {distinct} distinct prompts are left "
                f"after {validation} validation and {test} test prompts."
            )
        splits["train"] = splits["train"][:train]
    for name, split in splits.items():
        if not split:
            raise ValueError(f"The {name} split of the {distinct} distinct prompts is empty: give more prompts.")
    return splits


@dataclass
class Greedy:
    """Greedy decoding of the test prompts: the answers, their labels and the examples they answer."""

    examples: list[dict[str, Any]]
    answers: list[str]
    labels: list[float]

    @property
    def accuracy(self) -> float:
        return sum(label >= CORRECT_THRESHOLD for label in self.labels) / len(self.labels)


def greedy_baseline(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[dict[str, Any]],
    verifier: str,
    preset: Preset,
) -> Greedy:
    """Decode ``examples`` greedily and label the answers with ``verifier``."""
    answers = greedy_decode(model, tokenizer, examples, preset)
    check = as_verifier(verifier)
    return Greedy(examples, answers, [check(example, answer) for example, answer in zip(examples, answers)])


# ----------------------------------------------------------------------------------------------- the protocol
@dataclass
class TrainedScorers:
    """Every learned selector of a run, the pick rule of each row, and what cross-validation chose."""

    scorers: dict[str, Scorer]
    selections: dict[str, str]
    choice: RankerSelection
    #: the probe's validation-chosen layer and weight decay
    probe: dict[str, Any]
    #: learned baselines that could not run, with the reason
    missing: list[str]


def _train_scorers(datasets: dict[str, Dataset], preset: Preset, text_reward_model: bool) -> TrainedScorers:
    """Choose the ranker by cross-validation; refit every variant x rule row at its best layer on train +
    validation for the test table; fit the probe and the text reward model (hyper-parameters on validation)."""
    train, validation = datasets["train"], datasets["validation"]
    serve_n = num_candidates(datasets["test"])
    choice = select_ranker(train, validation, folds=preset.folds, serve_n=serve_n, seed=preset.seed, **preset.training)
    training = quiet_training(preset.seed, **preset.training)
    pooled = pool_datasets([train, validation])
    fitted: dict[tuple[str, int], Scorer] = {
        (choice.chosen.variant, choice.chosen.feature_layer): RankerScorer.from_trained(choice.ranker)
    }
    scorers: dict[str, Scorer] = {}
    selections: dict[str, str] = {}
    for row, setting in choice.best_layers().items():
        key = (setting.variant, setting.feature_layer)
        if key not in fitted:
            fitted[key] = fit_setting(pooled, RANKER_VARIANTS[setting.variant], *key[1:], setting.selection, **training)
        scorers[row], selections[row] = fitted[key], setting.selection
    scorers[CHOSEN], selections[CHOSEN] = (
        fitted[choice.chosen.variant, choice.chosen.feature_layer],
        choice.chosen.selection,
    )
    probe = ProbeScorer().fit(train, validation)
    learned: dict[str, Scorer] = {"linear probe": probe}
    missing = []
    if text_reward_model:
        try:
            learned["MiniLM reward model"] = TextRewardScorer(
                max_length=128, max_train_pairs=preset.reward_model_max_pairs
            ).fit(train, validation)
        except ModuleNotFoundError as error:
            missing.append(f"MiniLM reward model: {error}")
    for name, scorer in learned.items():
        for rule in SELECTION_RULES:
            scorers[selection_row(name, rule)], selections[selection_row(name, rule)] = scorer, rule
    return TrainedScorers(
        scorers, selections, choice, {"feature_layer": probe.layer, "weight_decay": probe.weight_decay}, missing
    )


@dataclass
class ExperimentOutputs:
    """What `run_protocol` wrote and found."""

    result: EvaluationResult
    ranker_dir: Path
    files: dict[str, Path]
    #: one test prompt where the ranker and greedy decoding differ (``None`` without greedy decoding)
    example: dict[str, Any] | None
    choice: RankerSelection
    #: the pieces of the report that could not be measured, with the reason
    missing: list[str]

    def summary(self) -> str:
        """A few lines for the console: the chosen ranker against the main baselines, then where the rest is."""
        return (
            f"{self.result.summary(CHOSEN, [MAJORITY_VOTE, MEAN_LOG_PROB])}"
            f"{CHOSEN}: {self.choice.chosen.row}, layer {self.choice.chosen.feature_layer}.\n"
            + "".join(f"Not measured: {piece}\n" for piece in self.missing)
            + f"Every method and N: {self.files['results_markdown']}"
        )


def run_protocol(
    datasets: dict[str, Dataset],
    output_dir: str | Path,
    preset: Preset,
    *,
    source: DataSource,
    greedy: Greedy | None = None,
    missing: list[str] | None = None,
    text_reward_model: bool = True,
) -> ExperimentOutputs:
    """Choose and train every selector on train + validation, evaluate on test, and write ``results.md``,
    ``results.json`` (per-prompt outcomes, the choice), ``accuracy_vs_n.png`` and the chosen ranker (``ranker/``,
    with a card naming the data, the split sizes, the chosen settings and the test table) under ``output_dir``.

    ``greedy`` adds the greedy-decoding row and an example; ``missing`` names pieces measured elsewhere or not at all.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    trained = _train_scorers(datasets, preset, text_reward_model)
    missing = [*(missing or []), *trained.missing]
    test = datasets["test"]
    available = num_candidates(test)
    result = evaluate(
        test,
        trained.scorers,
        ns=[n for n in preset.ns if n <= available] or [available],
        greedy_accuracy=greedy.accuracy if greedy is not None else None,
        task=preset.task,
        dataset_name=f"{preset.task} test split",
        selections=trained.selections,
    )
    choice = trained.choice
    sizes = {split: len(dataset) for split, dataset in datasets.items()}
    counts = {split: num_candidates(dataset) for split, dataset in datasets.items()}
    largest = max(result.ns)
    headline = headline_methods(result)
    files = {
        "results_markdown": output_dir / "results.md",
        "results_json": output_dir / "results.json",
        "plot": output_dir / "accuracy_vs_n.png",
        "ranker": output_dir / "ranker",
    }
    ranker = choice.ranker
    ranker.card_data = RankerModelCardData(
        training={
            "data": str(source),
            "split sizes (prompts)": ", ".join(f"{split} {size}" for split, size in sizes.items()),
            "candidates per prompt": ", ".join(f"{split} {count}" for split, count in counts.items()),
            "chosen settings": f"{choice.chosen.row}, layer {choice.chosen.feature_layer}",
            "chosen by": f"{choice.folds}-fold cross-validation over {choice.num_prompts} train + validation "
            f"prompts at N={choice.serve_n} (accuracy {choice.accuracy[choice.chosen]:.3f}), refit on all of them",
            f"test vs {MAJORITY_VOTE}, N={largest}": str(result.paired(CHOSEN, MAJORITY_VOTE, largest)),
        },
        evaluation=result.to_model_card_evaluation([*headline[:4], ORACLE]),
    )
    ranker.save_pretrained(files["ranker"])
    example = _ranked_example(test, trained.scorers[CHOSEN], greedy) if greedy is not None else None
    compared = [name for name in COMPARED_WITH if name in result.accuracy]
    files["results_markdown"].write_text(
        f"# {preset.task}: best-of-N selection accuracy\n\nData: {source}. Split sizes (prompts): {sizes}; "
        f"candidates per prompt: {counts}.\n\n{result.summary(CHOSEN, [MAJORITY_VOTE, MEAN_LOG_PROB])}\n"
        f"## Test\n\n{result.to_markdown()}\n`{CHOSEN}` is {choice.chosen.row} (layer "
        f"{choice.chosen.feature_layer}), refit on train + validation.\n\n"
        f"{result.comparisons_markdown(CHOSEN, compared)}\n## The choice\n\n{choice.to_markdown()}\n"
        + "".join(f"Not measured: {piece}.\n" for piece in missing)
        + f"\nLinear probe chosen on validation: `{json.dumps(trained.probe)}`\n\nSettings: `{preset_json(preset)}`\n",
        encoding="utf-8",
    )
    result.to_json(files["results_json"])
    payload = json.loads(files["results_json"].read_text())
    payload.update(
        data=asdict(source),
        split_sizes=sizes,
        candidates_per_prompt=counts,
        preset=asdict(preset),
        chosen={"method": CHOSEN, **choice.to_dict()},
        linear_probe=trained.probe,
        example=example,
        missing=missing,
    )
    files["results_json"].write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    result.plot(files["plot"], methods=headline, interval=(CHOSEN, MAJORITY_VOTE))
    return ExperimentOutputs(result, files["ranker"], files, example, choice, missing)


def run_experiment(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    preset: Preset,
    output_dir: str | Path,
    *,
    prompts: dict[str, list[dict[str, Any]]] | None = None,
    verifier: str | None = None,
    source: DataSource | None = None,
    text_reward_model: bool = True,
) -> ExperimentOutputs:
    """Collect each split under ``output_dir/candidates`` (resumable), decode the test prompts greedily, then
    `run_protocol`. ``prompts`` (split -> examples, e.g. from `split_prompts`), their ``verifier`` and their
    ``source`` default to the preset's built-in task. The report records the dtype ``model`` runs in (not the
    preset's, which may be "auto" or another than the caller loaded)."""
    preset = replace(preset, dtype=dtype_name(model.dtype))
    output_dir = Path(output_dir)
    prompts = prompts if prompts is not None else task_splits(preset)
    verifier = verifier or task_verifier(preset.task)
    source = source or DataSource(f"built-in task {preset.task!r} (seed {preset.seed}, from hf_language_ranker.tasks)")
    datasets = collect_splits(model, tokenizer, preset, output_dir / "candidates", prompts=prompts, verifier=verifier)
    greedy = greedy_baseline(model, tokenizer, prompts["test"], verifier, preset)
    outputs = run_protocol(
        datasets, output_dir, preset, source=source, greedy=greedy, text_reward_model=text_reward_model
    )
    outputs.files["candidates"] = output_dir / "candidates"
    return outputs


def _ranked_example(test: Dataset, scorer: RankerScorer, greedy: Greedy) -> dict[str, Any]:
    """One test prompt where the ranker's choice and greedy decoding differ in correctness, if any."""
    scores = scorer.score(test, num_candidates(test))
    choices = SELECTION_RULES[scorer.ranker.config.selection](test, scores)
    rows = list(range(len(test)))
    rows.sort(key=lambda row: test[row][LABELS][int(choices[row])] - greedy.labels[row], reverse=True)
    row = rows[0]
    choice = int(choices[row])
    return {
        "prompt": greedy.examples[row]["prompt"],
        "reference": greedy.examples[row].get("answer"),
        "greedy": greedy.answers[row].strip(),
        "greedy_correct": greedy.labels[row] >= CORRECT_THRESHOLD,
        "ranked": test[row][CANDIDATES][choice].strip(),
        "ranked_correct": test[row][LABELS][choice] >= CORRECT_THRESHOLD,
    }
