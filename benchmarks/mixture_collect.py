"""Collect the task mixture of the cross-task ranker: screen candidate tasks, then collect the chosen ones.

    python benchmarks/mixture_collect.py prepare --output runs/mixture/prompts.json   # needs reasoning-gym
    python benchmarks/mixture_collect.py run --prompts runs/mixture/prompts.json --output-dir runs/mixture \\
        [--workers 6] [--batch-size 32]

``prepare`` writes every prompt the run needs (screening and split prompts of each candidate task) to one JSON
file, so the machine that samples needs no reasoning-gym. ``run`` samples with the embedded SmolLM2-135M-Instruct
in bfloat16 (on a GPU when there is one; worker processes each load the model once):

1. screening: ``SCREEN_PROMPTS`` prompts x 16 candidates of every candidate task (a seed no split uses);
2. the window rule, fixed before any result was seen (``WINDOW``, ``MIN_ORACLE_GAIN``): mean candidate accuracy in
   [0.03, 0.60] and oracle@16 at least 0.15 above majority vote@16 (room for a ranker). ``arithmetic`` (the
   specialist's task) always trains;
3. held-out tasks: the first ``HELD_OUT`` in-window tasks of ``HELD_OUT_PREFERENCE`` (word problems and number
   theory before expressions, so "never seen" means far from the arithmetic home task); they get a test split
   only and are never trained on. The other in-window tasks train (at most ``MAX_TRAINING_TASKS``, in
   ``TRAINING_PREFERENCE`` order) with train / validation / test splits;
4. collection of those splits with `collect_candidates` (layers ``LAYERS``, resumable), highest priority first,
   until ``--deadline-minutes``.

A second round (`benchmarks/unseen_tasks.py` found that numeric tasks do not predict the held-out word problems)
screens three word and picture problems (``weekday_count``, ``rectangle_count``, ``triangle_angle``) with the same
window rule, on a CPU in float32::

    python benchmarks/mixture_collect.py prepare --tasks weekday_count rectangle_count triangle_angle \
        --output runs/word/prompts.json
    python benchmarks/mixture_collect.py run --prompts runs/word/prompts.json --output-dir runs/word \
        --dtype float32 --jobs weekday_count:screening rectangle_count:screening triangle_angle:screening

Sampling at about 25 tokens/s there, the screening draws are all this round collects: those of the tasks in the
window (same rule) join the pool of unseen-task validation tasks as their validation split (``pack --source
runs/word/screening --rename screening=validation``), and are never held out.

A third round screens three more counting and picture problems the same way (``animal_legs``, ``largest_island``,
``pick_number``)::

    python benchmarks/mixture_collect.py prepare --tasks animal_legs largest_island pick_number \
        --output runs/word2/prompts.json
    python benchmarks/mixture_collect.py run --prompts runs/word2/prompts.json --output-dir runs/word2 \
        --dtype float32 --jobs animal_legs:screening largest_island:screening pick_number:screening

Writes ``screening.json`` (the per-task screening table) and ``plan.json`` (the rule's outcome, timings) beside
the collections ``<task>/<split>/``. `benchmarks/mixture.py` trains and evaluates on them. ``pack`` copies them
with only the layers the analysis uses, one compact Parquet file per split (``benchmarks/data/mixture`` is such a
copy: layer 12, the unseen-task validation tasks' validation splits only; read them with
`hf_language_ranker.candidates.load_collection`).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

CANDIDATE_TASKS = (
    "arithmetic",
    "addition",
    "decimal_addition",
    "gcd",
    "lcm",
    "linear_equations",
    "count_bits",
    "number_sequence",
    "letter_counting",
    "leg_counting",
    "count_primes",
    "family_counting",
)
HELD_OUT_PREFERENCE = (
    "leg_counting",
    "gcd",
    "letter_counting",
    "family_counting",
    "count_primes",
    "linear_equations",
    "lcm",
)
TRAINING_PREFERENCE = (
    "arithmetic",
    "addition",
    "decimal_addition",
    "number_sequence",
    "count_bits",
    "linear_equations",
    "lcm",
    "count_primes",
    "family_counting",
    "letter_counting",
    "gcd",
    "leg_counting",
)
HELD_OUT = 3
MAX_TRAINING_TASKS = 5
SCREEN_PROMPTS, SCREEN_SEED, SCREEN_CANDIDATES = 64, 101, 16
SPLIT_SIZES = {"train": 200, "validation": 100, "test": 200}
CANDIDATES = {"train": 8, "validation": 16, "test": 16}
SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2}  # as the presets' collect_splits
LAYERS = (12, 18)
SAMPLING = {"max_new_tokens": 64, "temperature": 0.8, "top_p": 1.0}
WINDOW = (0.03, 0.60)
MIN_ORACLE_GAIN = 0.15


# ------------------------------------------------------------------------------------------- prepare
def prepare(output: Path, tasks: list[str]) -> None:
    """Every prompt the run needs, per task: screening prompts and the split prompts."""
    from hf_language_ranker.evaluation.experiment import PRESETS, Preset, task_splits
    from hf_language_ranker.tasks import load_task

    prompts: dict[str, Any] = {}
    for task in tasks:
        if task == "arithmetic":  # prefixes of the specialist's own splits: its test prompts stay unseen in training
            splits = task_splits(PRESETS["arithmetic"])
        else:
            splits = task_splits(
                Preset(
                    task=task,
                    train_prompts=SPLIT_SIZES["train"],
                    validation_prompts=SPLIT_SIZES["validation"],
                    test_prompts=SPLIT_SIZES["test"],
                )
            )
        prompts[task] = {
            "screening": load_task(task, size=SCREEN_PROMPTS, seed=SCREEN_SEED),
            **{split: rows[: SPLIT_SIZES[split]] for split, rows in splits.items()},
        }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(prompts))
    print(f"wrote {output}: {len(prompts)} tasks")


# ------------------------------------------------------------------------------------------- workers
_MODEL: Any = None


def _load(threads: int, dtype: str) -> None:
    global _MODEL
    import torch

    from hf_language_ranker import load_model_and_tokenizer

    torch.set_num_threads(threads)
    model, tokenizer = load_model_and_tokenizer(dtype=getattr(torch, dtype))
    _MODEL = (model.to("cuda" if torch.cuda.is_available() else "cpu"), tokenizer)


def _collect(job: dict[str, Any]) -> dict[str, Any]:
    """One (task, split) collection in a worker; returns its accuracy figures."""
    import numpy as np

    from hf_language_ranker import collect_candidates
    from hf_language_ranker.candidates import CORRECT_THRESHOLD

    model, tokenizer = _MODEL
    started = time.perf_counter()
    dataset = collect_candidates(
        model,
        tokenizer,
        job["examples"],
        "math",
        output_dir=job["output_dir"],
        num_candidates=job["candidates"],
        layers=list(job["layers"]),
        batch_size=job["batch_size"],
        seed=job["seed"],
        **SAMPLING,
    )
    correct = np.array(dataset["labels"]) >= CORRECT_THRESHOLD
    majority = []
    for answers, right in zip(dataset["answers"], correct):
        counts = Counter(answer for answer in answers if answer)
        if not counts:
            majority.append(bool(right[0]))
            continue
        top = counts.most_common(1)[0][0]
        majority.append(bool(right[answers.index(top)]))
    return {
        "task": job["task"],
        "split": job["split"],
        "prompts": len(dataset),
        "candidates": job["candidates"],
        "first_sample": float(correct[:, 0].mean()),
        "mean_candidate": float(correct.mean()),
        "majority": float(np.mean(majority)),
        "oracle": float(correct.any(1).mean()),
        "tokens": int(np.sum(dataset["lengths"])),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _run_jobs(pool: ProcessPoolExecutor, jobs: list[dict[str, Any]], deadline: float) -> list[dict[str, Any]]:
    """Run jobs in order of priority; once past the deadline, no new job starts."""
    results, pending = [], list(jobs)
    running: dict[Future, dict[str, Any]] = {}
    while pending or running:
        while pending and len(running) < pool._max_workers and time.time() < deadline:
            job = pending.pop(0)
            running[pool.submit(_collect, job)] = job
        if not running:
            break
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in done:
            job = running.pop(future)
            try:
                results.append(future.result())
                print(json.dumps(results[-1]), flush=True)
            except Exception as error:  # one broken task must not cost the others
                results.append({"task": job["task"], "split": job["split"], "error": repr(error)})
                print(f"FAILED {job['task']}/{job['split']}: {error!r}", flush=True)
    skipped = [f"{job['task']}/{job['split']}" for job in pending]
    if skipped:
        print(f"deadline reached; not collected: {skipped}", flush=True)
    return results


def choose_tasks(screening: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """The fixed rule: in-window tasks, the held-out ones by preference, the rest train."""
    in_window = [
        task
        for task, row in screening.items()
        if "error" not in row
        and WINDOW[0] <= row["mean_candidate"] <= WINDOW[1]
        and row["oracle"] - row["majority"] >= MIN_ORACLE_GAIN
    ]
    held_out = [task for task in HELD_OUT_PREFERENCE if task in in_window][:HELD_OUT]
    training = ["arithmetic"] + [
        task for task in TRAINING_PREFERENCE if task in in_window and task not in held_out and task != "arithmetic"
    ]
    return {"in_window": in_window, "held_out": held_out, "training": training[:MAX_TRAINING_TASKS]}


def run(args: argparse.Namespace) -> None:
    prompts = json.loads(Path(args.prompts).read_text())
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    deadline = started + 60 * args.deadline_minutes
    threads = max(1, (os.cpu_count() or 2) // args.workers)

    def job(task: str, split: str, layers: tuple[int, ...]) -> dict[str, Any]:
        return {
            "task": task,
            "split": split,
            "examples": prompts[task][split][: args.limit],
            "candidates": SCREEN_CANDIDATES if split == "screening" else CANDIDATES[split],
            "seed": SCREEN_SEED if split == "screening" else SPLIT_SEEDS[split],
            "layers": layers,
            "batch_size": args.batch_size,
            "output_dir": str(output_dir / ("screening" if split == "screening" else "") / task / split),
        }

    if args.jobs:  # named (task, split) collections only: no screening, no plan
        with ProcessPoolExecutor(
            args.workers, mp_context=get_context("spawn"), initializer=_load, initargs=(threads, args.dtype)
        ) as pool:
            collected = _run_jobs(pool, [job(*name.split(":"), LAYERS) for name in args.jobs], deadline)
        (output_dir / "jobs.json").write_text(json.dumps(collected, indent=2))
        return
    tasks = args.tasks or list(CANDIDATE_TASKS)
    with ProcessPoolExecutor(
        args.workers, mp_context=get_context("spawn"), initializer=_load, initargs=(threads, args.dtype)
    ) as pool:
        screened = _run_jobs(pool, [job(task, "screening", (LAYERS[-1],)) for task in tasks], deadline)
        screening = {row["task"]: row for row in screened}
        (output_dir / "screening.json").write_text(json.dumps(screening, indent=2))
        plan = choose_tasks(screening)
        print("plan:", json.dumps(plan), flush=True)
        jobs = [job(task, "test", LAYERS) for task in plan["held_out"]]
        for split in ("test", "validation", "train"):
            jobs += [job(task, split, LAYERS) for task in plan["training"]]
        collected = _run_jobs(pool, jobs, deadline)
    plan.update(
        rule={"window": WINDOW, "min_oracle_gain": MIN_ORACLE_GAIN, "held_out_preference": HELD_OUT_PREFERENCE},
        collected=collected,
        settings={
            "layers": LAYERS,
            "sampling": SAMPLING,
            "candidates": CANDIDATES,
            "dtype": args.dtype,
            "device": "cuda" if _cuda() else "cpu",
        },
        wall_seconds=round(time.time() - started),
    )
    (output_dir / "plan.json").write_text(json.dumps(plan, indent=2))
    print(f"done in {plan['wall_seconds']} s", flush=True)


def pack(source: Path, target: Path, layers: list[int], skip: list[str], rename: dict[str, str]) -> None:
    """Copy the collections ``<task>/<split>/`` of ``source`` keeping only ``layers`` and leaving out the
    ``task/split`` folders in ``skip``, each as one compact Parquet file (`save_collection`: lossless, checked bit
    for bit on writing) for committing under benchmarks/data; ``rename`` maps a split's name to the one it is saved
    under (``{"screening": "validation"}``). ``source`` may be a run's output folder or a packed copy."""
    from hf_language_ranker import load_collection
    from hf_language_ranker.candidates import (
        COLLECTION_FILE,
        CollectionInfo,
        candidate_feature_column,
        prompt_feature_column,
        save_collection,
    )

    plan_file = source / "plan.json"  # absent for --jobs runs, whose collections record their dtype themselves
    plan = json.loads(plan_file.read_text()) if plan_file.exists() else None
    folders = [folder for folder in sorted(source.glob("*/*")) if (folder / "dataset").is_dir()]
    folders += [folder for folder in sorted(source.glob("*/*")) if (folder / COLLECTION_FILE).is_file()]
    for folder in folders:
        if str(folder.relative_to(source)) in skip:
            continue
        dataset = load_collection(folder)
        info = CollectionInfo.from_dataset(dataset)
        dropped = [layer for layer in info.layers if layer not in layers]
        dataset = dataset.remove_columns(
            [column(layer) for layer in dropped for column in (prompt_feature_column, candidate_feature_column)]
        )
        info.layers = [layer for layer in info.layers if layer in layers]
        if info.model_dtype is None:  # collected before collections recorded it
            info.model_dtype = plan["settings"]["dtype"]
        dataset.info.description = info.to_json()
        task, split = folder.relative_to(source).parts
        destination = save_collection(dataset, target / task / rename.get(split, split))
        print(f"{destination}: {len(dataset)} prompts, layers {info.layers}, {destination.stat().st_size} bytes")
    if plan is not None:
        plan["settings"]["layers"] = layers
        (target / "plan.json").write_text(json.dumps(plan, indent=2))
        (target / "screening.json").write_text((source / "screening.json").read_text())


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare")
    prep.add_argument("--output", type=Path, default=Path("runs/mixture/prompts.json"))
    prep.add_argument("--tasks", nargs="+", default=list(CANDIDATE_TASKS), help=f"default: {' '.join(CANDIDATE_TASKS)}")
    go = commands.add_parser("run")
    go.add_argument("--prompts", default="runs/mixture/prompts.json")
    go.add_argument("--output-dir", default="runs/mixture")
    go.add_argument("--workers", type=int, default=1)
    go.add_argument("--batch-size", type=int, default=4)
    go.add_argument("--deadline-minutes", type=float, default=170.0)
    go.add_argument("--tasks", nargs="*", help="screen only these tasks (default: all candidates)")
    go.add_argument("--jobs", nargs="*", help="collect only these task:split pairs (no screening, no plan)")
    go.add_argument("--dtype", default="bfloat16", help="bfloat16 on a GPU or an AMX CPU, else float32")
    go.add_argument("--limit", type=int, default=None, help="at most this many prompts per split (a smoke test)")
    keep = commands.add_parser("pack", help="copy the collections with only some layers, compact, for committing")
    keep.add_argument("--source", type=Path, default=Path("runs/mixture"))
    keep.add_argument("--target", type=Path, default=Path("benchmarks/data/mixture"))
    keep.add_argument("--layers", type=int, nargs="+", default=[12])
    keep.add_argument("--skip", nargs="*", default=[], help="task/split folders to leave out")
    keep.add_argument(
        "--rename", nargs="*", default=[], help="split=new_name pairs, e.g. screening=validation (a --jobs run)"
    )
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.output, args.tasks)
    elif args.command == "pack":
        pack(args.source, args.target, args.layers, args.skip, dict(pair.split("=", 1) for pair in args.rename))
    else:
        run(args)


if __name__ == "__main__":
    main()
