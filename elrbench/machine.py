"""The machine a trial ran on: what can change its numbers (CPU kernels, torch and CUDA builds, GPU).

Deep networks at a high learning rate are chaotic: a seed that trains on one machine may fail on
another, because floating-point kernels differ (docs/results.md has an example). Every study and
every trial result records where it ran, so such differences can be told apart from real ones.
"""
from __future__ import annotations

import functools
import platform
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@functools.cache
def machine() -> dict[str, str | None]:
    """cpu, cpu_capability (the kernels torch picked: AVX2, AVX512, ...), torch, cuda and gpu."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": f"{_cpu_model()} ({platform.machine()})", "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "gpu": gpu}


def describe(m: dict) -> str:
    """One line: 'AMD EPYC (x86_64), AVX512; torch 2.13.0+cpu; no CUDA; no GPU'."""
    return (f"{m.get('cpu')}, {m.get('cpu_capability')}; torch {m.get('torch')}; "
            + (f"CUDA {m['cuda']}" if m.get("cuda") else "no CUDA") + "; "
            + (f"GPU {m['gpu']}" if m.get("gpu") else "no GPU"))
