"""The compile policy: which trials run a compiled step, and how the training forward is compiled.

resources.compile is off, on, cudagraphs or auto; auto depends on the trial's length alone (never on
the machine), so a trial is compiled or not on every machine alike. Compiled steps change the
numbers in the last bits (docs/performance.md).
"""
from __future__ import annotations

import os

import torch

# compile: auto compiles trials of at least this many steps. Measured on 2 CPU cores (benchmarks/
# compile.py, docs/performance.md): a compiled step saves 1.9 ms (plain_cnn 16) to 7.7 ms (resnet_v1
# 56), and compiling costs about 1.5 s with inductor's cache warm, 14 to 27 s cold: break-even at
# 176 to 856 steps warm, 3,446 to 7,166 cold. Only the first trial of a shape on a machine compiles
# cold, so 2000 steps (over twice the worst warm break-even) repay it for a study.
COMPILE_MIN_STEPS = 2000


def compile_mode(setting: str, total_steps: int) -> str:
    """What resources.compile means for a trial of total_steps: off, on or cudagraphs. It depends on
    the spec alone (never on the machine), so a trial is compiled or not on every machine alike."""
    if setting == "auto":
        return "on" if total_steps >= COMPILE_MIN_STEPS else "off"
    return setting


def compile_cache() -> str:
    """Where inductor keeps compiled kernels: $TORCHINDUCTOR_CACHE_DIR, else one folder per user in the
    machine's temporary folder, shared by every process of the machine (Ray workers included), so
    only the first trial of a shape pays the whole compile time."""
    import tempfile

    return os.environ.get("TORCHINDUCTOR_CACHE_DIR") or os.path.join(tempfile.gettempdir(),
                                                                      f"elrbench-inductor-{os.getuid()}")


def compiled(forward: torch.nn.Module, mode: str) -> torch.nn.Module:
    """The training forward through torch.compile (CUDA graphs for mode cudagraphs). Dynamo's
    in-process caches are reset first: a process that runs many trials (a chunk of a Ray study)
    would otherwise reach dynamo's recompile limit and silently fall back to eager."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = compile_cache()
    torch._dynamo.reset()
    return torch.compile(forward, mode="reduce-overhead" if mode == "cudagraphs" else None)
