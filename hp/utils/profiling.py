"""Cost of a forward pass: multiply-accumulates (counted) and latency (measured), and the hardware it ran on."""
from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def count_macs(forward: Callable[..., object], *inputs: torch.Tensor) -> int:
    """Multiply-accumulates of one call `forward(*inputs)`: convolutions, matmuls and attention (CPU SDPA, which
    FlopCounterMode has no formula for, included)."""
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        forward(*inputs)
    return counter.get_total_flops() // 2


def median_latencies(calls: list[Callable[[], object]], repeats: int, warmup: int = 2,
                     sync: Callable[[], None] | None = None) -> list[float]:
    """Median wall time (s) of each call; runs alternate between the calls so that drift hits all alike.
    `sync` (e.g. torch.cuda.synchronize) runs before each clock read, for asynchronous devices."""
    sync = sync or (lambda: None)
    times = [[] for _ in calls]
    with torch.inference_mode():
        for i in range(warmup + repeats):
            for call, t in zip(calls, times):
                sync()
                t0 = time.perf_counter()
                call()
                sync()
                if i >= warmup:
                    t.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: torch.device | None = None) -> dict:
    """What ran or was timed: CPU, cores this process may use, torch threads, and the GPU when `device` is CUDA
    (None: whenever CUDA is present)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cuda = torch.cuda.is_available() if device is None else device.type == "cuda"
    # cpu_kernels: the SIMD level of torch's CPU kernels (AVX512, AVX2, ...), which decides a CPU result's last bits
    return {"cpu": cpu_name(), "cores": cores, "torch_threads": torch.get_num_threads(),
            "cpu_kernels": torch.backends.cpu.get_cpu_capability(),
            "gpu": torch.cuda.get_device_name(device) if cuda else None, "torch": torch.__version__,
            "python": platform.python_version()}
