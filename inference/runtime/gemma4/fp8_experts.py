"""Expert weights stored as FP8 (e4m3) with one float32 scale per output row (opt-in).

A decode step of many sequences reads nearly every expert of every layer, most of the
bytes the step reads (docs/performance.md). In FP8 half of those bytes, and half of the
experts' memory, is saved. The Triton kernels (kernels.moe for decode steps,
kernels.moe_prompt for prompts) load FP8 and scale their sums; without Triton's prompt
kernels a prompt dequantizes its layer's experts and runs torch's grouped GEMMs. Random
weights cannot judge the quality: check answers of the real checkpoint before turning it
on (TRAVELBOT_FP8_EXPERTS).
"""

from __future__ import annotations

import structlog
import torch

log = structlog.get_logger()

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448
WEIGHTS = ("gate_up_proj", "down_proj")  # Gemma4TextExperts: [E, 2I, H] and [E, H, I]


def quantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[..., N, K] → FP8 values [..., N, K] and float32 scales [..., N]: each row's largest
    magnitude becomes FP8's largest value. All-zero rows get scale 1."""
    amax = weight.abs().amax(dim=-1).float()
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    values = (weight.float() / scale.unsqueeze(-1)).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return values, scale


def dequantize(values: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (values.float() * scale.unsqueeze(-1)).to(dtype)


def is_quantized(experts) -> bool:
    return experts.gate_up_proj.dtype == FP8


def any_quantized(model) -> bool:
    """Whether any text layer's experts are FP8 now."""
    return any(
        is_quantized(layer.experts)
        for layer in model.model.language_model.layers
        if getattr(layer, "experts", None) is not None
    )


def scales(experts) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The per-row scales of gate_up_proj and down_proj, or (None, None) when not FP8."""
    if not is_quantized(experts):
        return None, None
    return experts.gate_up_proj_scale, experts.down_proj_scale


def dequantized(experts) -> dict[str, torch.Tensor]:
    """FP8 experts' weights in their compute dtype, by parameter name ({} when not FP8)."""
    if not is_quantized(experts):
        return {}
    return {
        name: dequantize(
            getattr(experts, name), getattr(experts, f"{name}_scale"), experts.compute_dtype
        )
        for name in WEIGHTS
    }


def supported(device: torch.device) -> bool:
    """FP8 loads in the Triton kernels need Ada/Hopper or newer; the CPU dequantizes."""
    return device.type == "cpu" or (
        device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)
    )


def quantize_experts(model) -> int:
    """Replace every text layer's expert weights by FP8 values and row scales, in place
    (a model quantized here serves only through the batching engine; `restore_experts`
    puts back weights saved before). Returns the bytes saved."""
    saved = 0
    for layer in model.model.language_model.layers:
        experts = getattr(layer, "experts", None)
        if experts is None or is_quantized(experts):
            continue
        experts.compute_dtype = experts.gate_up_proj.dtype
        for name in WEIGHTS:
            weight = getattr(experts, name).detach()
            values, scale = quantize(weight)
            saved += weight.nbytes - values.nbytes - scale.nbytes
            delattr(experts, name)  # the parameter; the FP8 values take its name
            experts.register_buffer(name, values, persistent=False)
            experts.register_buffer(f"{name}_scale", scale, persistent=False)
            del weight
    if saved and model.device.type == "cuda":
        torch.cuda.empty_cache()
    log.info("experts_quantized", dtype="float8_e4m3fn", saved_gib=round(saved / 2**30, 2))
    return saved


def experts_on_cpu(model) -> list[dict[str, torch.nn.Parameter]]:
    """Every text layer's expert weights ({} for a layer without experts), copied to the
    CPU (for `restore_experts`)."""
    saved = []
    for layer in model.model.language_model.layers:
        experts = getattr(layer, "experts", None)
        weights = {} if experts is None else {name: getattr(experts, name) for name in WEIGHTS}
        saved.append({name: torch.nn.Parameter(w.detach().to("cpu"), w.requires_grad)
                      for name, w in weights.items()})  # fmt: skip
    return saved


def restore_experts(model, saved: list[dict[str, torch.nn.Parameter]]) -> None:
    """Undo `quantize_experts` with the weights `experts_on_cpu` copied before it."""
    for layer, weights in zip(model.model.language_model.layers, saved, strict=True):
        experts = getattr(layer, "experts", None)
        if experts is None or not is_quantized(experts):
            continue
        for name in WEIGHTS:
            delattr(experts, name)
            delattr(experts, f"{name}_scale")
            weight = torch.nn.Parameter(weights[name].detach().to(model.device),
                                        weights[name].requires_grad)  # fmt: skip
            experts.register_parameter(name, weight)
        del experts.compute_dtype
