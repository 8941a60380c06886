"""What this CPU computes fast: one place that reads the CPU's flags and picks the dtype of every
model (the vLLM and transformers engines, the critic, the embedder, the fluency LM).

bfloat16 pays only where the CPU has bf16 matrix units: Intel AMX (`amx_bf16`) or AVX512-BF16
(`avx512_bf16`). Elsewhere (AVX2-only AMD EPYC, most laptops) bfloat16 is emulated and runs
several times slower than float32: on a 2-core AMD EPYC (AVX2, no AVX-512) vLLM with SmolLM2 took
24.5 s for the generation worker's 24 prompts in bfloat16 and 7.1 s in float32 (docs/BENCHMARKS.md).
Flags come from /proc/cpuinfo (Linux); where it cannot be read, float32 is the safe choice.
"""

from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path

BF16_FLAGS = ("amx_bf16", "avx512_bf16")
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")  # what benchmarks print
DTYPES = ("float32", "bfloat16")


@lru_cache
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The first CPU's feature flags (lower case); empty when /proc/cpuinfo is not there."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    return parse_flags(text)


def parse_flags(cpuinfo_text: str) -> frozenset[str]:
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 says flags, arm64 says Features
            return frozenset(value.lower().split())
    return frozenset()


@lru_cache
def cpu_name(cpuinfo: str = "/proc/cpuinfo") -> str:
    try:
        for line in Path(cpuinfo).read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def has_bf16_units(flags: frozenset[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in BF16_FLAGS)


def choose_dtype(setting: str = "auto", flags: frozenset[str] | None = None) -> str:
    """'bfloat16' or 'float32'. `setting` is INTENTFLOW_DTYPE: 'auto' reads the flags; an explicit
    dtype is returned as it is (an operator's override). Raises ValueError on anything else."""
    if setting in DTYPES:
        return setting
    if setting != "auto":
        raise ValueError(f"dtype {setting!r}: use auto, float32 or bfloat16")
    return "bfloat16" if has_bf16_units(flags) else "float32"


def torch_dtype(setting: str = "auto"):
    import torch

    return getattr(torch, choose_dtype(setting))


def describe(setting: str = "auto") -> dict:
    """For benchmark reports and logs: the CPU, its relevant flags, the cores and the dtype chosen."""
    import os

    flags = cpu_flags()
    return {"cpu": cpu_name(), "machine": platform.machine(), "cores": os.cpu_count(),
            "flags": [f for f in REPORTED_FLAGS if f in flags], "dtype_setting": setting,
            "dtype": choose_dtype(setting)}
