"""The rankers released with this package, by short name.

They live in ``model_cards/`` at the top of the repository (one folder each: ``config.json``, ``model.safetensors``,
``README.md`` card); ``hf_language_ranker/shipped`` links to that folder, so the wheel carries them as package data
and an installed package finds them without a checkout::

    LanguageRanker.from_pretrained("smollm2-135m-instruct-mixture")
"""

from __future__ import annotations

from pathlib import Path

#: the released rankers' folders (a link to model_cards/ in a checkout, real files in an installed wheel)
SHIPPED_FOLDER = Path(__file__).resolve().parent / "shipped"


def shipped_ranker_names() -> list[str]:
    """Short names of the rankers released with this package (their folder names), sorted."""
    if not SHIPPED_FOLDER.is_dir():
        return []
    return sorted(path.name for path in SHIPPED_FOLDER.iterdir() if (path / "config.json").is_file())


def shipped_ranker_folder(name: str) -> Path:
    """Folder of the released ranker ``name``; a clear error listing the released names otherwise."""
    if name not in shipped_ranker_names():
        released = ", ".join(shipped_ranker_names()) or "none (this install lacks hf_language_ranker/shipped)"
        raise FileNotFoundError(f"No released ranker named {name!r}. Released with this package: {released}.")
    return SHIPPED_FOLDER / name
