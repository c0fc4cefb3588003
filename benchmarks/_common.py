"""What the benchmark scripts share: writing a result table with its JSON, counting generated tokens, timing a call,
and saving a chosen ranker with its card.

Not a benchmark itself: the scripts import it (Python puts a script's own folder on ``sys.path``). Statistics come
from the library (`hf_language_ranker.evaluation`: `paired_bootstrap`, `paired_stderr`), never from here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only json at import time: rank_memory.py measures its processes' memory
    from hf_language_ranker import LanguageRanker


def write_results(folder: Path, stem: str, markdown: str, payload: Any) -> None:
    """Write ``<stem>.md`` and ``<stem>.json`` (indented, ending with a newline) into ``folder``; print the table."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.md").write_text(markdown)
    (folder / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(markdown)


def real_tokens(generated: Any, eos_ids: set[int]) -> int:
    """Generated tokens (a tensor ``[..., T]``) of each row up to and including its first EOS (all if it has none)."""
    total = 0
    for row in generated.reshape(-1, generated.shape[-1]).tolist():
        ends = [index for index, token in enumerate(row) if token in eos_ids]
        total += ends[0] + 1 if ends else len(row)
    return total


def milliseconds(run: Callable[[], object], repeats: int = 10, warmups: int = 1) -> float:
    """Mean milliseconds of ``run()`` over ``repeats`` calls, after ``warmups`` untimed ones."""
    for _ in range(warmups):
        run()
    started = time.perf_counter()
    for _ in range(repeats):
        run()
    return (time.perf_counter() - started) / repeats * 1e3


def ship(ranker: LanguageRanker, folder: Path, card: dict[str, Any], name: str) -> None:
    """Save a benchmark's chosen ``ranker`` (called ``name`` in the message) to ``folder`` with its model card
    (``card``: the fields of its `RankerModelCardData`, its training and evaluation sections)."""
    from hf_language_ranker import RankerModelCardData

    ranker.card_data = RankerModelCardData(**card)
    ranker.save_pretrained(folder)  # writes the card from card_data, over any earlier one
    print(f"saved the {name} to {folder}")
