"""A CPU model's linear layers run through oneDNN with their weights packed once, for the length of a call.

Decoding multiplies a few rows by every weight of the model at each step. On a CPU torch runs a float32
``nn.Linear`` through MKL's GEMM and a bfloat16 one through oneDNN, which reorders the weight into its blocked
layout at every call; neither comes near the memory bandwidth those weights need. `prepacked_linears` packs each
weight into oneDNN's layout once (``torch.ops.mkldnn._reorder_linear_weight``, the op torch's inductor packs CPU
weights with when it freezes a model) and runs the layers on the packed copy (``torch.ops.mkldnn._linear_pointwise``)
until the context closes. `benchmarks/prepacked_linears.py` measures what it gives.

Where torch already runs bfloat16 layers through oneDNN the outputs are the same, bit for bit (measured on an AVX512
CPU); in float32 they differ by rounding (oneDNN sums in another order than MKL: a relative difference of about 1e-6,
as between two CPUs). While the context is open the packed weights are a second copy of the layers' weights in
memory; where that copy would take more than half the memory the system has available (Linux's ``MemAvailable``),
nothing is packed and a warning says so. Only plain ``nn.Linear`` layers on a CPU, in float32 or in bfloat16 where
oneDNN supports it on this CPU, whose ``forward`` nothing else has replaced (accelerate's hooks) are packed, and only
while gradients are off and CPU autocast is not on (the packed op would not follow autocast's dtype).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from transformers.utils import logging

logger = logging.get_logger(__name__)

#: the share of the system's available memory the packed copy may take
MEMORY_SHARE = 0.5


def packing_available() -> bool:
    """Whether this torch build has oneDNN and the two ops packing needs."""
    return torch.backends.mkldnn.is_available() and all(
        hasattr(torch.ops.mkldnn, name) for name in ("_reorder_linear_weight", "_linear_pointwise")
    )


def packable_dtypes() -> tuple[torch.dtype, ...]:
    """float32, and bfloat16 where oneDNN computes it on this CPU (as torch itself decides)."""
    bfloat16 = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return (torch.float32, torch.bfloat16) if bfloat16 is not None and bfloat16() else (torch.float32,)


def packable_linears(model: nn.Module) -> list[nn.Linear]:
    """The layers of ``model`` `prepacked_linears` would pack (see the module docstring for which)."""
    dtypes = packable_dtypes()
    return [
        module
        for module in model.modules()
        if type(module) is nn.Linear
        and module.weight.device.type == "cpu"
        and module.weight.dtype in dtypes
        and (module.bias is None or module.bias.dtype == module.weight.dtype)
        and "forward" not in vars(module)
        and not hasattr(module, "_hf_hook")
    ]


def available_memory_bytes() -> int | None:
    """The memory the system can still give processes (Linux's ``MemAvailable``), or ``None`` where unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def fits_in_memory(layers: list[nn.Linear]) -> bool:
    """Whether a packed copy of ``layers``' weights fits in `MEMORY_SHARE` of the available memory (warns if not)."""
    needed = sum(layer.weight.numel() * layer.weight.element_size() for layer in layers)
    available = available_memory_bytes()
    if available is None or needed <= MEMORY_SHARE * available:
        return True
    logger.warning_once(
        f"Not packing the linear layers for oneDNN: the packed copy would take {needed / 2**30:.1f} GiB of the "
        f"{available / 2**30:.1f} GiB available, so torch's own (slower) kernels run. Free memory, or pass "
        "prepack_weights=False to run them without this check."
    )
    return False


def _packed_forward(weight: torch.Tensor, bias: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(inputs: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(inputs, weight, bias, "none", [], "")

    return forward


@contextmanager
def prepacked_linears(model: nn.Module, rows: int, enabled: bool = True) -> Iterator[int]:
    """Run ``model``'s packable linear layers on weights packed for oneDNN until the context closes.

    Args:
        model: any torch module; layers that cannot be packed run as before.
        rows: how many rows a call will usually carry (oneDNN picks its blocking for it; any count works).
        enabled: ``False`` packs nothing (memory stays flat).

    Yields:
        The number of layers packed (0 when disabled, with gradients or CPU autocast on, when torch lacks the ops, or
        when the packed copy would not fit in memory).
    """
    plain_kernels = torch.is_grad_enabled() or torch.is_autocast_enabled("cpu") or not packing_available()
    layers = packable_linears(model) if enabled and not plain_kernels else []
    if layers and not fits_in_memory(layers):
        layers = []
    try:
        for layer in layers:
            packed = torch.ops.mkldnn._reorder_linear_weight(layer.weight.detach(), max(rows, 1))
            bias = None if layer.bias is None else layer.bias.detach()
            layer.forward = _packed_forward(packed, bias)
        yield len(layers)
    finally:
        for layer in layers:
            vars(layer).pop("forward", None)
