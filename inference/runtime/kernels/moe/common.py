"""What the experts' kernels share: the activation, a pair's routing, FP8 row scales,
block choice, the op wrapper, and the float32 reference with its self-check cases."""

from __future__ import annotations

from collections.abc import Callable

import torch
import triton
import triton.language as tl

from inference.runtime.gemma4 import fp8_experts


@triton.jit
def gelu_times(gate, up):
    """gelu_pytorch_tanh(gate) · up; 0.5·g·(1 + tanh(y)) == g·sigmoid(2y)."""
    inner = 0.7978845608028654 * (gate + 0.044715 * gate * gate * gate)
    return gate * tl.sigmoid(2.0 * inner) * up


@triton.jit
def routed_pair(index_ptr, weight_ptr, token, k, TOP_K: tl.constexpr):
    """The token's k-th (token, expert) pair: its number, the int64 value stored for it at
    `index_ptr` (expert, or sorted row) and its router weight in float32."""
    pair = token * TOP_K + k
    return pair, tl.load(index_ptr + pair).to(tl.int64), tl.load(weight_ptr + pair).to(tl.float32)


@triton.jit
def row_scale(scale_ptr, expert, rows, row_ok, num_rows):
    """The FP8 scales of an expert's weight rows (scales stored [experts, num_rows])."""
    return tl.load(scale_ptr + expert.to(tl.int64) * num_rows + rows, mask=row_ok, other=0.0)


def chosen_blocks(chosen, weight: torch.Tensor, plain, fp8):
    """The block sizes asked for, else the tuned ones for the weights' dtype."""
    if chosen is not None:
        return chosen
    return fp8 if weight.dtype == fp8_experts.FP8 else plain


def scale_args(weight: torch.Tensor, scale: torch.Tensor | None) -> dict:
    """The kernels' scale pointer and SCALED flag (unscaled: the weights stand in, unread)."""
    return {
        "scale_ptr": weight if scale is None else scale.contiguous(),
        "SCALED": scale is not None,
    }


EXPERTS_SCHEMA = (
    "(Tensor hidden, Tensor top_k_index, Tensor top_k_weights, Tensor gate_up_proj, "
    "Tensor down_proj, Tensor? gate_up_scale=None, Tensor? down_scale=None) -> Tensor"
)


def experts_op(name: str, kernels: Callable[..., torch.Tensor]):
    """`kernels` (the experts' arguments, EXPERTS_SCHEMA) as the op travelbot::`name`, which
    torch.compile keeps whole (its graph calls the kernels)."""

    def op(*args):
        return kernels(*args)

    registered = torch.library.custom_op(
        f"travelbot::{name}", op, mutates_args=(), schema=EXPERTS_SCHEMA
    )

    @registered.register_fake
    def _(hidden, *args):
        return torch.empty_like(hidden)

    return registered


def reference_experts(hidden, top_k_index, top_k_weights, gate_up_proj, down_proj):
    """The same sum in plain torch, one (token, expert) pair at a time (float32)."""
    out = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device)
    for token in range(hidden.shape[0]):
        x = hidden[token].float()
        for expert, weight in zip(top_k_index[token].tolist(), top_k_weights[token], strict=True):
            gate, up = (gate_up_proj[expert].float() @ x).chunk(2)
            act = torch.nn.functional.gelu(gate, approximate="tanh") * up
            out[token] += weight.float() * (down_proj[expert].float() @ act)
    return out


def check_cases(device: torch.device, tokens: int):
    """Small random experts for a self-check: (x, index, weights, stored, expected) for the
    bf16 weights and, where the device has FP8, the FP8 ones; stored is (gate_up, down,
    gate_up_scale, down_scale), expected the float32 reference on the weights used."""
    generator = torch.Generator(device=device).manual_seed(0)
    experts, hidden, inter, top_k = 8, 256, 96, 4

    def randn(*shape):
        return torch.randn(*shape, generator=generator, device=device, dtype=torch.bfloat16)

    x, gate_up = randn(tokens, hidden), randn(experts, 2 * inter, hidden) / 8
    down = randn(experts, hidden, inter) / 8
    index = torch.stack(
        [torch.randperm(experts, device=device, generator=generator)[:top_k] for _ in range(tokens)]
    )
    weights = torch.rand(tokens, top_k, device=device, generator=generator)
    stored = [(gate_up, down, None, None)]
    if fp8_experts.supported(device):  # and as FP8 values with row scales
        (gate_up_fp8, gate_up_scale), (down_fp8, down_scale) = map(
            fp8_experts.quantize, (gate_up, down)
        )
        stored.append((gate_up_fp8, down_fp8, gate_up_scale, down_scale))
    for gate_up, down, gate_up_scale, down_scale in stored:
        expected = reference_experts(
            x, index, weights, *(w if s is None else fp8_experts.dequantize(w, s, x.dtype)
                                 for w, s in ((gate_up, gate_up_scale), (down, down_scale)))
        )  # fmt: skip
        yield x, index, weights, (gate_up, down, gate_up_scale, down_scale), expected


def close_enough(got: torch.Tensor, expected: torch.Tensor) -> bool:
    return bool((got.float() - expected).abs().max() <= 0.02 * expected.abs().max())
