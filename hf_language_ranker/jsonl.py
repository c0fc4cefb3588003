"""JSON-lines files read with errors that name the file, the line and the missing key."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


def read_jsonl(
    path: str | os.PathLike,
    required: Sequence[str] = (),
    check: Callable[[Mapping[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """The records of a JSON-lines file, gzipped if its name ends in ``.gz`` (one object a line; blank lines skipped).

    Every record must be an object holding the keys in ``required``; ``check(record)`` may raise a `ValueError` about
    the rest. A missing file, a line that is not valid JSON, a line that is not an object, a missing key, a failed
    check and a file without records are each an error naming the file and, where there is one, the line and key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No JSON-lines file at {path}.")
    records = []
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            record = parse_json_line(path, number, line, required)
            if check is not None:
                try:
                    check(record)
                except ValueError as error:
                    raise ValueError(f"{path}, line {number}: {error}") from None
            records.append(record)
    if not records:
        raise ValueError(f"{path} holds no records: expected one JSON object per line.")
    return records


def parse_json_line(path: str | os.PathLike, number: int, line: str, required: Sequence[str] = ()) -> dict[str, Any]:
    """Line ``number`` of ``path`` as a JSON object holding the ``required`` keys; else an error naming the file, the
    line and the missing key."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        problem = f"not valid JSON ({error.msg}, column {error.colno})"
        raise ValueError(f"{path}, line {number}: {problem}.") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}.")
    missing = [key for key in required if key not in record]
    if missing:
        keys = ", ".join(f'"{key}"' for key in missing)
        raise ValueError(f"{path}, line {number}: missing {keys} (the line has {sorted(record)}).")
    return record
