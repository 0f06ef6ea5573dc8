"""The experts' kernels: a decode step's (kernels.moe: per-pair up to
layers.FUSED_EXPERTS_TOKENS, expert-major beyond) against transformers' experts, and a
prompt's grouped GEMMs (kernels.moe_prompt) against torch's grouped_mm
(moe.grouped_experts), each on bf16 and FP8 weights (the FP8 error against the reference
on the dequantized weights: the kernel's own; `fp8 vs bf16 mean`: what FP8 costs)."""

from __future__ import annotations

import itertools

import torch
from transformers import Gemma4TextConfig
from transformers.models.gemma4.modeling_gemma4 import Gemma4TextExperts

from inference.runtime.gemma4 import fp8_experts
from inference.runtime.kernels import moe, moe_prompt
from tools.check_kernels import Bench, relative

# (BLOCK_N, BLOCK_K, warps) per-pair; (BLOCK_M, BLOCK_N, BLOCK_K, warps) expert-major
DECODE_TILES = {
    moe.fused_experts: list(itertools.product((8, 16, 32), (128, 256, 512), (4, 8))),
    moe.expert_major_experts: list(itertools.product((16,), (32, 64, 128), (64, 128, 256), (4, 8))),
}  # fmt: skip
# (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages), around the best of wider sweeps
PROMPT_TILES = [
    (64, 64, 64, 4, 3), (64, 128, 64, 4, 3), (64, 64, 128, 4, 3), (64, 128, 64, 8, 4),
    (128, 64, 64, 4, 3), (128, 64, 64, 8, 3), (128, 64, 64, 8, 4), (128, 128, 64, 8, 3),
    (128, 64, 128, 8, 3), (128, 128, 32, 8, 4), (128, 256, 64, 8, 3), (256, 64, 64, 8, 3),
]  # fmt: skip


class Experts:
    """`bench.layers` layers of random experts, bf16 and FP8: (gate_up, down, gate_up
    scale, down scale) each, and transformers' module of the first and all bf16 ones."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.config = Gemma4TextConfig(**{**bench.text, "vocab_size": 256})
        self.config._experts_implementation = "grouped_mm" if bench.cuda else "eager"
        self.modules = []
        for _ in range(bench.layers):
            module = Gemma4TextExperts(self.config).to(bench.device, torch.bfloat16)
            torch.nn.init.normal_(module.gate_up_proj, std=0.02)
            torch.nn.init.normal_(module.down_proj, std=0.02)
            self.modules.append(module)
        self.stored = {
            "bf16": [(m.gate_up_proj, m.down_proj, None, None) for m in self.modules],
            "fp8": [],
        }
        for m in self.modules:
            (gate_up, gate_up_scale), (down, down_scale) = map(
                fp8_experts.quantize, (m.gate_up_proj, m.down_proj)
            )
            self.stored["fp8"].append((gate_up, down, gate_up_scale, down_scale))

    def routed(self, tokens: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(hidden, top-k index, weights) of `tokens` random tokens."""
        hidden = self.bench.randn(tokens, self.config.hidden_size)
        scores = self.bench.randn(tokens, self.config.num_experts, dtype=torch.float32)
        weights, index = scores.softmax(-1).topk(self.config.top_k_experts, dim=-1)
        return hidden, index, weights / weights.sum(-1, keepdim=True)

    def expected(self, hidden, index, weights) -> dict[str, torch.Tensor]:
        """The float32 reference on the first layer's bf16 weights and dequantized FP8."""
        gate_up, down, gate_up_scale, down_scale = self.stored["fp8"][0]
        dequantized = (fp8_experts.dequantize(gate_up, gate_up_scale, hidden.dtype),
                       fp8_experts.dequantize(down, down_scale, hidden.dtype))  # fmt: skip
        return {"bf16": reference(hidden, index, weights, *self.stored["bf16"][0][:2]),
                "fp8": reference(hidden, index, weights, *dequantized)}  # fmt: skip

    def compare(self, row: dict, kernels: dict, routed, touched_bytes: float | None = None):
        """Each kernel on each dtype into `row`: error, ms per layer, TB/s of the experts
        it reads (`touched_bytes` in bf16) or, for prompts, TFLOP/s."""
        expected = self.expected(*routed)
        tokens = routed[0].shape[0]
        tflop = 6 * tokens * self.config.top_k_experts * self.config.hidden_size * (
            self.config.moe_intermediate_size) / 1e12  # fmt: skip
        for (name, fn), dtype in itertools.product(kernels.items(), ("bf16", "fp8")):
            got = fn(*routed, *self.stored[dtype][0])
            row[f"{dtype} {name} error"] = relative(got, expected[dtype])
            if dtype == "fp8":
                mean = (got.float() - expected["bf16"]).abs().mean() / expected["bf16"].abs().mean()
                row[f"fp8 {name} vs bf16 mean"] = round(mean.item(), 5)
            ms = row[f"{dtype} {name} ms"] = self.bench.ms(
                lambda fn=fn, dtype=dtype: [fn(*routed, *s) for s in self.stored[dtype]]
            )
            if touched_bytes is not None:
                per_byte = 2 if dtype == "bf16" else 1
                row[f"{dtype} {name} TB/s"] = round(touched_bytes * per_byte / ms / 1e9, 2)
            else:
                row[f"{dtype} {name} TFLOP/s"] = round(tflop / ms * 1e3, 1)


def reference(hidden, index, weights, gate_up_proj, down_proj) -> torch.Tensor:
    """float32, one expert at a time over all its tokens."""
    out = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device)
    for expert in index.unique().tolist():
        token, k = (index == expert).nonzero(as_tuple=True)
        gate, up = (hidden[token].float() @ gate_up_proj[expert].float().T).chunk(2, dim=-1)
        act = torch.nn.functional.gelu(gate, approximate="tanh") * up
        out.index_add_(0, token, act @ down_proj[expert].float().T * weights[token, k, None])
    return out


def decode_experts(bench: Bench, sweep: bool):
    """measure(tokens) of a decode step's experts."""
    experts = Experts(bench)
    config = experts.config

    def measure(tokens: int) -> dict:
        routed = experts.routed(tokens)
        touched = int(routed[1].unique().numel())
        row: dict = {"tokens": tokens, "experts touched": touched}
        expected = experts.expected(*routed)["bf16"]
        module = experts.modules[0]
        row["transformers experts error"] = relative(module(*routed), expected)
        row["transformers experts ms"] = bench.ms(lambda: [m(*routed) for m in experts.modules])
        touched_bytes = touched * 3 * config.hidden_size * config.moe_intermediate_size
        kernels = {"per-pair": moe.fused_experts, "expert-major": moe.expert_major_experts}
        experts.compare(row, kernels, routed, touched_bytes)
        if sweep:
            for (name, fn), dtype, part in itertools.product(
                kernels.items(), ("bf16", "fp8"), ("gate_up", "down")
            ):
                row[f"sweep {dtype} {name} {part} (ms, tile)"] = bench.sweep(
                    lambda tile, fn=fn, dtype=dtype, part=part: [
                        fn(*routed, *s, **{f"{part}_blocks": tile}) for s in experts.stored[dtype]
                    ],
                    DECODE_TILES[fn],
                )[:5]
        return row

    return measure


def prompt_experts(bench: Bench, sweep: bool):
    """measure(tokens) of a prompt's experts."""
    experts = Experts(bench)

    def measure(tokens: int) -> dict:
        routed = experts.routed(tokens)
        row: dict = {"tokens": tokens}
        kernels = {"grouped_mm": moe.grouped_experts, "triton": moe_prompt.prompt_experts}
        experts.compare(row, kernels, routed)
        if sweep:
            for dtype, part in itertools.product(("bf16", "fp8"), ("gate_up", "down")):
                row[f"sweep {dtype} {part} (ms, tile)"] = bench.sweep(
                    lambda tile, dtype=dtype, part=part: [
                        moe_prompt.prompt_experts(*routed, *s, **{f"{part}_blocks": tile})
                        for s in experts.stored[dtype]
                    ],
                    PROMPT_TILES,
                )[:5]
        return row

    return measure
