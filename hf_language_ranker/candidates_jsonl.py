"""JSON-lines files of candidates sampled elsewhere (vLLM, SGLang, TGI, llama.cpp): the input of ``collect
--candidates`` and ``rank --candidates``.

One prompt per line::

    {"prompt": "What is 12 * 7?", "candidates": ["84", [56, 19, 2], ...], "finished": [true, true, ...], ...}

``candidates`` are texts or token id lists; ``finished`` (optional, default all true) says whether each text ended
with EOS (engines strip it: ``finish_reason == "stop"``); ``mean_log_probs`` (optional, on every line or on none)
gives each candidate's mean token log-probability as the engine reported it (see `rank_candidates`), which lets
``rank`` skip the blocks above the ranker's layer; other fields (e.g. ``"answer"`` for a verifier) are kept with the
prompt. Blank lines are skipped. A bad line is an error naming the file, the line and the key.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from .jsonl import parse_json_line

#: A candidate as it appears in a file: a text or its token ids.
FileCandidate = Union[str, list[int]]


@dataclass
class SampleLine:
    """One parsed line: the prompt's example (``"prompt"`` plus the extra fields), its candidates and whether
    each ended with EOS."""

    number: int
    example: dict[str, Any]
    candidates: list[FileCandidate]
    finished: list[bool]
    #: each candidate's mean token log-probability as the sampler reported it, when the line gives them
    mean_log_probs: list[float] | None = None


def _is_token_ids(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(token, int) and not isinstance(token, bool) for token in value)


def parse_sample_line(path: str | os.PathLike, number: int, line: str, vocab_size: int | None = None) -> SampleLine:
    """Parse and check line ``number`` of ``path`` (token ids also against ``vocab_size`` when it is given)."""
    where = f"{path}, line {number}"
    record = parse_json_line(path, number, line, required=("prompt", "candidates"))
    if not isinstance(record["prompt"], str):
        raise ValueError(f'{where}: "prompt" must be a string, got {type(record["prompt"]).__name__}.')
    group = record.pop("candidates")
    if not isinstance(group, list) or not group:
        held = "an empty list" if isinstance(group, list) else type(group).__name__
        raise ValueError(f'{where}: "candidates" must be a non-empty list of texts or token id lists, got {held}.')
    finished = record.pop("finished", [True] * len(group))
    if not isinstance(finished, list) or len(finished) != len(group) or not all(isinstance(v, bool) for v in finished):
        raise ValueError(f'{where}: "finished" must be a list of {len(group)} booleans.')
    mean_log_probs = record.pop("mean_log_probs", None)
    if mean_log_probs is not None and not (
        isinstance(mean_log_probs, list)
        and len(mean_log_probs) == len(group)
        and all(_is_log_prob(value) for value in mean_log_probs)
    ):
        raise ValueError(
            f'{where}: "mean_log_probs" must be a list of {len(group)} finite numbers <= 0 (each candidate\'s mean '
            "token log-probability), or left out."
        )
    for position, (candidate, ended) in enumerate(zip(group, finished)):
        key = f'"candidates"[{position}]'
        if isinstance(candidate, str):
            if not candidate and not ended:
                raise ValueError(
                    f"{where}: {key} is an empty text that did not finish: there is no token to read a feature from."
                )
        elif not _is_token_ids(candidate) or not candidate:
            raise ValueError(
                f"{where}: {key} must be a text or a non-empty list of int token ids, got {candidate!r:.60}."
            )
        elif min(candidate) < 0:
            raise ValueError(f"{where}: {key} holds a negative token id ({min(candidate)}).")
        elif vocab_size is not None and max(candidate) >= vocab_size:
            raise ValueError(f"{where}: {key} holds token ids outside the model's vocabulary 0..{vocab_size - 1}.")
    return SampleLine(number, record, group, finished, mean_log_probs)


def _is_log_prob(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value <= 0


def read_candidates_jsonl(
    path: str | os.PathLike,
) -> tuple[list[dict[str, Any]], list[list[FileCandidate]], bool | list[list[bool]]]:
    """All prompts of a file at once: ``(examples, candidates, append_eos)`` as `collect_candidates` takes them."""
    lines = [
        parse_sample_line(path, number, line)
        for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1)
        if line.strip()
    ]
    if not lines:
        raise ValueError(f"{path} holds no prompts.")
    finished = [line.finished for line in lines]
    append_eos = True if all(all(row) for row in finished) else finished
    return [line.example for line in lines], [line.candidates for line in lines], append_eos


class SampleFile:
    """A checked, indexed samples file whose lines are read on demand (memory does not grow with the file).

    `SampleFile.open` reads the file once: it checks every line (so a bad line fails before any work), hashes the
    bytes (so a resumed job can refuse a changed file) and keeps the byte offset of each prompt's line. Everything
    but the vocabulary is checked without a model, so a bad file fails before one loads; `check_vocabulary` then
    checks the token ids against the model's vocabulary without reading the file again.
    ``has_mean_log_probs`` says whether the lines give the sampler's mean log-probabilities (all of them or none).
    """

    def __init__(
        self,
        path: Path,
        offsets: list[int],
        numbers: list[int],
        sha256: str,
        has_mean_log_probs: bool = False,
        largest_token: tuple[int, int, int] | None = None,
    ) -> None:
        self.path, self.offsets, self.numbers, self.sha256 = path, offsets, numbers, sha256
        self.has_mean_log_probs = has_mean_log_probs
        #: the largest token id among the candidates given as ids: (id, line number, candidate position), if any
        self.largest_token = largest_token

    @classmethod
    def open(cls, path: str | os.PathLike, vocab_size: int | None = None) -> SampleFile:
        """Read and check the file (token ids also against ``vocab_size`` when it is given)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No JSON-lines file at {path}.")
        offsets, numbers, digest, offset = [], [], hashlib.sha256(), 0
        with_log_probs: dict[bool, int] = {}  # whether a line gives mean_log_probs -> the first such line
        largest: tuple[int, int, int] | None = None
        with path.open("rb") as file:
            for number, raw in enumerate(file, start=1):
                digest.update(raw)
                line = raw.decode("utf-8")
                if line.strip():
                    parsed = parse_sample_line(path, number, line)
                    with_log_probs.setdefault(parsed.mean_log_probs is not None, number)
                    for position, candidate in enumerate(parsed.candidates):
                        if isinstance(candidate, list) and (largest is None or max(candidate) > largest[0]):
                            largest = (max(candidate), number, position)
                    offsets.append(offset)
                    numbers.append(number)
                offset += len(raw)
        if not offsets:
            raise ValueError(f"{path} holds no prompts.")
        if len(with_log_probs) == 2:
            raise ValueError(
                f'{path}, line {max(with_log_probs.values())}: "mean_log_probs" is given on line '
                f"{with_log_probs[True]} but not on line {with_log_probs[False]}: give it on every line or on none."
            )
        samples = cls(path, offsets, numbers, digest.hexdigest(), True in with_log_probs, largest)
        if vocab_size is not None:
            samples.check_vocabulary(vocab_size)
        return samples

    def check_vocabulary(self, vocab_size: int) -> None:
        """An error naming a line whose token ids lie outside a vocabulary of ``vocab_size`` ids, if there is one."""
        if self.largest_token is not None and self.largest_token[0] >= vocab_size:
            _, number, position = self.largest_token
            raise ValueError(
                f'{self.path}, line {number}: "candidates"[{position}] holds token ids outside the model\'s vocabulary '
                f"0..{vocab_size - 1}."
            )

    def __len__(self) -> int:
        return len(self.offsets)

    def read(self, indices: Sequence[int]) -> list[SampleLine]:
        """The prompts ``indices`` (0-based among the file's non-blank lines)."""
        lines = []
        with self.path.open("rb") as file:
            for index in indices:
                file.seek(self.offsets[index])
                lines.append(parse_sample_line(self.path, self.numbers[index], file.readline().decode("utf-8")))
        return lines
