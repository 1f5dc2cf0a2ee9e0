"""Measuring training steps: wall time per step, peak memory, FLOP utilisation, a printed table.

Used by `tools/benchmark.py`; never by tests (speed is reported, not asserted).
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

# Dense peak throughput (TFLOP/s) by device name fragment and precision, for model FLOPs utilisation.
_GPU_PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "H100": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5},
    "V100": {"bf16": 125.0, "fp16": 125.0, "fp32": 15.7},
}


def benchmark_device(name: str) -> torch.device:
    """The device to measure on ("auto": CUDA when present); on CUDA, cuDNN autotuning is enabled
    since the shapes are fixed."""
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


def peak_tflops(device: torch.device, precision: str) -> float | None:
    """The device's dense peak TFLOP/s for `precision`, or None when unknown (CPUs, unlisted GPUs)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, table in _GPU_PEAK_TFLOPS.items():
        if key in name:
            return table.get(precision)
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], None], device: torch.device, warmup: int = 3, iters: int = 10) -> dict[str, float]:
    """Run `step` warmup + iters times; return seconds per step and peak memory in MiB.

    On CUDA the peak is the allocator's max allocated memory; on CPU it is the process's max RSS.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    _sync(device)
    seconds = (time.perf_counter() - start) / iters
    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"step_s": seconds, "peak_mem_mib": peak_mib}


def sdpa_flop_jit(inputs: list, outputs: list) -> int:
    """fvcore op handle for ``aten::scaled_dot_product_attention`` (fvcore does not count it):
    the multiply-adds of QK^T and AV, ``batch * n * m * (d + dv)``. Register it with
    ``FlopCountAnalysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_jit)``."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])
    *batch, n, d = q
    m, dv = k[-2], v[-1]
    count = n * m * (d + dv)
    for b in batch:
        count *= b
    return int(count)


def print_table(rows: Sequence[dict], title: str = "") -> str:
    """Format rows (dicts with the same keys) as a markdown table, print it and return it."""
    if not rows:
        return ""
    keys = list(rows[0].keys())

    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "-" if v is None else str(v)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k)) for k in keys) + " |" for r in rows]
    text = (f"### {title}\n\n" if title else "") + "\n".join(lines)
    print(text)
    return text


def write_json(rows: Sequence[dict], path: str | Path, **meta: object) -> Path:
    """Write benchmark rows plus environment facts to `path` as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    env = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "threads": torch.get_num_threads(),
    }
    path.write_text(json.dumps({"env": env, **meta, "rows": list(rows)}, indent=2))
    return path
