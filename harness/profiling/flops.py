"""FLOPs of real inference calls with torch's FlopCounterMode (FLOPs = 2 × multiply-accumulates).

FlopCounterMode counts the aten ops that actually execute, so skipped blocks and pruned tokens are counted
as they ran. On CPU it misses scaled-dot-product attention (``aten._scaled_dot_product_flash_attention_for_cpu``
and the math fallback); we register them: 2·B·H·Lq·Lk·D for QKᵀ plus the same for AV (the causal mask is
ignored, as torch does for the other SDPA kernels).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten
CONVENTION = "FLOPs = 2 x MACs; torch FlopCounterMode + CPU SDPA mapping (causal mask not discounted)"


def _sdpa_flops(q_shape: Any, k_shape: Any, v_shape: Any) -> int:
    *batch, lq, d = q_shape
    lk = k_shape[-2]
    dv = v_shape[-1]
    b = 1
    for x in batch:
        b *= x
    return 2 * b * lq * lk * d + 2 * b * lq * lk * dv


def _cpu_flash(query, key, value, *args, out_shape=None, **kwargs) -> int:  # noqa: ANN001
    return _sdpa_flops(query, key, value)  # FlopCounterMode wraps custom mappings with shape_wrapper: these are shapes


def _custom_mapping() -> dict:
    mapping = {}
    for name in ("_scaled_dot_product_flash_attention_for_cpu",):
        op = getattr(aten, name, None)
        if op is not None:
            mapping[op] = _cpu_flash
    return mapping


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[int, Any]:
    """Run ``fn(*args, **kwargs)`` once under the counter; return (total FLOPs, fn's output)."""
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_custom_mapping()) as counter:
        out = fn(*args, **kwargs)
    return int(counter.get_total_flops()), out


def flops_by_op(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, int]:
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_custom_mapping()) as counter:
        fn(*args, **kwargs)
    return {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
