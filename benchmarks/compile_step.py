"""Does compiling the decoding step speed up sampling on a CPU? Ranked `generate` and plain sampling.

    python benchmarks/compile_step.py [--dtype bfloat16] [--compile | --static-cache]

On the embedded SmolLM2-135M-Instruct with the released mixture ranker, one arithmetic prompt, N=16 candidates of 64
tokens each (every candidate runs the whole budget), in milliseconds per decoding step:

- as shipped: ranked `generate` and plain transformers sampling (``num_return_sequences=16``), alternately, twice
  each, after one warm-up call;
- ``--compile``: the same after ``model.forward = torch.compile(model.forward, dynamic=True)``; the warm-up's time
  includes the compilation;
- ``--static-cache``: besides those two, plain sampling the way transformers compiles it on an accelerator, a static
  cache and its compiled step (``cache_implementation="static"``, a `CompileConfig` allowed on every device). Its
  warm-up time, compilation included, is printed. Ranked `generate` keeps its own cache (it drops finished rows), so
  it runs as shipped.

Compilation starts from an empty inductor cache (a fresh ``TORCHINDUCTOR_CACHE_DIR``), as a user's first call does.

Writes ``benchmarks/results/samplers/compile_step[_compiled|_static_cache][_<dtype>].{md,json}`` (no dtype for
bfloat16) (issue 30's exploration).
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

# compile from a cold cache, as a user's first call does (inductor reads the variable when it is imported)
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="compile_step_")
atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)

import torch  # noqa: E402
from _common import write_results  # noqa: E402
from transformers import CompileConfig  # noqa: E402

from hf_language_ranker import LanguageRanker  # noqa: E402
from hf_language_ranker.embedded import load_model_and_tokenizer  # noqa: E402
from hf_language_ranker.prompts import encode_prompts, resolve_chat_template  # noqa: E402
from hf_language_ranker.tasks import load_task  # noqa: E402

STEPS, CANDIDATES = 64, 16
RESULTS = Path(__file__).parent / "results" / "samplers"


#: each variant of the run: its heading, its command-line flag and its results file's suffix
VARIANTS = {
    "uncompiled": ("uncompiled", "", ""),
    "compile": ("torch.compile(model.forward, dynamic=True)", " --compile", "_compiled"),
    "static_cache": ("as shipped, and transformers' static cache compiled", " --static-cache", "_static_cache"),
}


def static_cache_arguments() -> dict[str, Any]:
    """`generate` arguments for transformers' static cache with its compiled decoding step, on any device."""
    compile_config = CompileConfig(mode="default")
    compile_config._compile_all_devices = True  # transformers compiles the step on accelerators only by default
    return {"cache_implementation": "static", "compile_config": compile_config}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bfloat16")
    variant = parser.add_mutually_exclusive_group()
    variant.add_argument("--compile", action="store_true", help="compile the model's forward (dynamic shapes)")
    variant.add_argument("--static-cache", action="store_true", help="also time transformers' compiled static path")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model_and_tokenizer(None, dtype=args.dtype)
    ranker = LanguageRanker.from_pretrained("smollm2-135m-instruct-mixture")
    use_template = resolve_chat_template(tokenizer, None)
    prompt = load_task("arithmetic", size=1, seed=3)[0]["prompt"]
    inputs = encode_prompts(tokenizer, [prompt], use_template)
    paths: dict[str, dict[str, Any]] = {
        "ranked generate": {"ranker": ranker, "num_candidates": CANDIDATES, "tokenizer": tokenizer},
        "plain sampling": {"do_sample": True, "num_return_sequences": CANDIDATES},
    }
    if args.static_cache:
        paths["plain sampling, static cache compiled"] = {**paths["plain sampling"], **static_cache_arguments()}

    def sample(path: str) -> float:
        torch.manual_seed(0)
        started = time.perf_counter()
        model.generate(**inputs, max_new_tokens=STEPS, min_new_tokens=STEPS, **paths[path])
        return time.perf_counter() - started

    if args.compile:
        model.forward = torch.compile(model.forward, dynamic=True)
    warm_up = {path: round(sample(path), 1) for path in paths}
    per_step: dict[str, list[float]] = {path: [] for path in paths}
    for _ in range(2):
        for path in paths:
            per_step[path].append(round(sample(path) / STEPS * 1e3, 1))
    run, flags, suffix = VARIANTS["compile" if args.compile else "static_cache" if args.static_cache else "uncompiled"]
    lines = [
        f"# {run}: ms per decoding step, {args.dtype}, N={CANDIDATES} x {STEPS} tokens, {args.threads} threads",
        "",
        f"warm-up (first call{', compilation included' if flags else ''}), s: "
        + ", ".join(f"{path} {s}" for path, s in warm_up.items()),
        "",
        *(f"- {path}: {', '.join(map(str, values))}" for path, values in per_step.items()),
        "",
        f"`python benchmarks/compile_step.py{flags} --dtype {args.dtype}`",
    ]
    stem = "compile_step" + suffix + ("" if args.dtype == "bfloat16" else f"_{args.dtype}")
    write_results(RESULTS, stem, "\n".join(lines) + "\n", {"run": run, "warm_up_seconds": warm_up, **per_step})


if __name__ == "__main__":
    main()
