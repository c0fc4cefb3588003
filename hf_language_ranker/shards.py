"""Resumable, sharded jobs over a list of prompts: one implementation for collection and for ranking files.

A job writes into one folder::

    output_dir/manifest.json        the job's settings (a rerun with other settings is refused)
    output_dir/shards/shard-<id>/   finished shards (``save_to_disk``), <id> = first prompt id; removed once merged
    output_dir/dataset/             the merged dataset (``load_from_disk``), one row per prompt by ``prompt_id``

Every shard, the manifest and the merged outputs are written under a temporary name, fsynced and moved into
place with `os.replace`, so a job killed at any moment loses at most the shards in progress, and running it
again finishes the rest. Under ``accelerate launch`` processes take the shards round-robin
(`pending_shards`) and the main process merges them (`merge_shards`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
from accelerate import PartialState
from datasets import Dataset

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


def save_atomically(dataset: Dataset, target: Path) -> None:
    temporary = temporary_path(target)
    with quiet_datasets():
        dataset.save_to_disk(str(temporary))
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
