"""Triton kernels of the batching engine, one module per kernel family.

Importing one needs Triton (and registers its torch ops); each has `works_on(device)`, the
start-up check that compiles its kernels and compares them with a torch reference.
`Kernels.detect` runs the checks the engine's settings need, once, at start.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import structlog

log = structlog.get_logger()


@dataclass(frozen=True)
class Kernels:
    """The kernel families this engine runs: those whose start-up check passed on its
    device. `Kernels()`: none, the torch paths everywhere (the CPU, tests' references)."""

    moe: bool = False  # decode steps' experts (per-pair and expert-major) and the router
    moe_prompt: bool = False  # prompts' experts as grouped GEMMs (needs `moe`)
    softmax: bool = False  # decode attention's masked softmax
    # decode attention over FP8 keys and values, or after a kept prefix (few rows); the CPU
    # passes (it dequantizes), so FP8 keys and values are allowed there
    decode_attention: bool = False
    prompt_attention: bool = False  # every layer's prompt attention
    kv_write: bool = False  # a decode step's keys and values into the slots

    @classmethod
    def detect(
        cls,
        device,
        *,
        experts: bool,
        softmax: bool,
        decode_attention: bool,
        prompt_attention: bool,
    ) -> Kernels:
        """Check the families asked for (kv_write always) on `device`; a failed check is
        logged and its torch path serves instead."""
        gpu = device.type == "cuda"
        moe = gpu and experts and works("moe", device, "grouped_mm")
        return cls(
            moe=moe,
            moe_prompt=moe and works("moe_prompt", device, "grouped_mm"),
            softmax=gpu and softmax and works("softmax", device, "compiled softmax"),
            decode_attention=decode_attention
            and works("decode_attention", device, "bf16 keys and values, read by matmuls"),
            prompt_attention=gpu
            and prompt_attention
            and works("prompt_attention", device, "flash attention"),
            kv_write=gpu and works("kv_write", device, "indexed assignment"),
        )


def works(family: str, device, fallback: str) -> bool:
    """inference.runtime.kernels.`family`.works_on(device) (importing it registers its ops;
    it needs Triton); a failure to import or run counts as no, logged as
    `family`_kernel_wrong / _failed with what serves instead."""
    try:
        if importlib.import_module(f"{__name__}.{family}").works_on(device):
            return True
        log.error(f"{family}_kernel_wrong", fallback=fallback)
    except Exception:  # e.g. no C compiler for Triton's launcher
        log.exception(f"{family}_kernel_failed", fallback=fallback)
    return False
