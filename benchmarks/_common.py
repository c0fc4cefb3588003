"""What the benchmark scripts share: saving a chosen ranker with its card.

Not a benchmark itself: the scripts import it (Python puts a script's own folder on ``sys.path``). Statistics come
from the library (`hf_language_ranker.evaluation`: `paired_bootstrap`, `paired_stderr`), never from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hf_language_ranker import LanguageRanker


def ship(ranker: LanguageRanker, folder: Path, card: dict[str, Any], name: str) -> None:
    """Save a benchmark's chosen ``ranker`` (called ``name`` in the message) to ``folder`` with its model card
    (``card``: the ``model_card_kwargs`` of `save_pretrained`, its training and evaluation sections)."""
    (folder / "README.md").unlink(missing_ok=True)  # save_pretrained keeps an existing card
    ranker.save_pretrained(folder, model_card_kwargs=card)
    print(f"saved the {name} to {folder}")
