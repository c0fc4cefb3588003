"""The released rankers install with the package: a wheel built from this checkout, installed outside it, serves
ranked `generate` with the default ranker; short names resolve in `from_pretrained`, the CLI and lm-eval."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from transformers.utils.logging import warning_once

from hf_language_ranker import LanguageRanker
from hf_language_ranker.embedded import EMBEDDED_DEFAULT_RANKER, EMBEDDED_MODEL_ID, embedded_default_ranker
from hf_language_ranker.shipped_rankers import shipped_ranker_folder, shipped_ranker_names

RELEASED = ["smollm2-135m-instruct-arithmetic", "smollm2-135m-instruct-mixture"]


def test_released_rankers_are_the_model_cards_folders_by_short_name():
    assert shipped_ranker_names() == RELEASED
    for name in RELEASED:
        assert shipped_ranker_folder(name).resolve() == (ROOT / "model_cards" / name).resolve()
        by_name = LanguageRanker.from_pretrained(name)
        by_folder = LanguageRanker.from_pretrained(ROOT / "model_cards" / name)
        assert by_name.config == by_folder.config
        for key, value in by_folder.state_dict().items():
            assert torch.equal(by_name.state_dict()[key], value)
    assert embedded_default_ranker() == shipped_ranker_folder(EMBEDDED_DEFAULT_RANKER)


def test_a_local_folder_wins_over_a_released_name_and_unknown_names_list_the_released(tmp_path, monkeypatch):
    local = LanguageRanker(LanguageRanker.from_pretrained(RELEASED[0]).config)
    local.save_pretrained(tmp_path / RELEASED[0])
    monkeypatch.chdir(tmp_path)
    loaded = LanguageRanker.from_pretrained(RELEASED[0]).state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in local.state_dict().items())
    with pytest.raises(FileNotFoundError, match="No released ranker named 'nosuch'.*smollm2-135m-instruct-mixture"):
        shipped_ranker_folder("nosuch")
    with pytest.raises(OSError, match="released with this package \\(smollm2-135m-instruct-arithmetic"):
        LanguageRanker.from_pretrained("./nosuch")


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory):
    """This checkout built as a wheel and installed with --no-deps into a folder outside it."""
    folder = tmp_path_factory.mktemp("wheel")
    source = folder / "source"  # a copy, so the build leaves nothing in the checkout (nor reuses its build/)
    for name in ("hf_language_ranker", "model_cards"):
        shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(folder / "dist"), str(source)]
    subprocess.run(build, check=True, capture_output=True, timeout=600)
    (wheel,) = (folder / "dist").glob("hf_language_ranker-*.whl")
    install = [*pip, "install", "--no-deps", "--no-index", "--target", str(folder / "site"), str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=600)
    return folder / "site"


def test_the_wheel_carries_the_released_rankers_and_generates_with_the_default_one(installed_wheel, tmp_path):
    pytest.importorskip("gguf", reason="the embedded model loads from its GGUF (pip install gguf)")
    assert sorted(path.name for path in (installed_wheel / "hf_language_ranker" / "shipped").iterdir()) == RELEASED
    script = (
        "import sys, hf_language_ranker; from hf_language_ranker.cli import main; "
        "print('module', hf_language_ranker.__file__); sys.exit(main(sys.argv[1:]))"
    )
    # the default model is the embedded one and its default ranker the released mixture ranker (no --ranker)
    arguments = ["generate", "--prompt", "Calculate 2 + 3.", "--num-candidates", "2", "--max-new-tokens", "6"]
    environment = {**os.environ, "PYTHONPATH": str(installed_wheel), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script, *arguments, "--dtype", "bfloat16"],
        cwd=tmp_path,  # no model_cards/ here
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"module {installed_wheel / 'hf_language_ranker' / '__init__.py'}" in result.stdout
    lines = [line for line in result.stdout.splitlines() if line[:2] in ("->", "  ") and line.strip()[:1] in "+-"]
    assert len(lines) == 2 and sum(line.startswith("->") for line in lines) == 1
    assert "but is used with" not in result.stderr  # the fit check knows the embedded model's real id


def test_lm_eval_names_the_embedded_model_and_its_released_ranker(caplog):
    pytest.importorskip("gguf", reason="the embedded model loads from its GGUF (pip install gguf)")
    from hf_language_ranker.lm_eval import RankedHFLM

    warning_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger="hf_language_ranker"):
        model = RankedHFLM(pretrained="embedded", num_candidates=2, dtype="bfloat16", batch_size=1)
    assert model.model.config._name_or_path == EMBEDDED_MODEL_ID and model.model.dtype == torch.bfloat16
    assert model.ranker.config.base_model == EMBEDDED_MODEL_ID
    assert "but is used with" not in caplog.text
    with pytest.raises(ValueError, match="ranker= is needed"):
        RankedHFLM(pretrained=str(ROOT / "nosuch-model"), num_candidates=2)
