"""Resumable, sharded jobs over a list of prompts: one runner (`ShardedJob`) for collection and for ranking files.

A job writes into one folder::

    output_dir/manifest.json        the job's settings (a rerun with other settings is refused)
    output_dir/shards/shard-<id>/   finished shards (``save_to_disk``), <id> = first prompt id; removed once merged
    output_dir/dataset/             the merged dataset (``load_from_disk``), one row per prompt by ``prompt_id``
    output_dir/<other outputs>      files made from the merged dataset (e.g. ``ranked.jsonl``), if the job has any

Every shard, the manifest and the merged outputs are written under a temporary name, fsynced and moved into
place with `os.replace`, so a job killed at any moment loses at most the shards in progress, and running it
again finishes the rest. Under ``accelerate launch`` processes take the shards round-robin
(`pending_shards`) and the main process merges them (`merge_shards`).

A job is its settings (`ShardedJob`) plus one function that turns a batch of prompt ids into rows: the runner does
the rest (manifest check and write, barriers, device, pending shards, progress bar, merge).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env
from datasets import Dataset, DatasetInfo
from tqdm.auto import tqdm
from transformers.utils.logging import is_progress_bar_enabled

MANIFEST_NAME = "manifest.json"
SHARDS_DIR = "shards"
DATASET_DIR = "dataset"
_TEMP_MARK = ".tmp-"


def json_digest(value: Any) -> str:
    """A hash of a JSON-serialisable value (token id tensors as lists), so a rerun on other data is refused."""
    text = json.dumps(
        value, sort_keys=True, default=lambda item: item.tolist() if hasattr(item, "tolist") else str(item)
    )
    return hashlib.sha256(text.encode()).hexdigest()


def check_counts(**values: int) -> None:
    """Each count (shard size, batch sizes, ...) must be an integer >= 1."""
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")


def shard_path(shards_dir: Path, start: int) -> Path:
    """The folder of the shard whose first prompt is ``start``."""
    return shards_dir / f"shard-{start:09d}"


def pending_shards(num_prompts: int, shard_size: int, shards_dir: Path, state: PartialState) -> dict[int, int]:
    """This process's unfinished shards, ``{start: stop}``: shards go round-robin to processes."""
    starts = range(0, num_prompts, shard_size)
    mine = starts[state.process_index :: state.num_processes]
    return {start: min(start + shard_size, num_prompts) for start in mine if not shard_path(shards_dir, start).exists()}


def read_manifest(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _differing_keys(existing: Mapping[str, Any], manifest: Mapping[str, Any]) -> list[str]:
    """Keys whose values differ; one level of nested settings is opened so the message names the setting."""
    changed = set()
    for key, value in manifest.items():
        old = existing.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            changed |= {name for name in value if old.get(name) != value[name]}
        elif old != value:
            changed.add(key)
    return sorted(changed)


def check_manifest(path: Path, manifest: Mapping[str, Any], overwrite: bool, what: str) -> None:
    """Refuse to resume a job (a ``what``) made with other settings (every process checks, none waits)."""
    existing = read_manifest(path)
    if overwrite or existing is None or existing == manifest:
        return
    raise ValueError(
        f"{path.parent} holds a {what} made with other settings (differing: "
        f"{', '.join(_differing_keys(existing, manifest))}). Use another output_dir, pass the same settings to "
        "resume, or pass overwrite=True (CLI: --overwrite) to start over."
    )


def prepare_output_dir(
    output_dir: Path, manifest: Mapping[str, Any], overwrite: bool, other_outputs: Sequence[str] = ()
) -> None:
    """Main process: start over if asked (also removing the files ``other_outputs``), drop leftovers of killed
    writes, record the manifest."""
    shards_dir, dataset_dir = output_dir / SHARDS_DIR, output_dir / DATASET_DIR
    if overwrite:
        for path in (shards_dir, dataset_dir):
            shutil.rmtree(path, ignore_errors=True)
        for name in other_outputs:
            (output_dir / name).unlink(missing_ok=True)
    shards_dir.mkdir(parents=True, exist_ok=True)
    for folder in (output_dir, shards_dir):
        for leftover in folder.glob(f".*{_TEMP_MARK}*"):
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
    if dataset_dir.exists():  # merged before a kill interrupted the clean-up
        shutil.rmtree(shards_dir)
    manifest_path = output_dir / MANIFEST_NAME
    if read_manifest(manifest_path) != manifest:
        write_text_atomically(manifest_path, json.dumps(manifest, indent=2, sort_keys=True))


def temporary_path(target: Path) -> Path:
    """Where ``target`` is written before it is moved into place (removed by `prepare_output_dir` if left)."""
    return target.with_name(f".{target.name}{_TEMP_MARK}{os.getpid()}")


def replace_durably(temporary: Path, target: Path) -> None:
    """Fsync ``temporary`` (a file or a folder tree), then atomically move it to ``target``."""
    paths = [temporary] if temporary.is_file() else [*sorted(temporary.rglob("*")), temporary]
    for path in paths:
        _fsync(path)
    os.replace(temporary, target)
    _fsync(target.parent)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_text_atomically(target: Path, text: str) -> None:
    temporary = temporary_path(target)
    temporary.write_text(text)
    replace_durably(temporary, target)


@contextlib.contextmanager
def quiet_datasets() -> Iterator[None]:
    """Hide datasets' own "Saving the dataset" bars (they would break the job's bar)."""
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def save_atomically(
    dataset: Dataset, target: Path, write: Callable[[Dataset, str], Any] = Dataset.save_to_disk
) -> None:
    """``write(dataset, path)`` (default: ``save_to_disk``) to a temporary path, then moved to ``target``."""
    temporary = temporary_path(target)
    with quiet_datasets():
        write(dataset, str(temporary))
    replace_durably(temporary, target)


def merge_shards(shards_dir: Path, dataset_dir: Path, num_prompts: int, shard_size: int) -> None:
    """Concatenate all shards into ``dataset_dir`` (atomically), check every prompt is there once, drop shards."""
    shard_paths: Sequence[Path] = [shard_path(shards_dir, start) for start in range(0, num_prompts, shard_size)]
    missing = [path.name for path in shard_paths if not path.exists()]
    if missing:
        raise RuntimeError(f"Shards {missing} are missing after every process finished; run the job again.")
    merged = datasets.concatenate_datasets([datasets.load_from_disk(str(path)) for path in shard_paths])
    if list(merged["prompt_id"]) != list(range(num_prompts)):
        raise RuntimeError(f"The shards in {shards_dir} do not hold prompts 0..{num_prompts - 1} once each.")
    save_atomically(merged, dataset_dir)
    shutil.rmtree(shards_dir)


@dataclass(frozen=True)
class Progress:
    """A job's progress bar: its title, and the throughput it shows as ``<unit>_per_s`` (``amount`` of each row)."""

    description: str
    unit: str
    amount: Callable[[Mapping[str, Any]], int]


@dataclass(frozen=True)
class ShardedJob:
    """One resumable job writing a row per prompt into ``output_dir`` (see the module docs).

    Args:
        kind: what errors call the job (``"collection"``, ``"ranking"``).
        output_dir: the job's folder.
        num_prompts: prompts ``0..num_prompts-1``; every row holds its ``prompt_id``.
        shard_size: prompts per shard, the unit of resumption and of the split across processes.
        batch_size: prompts per call of the job's row function (may change between runs).
        seed: seeds every shard with ``seed + its first prompt id``, so a resumed run equals an uninterrupted one;
            ``None`` leaves the random state alone.
        overwrite: discard whatever ``output_dir`` holds and start over.
        other_outputs: files made from the merged dataset, ``{name: write(dataset, path)}``: the main process writes
            the missing ones (atomically), ``overwrite`` removes them.
    """

    kind: str
    output_dir: str | os.PathLike
    num_prompts: int
    shard_size: int
    batch_size: int
    seed: int | None = None
    overwrite: bool = False
    other_outputs: Mapping[str, Callable[[Dataset, str], Any]] = field(default_factory=dict)

    def run(
        self,
        manifest: Mapping[str, Any],
        rows: Callable[[range], list[dict[str, Any]]],
        models: Sequence[torch.nn.Module],
        info: DatasetInfo,
        progress: Progress,
    ) -> Dataset:
        """Write this process's pending shards and return the merged dataset; every process calls it.

        Args:
            manifest: the job's settings as JSON (``shard_size`` is added); a rerun with other settings is refused.
            rows: the rows of a batch of prompt ids.
            models: the LLM first (moved to this process's device unless it was dispatched with a device map), then
                the modules that compute on its device (a ranker). Nothing moves once the job is finished.
            info: the rows' features and the shards' description.
            progress: the progress bar.
        """
        state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
        output_dir = Path(self.output_dir)
        shards_dir, dataset_dir = output_dir / SHARDS_DIR, output_dir / DATASET_DIR
        manifest = {**manifest, "shard_size": self.shard_size}
        check_manifest(output_dir / MANIFEST_NAME, manifest, self.overwrite, self.kind)
        if state.is_main_process:
            prepare_output_dir(output_dir, manifest, self.overwrite, other_outputs=list(self.other_outputs))
        state.wait_for_everyone()
        if not dataset_dir.exists():
            model, *others = models
            if getattr(model, "hf_device_map", None) is None:
                model.to(state.device)
            for module in others:
                module.to(model.device)
            pending = pending_shards(self.num_prompts, self.shard_size, shards_dir, state)
            self._write_shards(pending, rows, info, progress, show=state.is_main_process)
            state.wait_for_everyone()
            if state.is_main_process:
                merge_shards(shards_dir, dataset_dir, self.num_prompts, self.shard_size)
        if state.is_main_process:
            self._write_other_outputs()
        state.wait_for_everyone()
        return datasets.load_from_disk(str(dataset_dir))

    def _write_shards(
        self,
        pending: Mapping[int, int],
        rows: Callable[[range], list[dict[str, Any]]],
        info: DatasetInfo,
        progress: Progress,
        show: bool,
    ) -> None:
        """Write the ``pending`` shards, ``{start: stop}``, batch by batch under one progress bar."""
        with tqdm(
            total=sum(stop - start for start, stop in pending.items()),
            desc=progress.description,
            unit="prompt",
            disable=not (show and is_progress_bar_enabled()),
        ) as bar:
            started, done = time.perf_counter(), 0
            for start, stop in pending.items():
                if self.seed is not None:
                    torch.manual_seed(self.seed + start)
                shard: list[dict[str, Any]] = []
                for batch_start in range(start, stop, self.batch_size):
                    batch = rows(range(batch_start, min(batch_start + self.batch_size, stop)))
                    shard.extend(batch)
                    done += sum(progress.amount(row) for row in batch)
                    bar.update(len(batch))
                    bar.set_postfix({f"{progress.unit}_per_s": f"{done / (time.perf_counter() - started):.1f}"})
                dataset = Dataset.from_list(shard, info=info.copy())
                save_atomically(dataset, shard_path(Path(self.output_dir) / SHARDS_DIR, start))

    def _write_other_outputs(self) -> None:
        """Main process: the other outputs that are missing, made from the merged dataset."""
        output_dir = Path(self.output_dir)
        missing = {name: write for name, write in self.other_outputs.items() if not (output_dir / name).exists()}
        if missing:
            merged = datasets.load_from_disk(str(output_dir / DATASET_DIR))
            for name, write in missing.items():
                save_atomically(merged, output_dir / name, write)
