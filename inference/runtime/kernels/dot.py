"""One tensor-core product for the project's Triton kernels. Triton's CPU interpreter
multiplies bf16 wrongly, so under it (tests) the operands go to float32 first: the same
exact products, summed in float32."""

from __future__ import annotations

import os

import triton
import triton.language as tl

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def dot(a, b, acc, F32: tl.constexpr):
    if F32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc)
    return tl.dot(a, b, acc)
