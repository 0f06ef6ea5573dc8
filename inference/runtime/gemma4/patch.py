"""The one place where the batching engine changes transformers' Gemma 4 model.

`patch_model` gives the language model fast_ops' attention (and fused RMSNorms), the vision
tower its packed photos (vision), and the decoder layers their two compilable regions
(layers), with the kernel families that passed their start-up checks (kernels.Kernels).
It returns a `Patch` whose `undo()` gives the model back as it was. The state the patched
code needs lives in the objects it installs (fast_ops.Attention, layers.ExpertKernels),
not in module globals; what changes from one forward pass to the next reaches attention as
the model call's `step` keyword (fast_ops.StepAttention).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import structlog
import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from inference.runtime.config import EnginePaths, compile_backend
from inference.runtime.gemma4 import fast_ops, layers, vision
from inference.runtime.kernels import Kernels

log = structlog.get_logger()

_names = itertools.count()  # transformers' attention registry is global: one name a patch


@dataclass
class Patch:
    """What `patch_model` changed; `undo()` restores it (once)."""

    experts: layers.ExpertKernels = field(default_factory=layers.ExpertKernels)
    attention: fast_ops.Attention | None = None
    _restore: list[Callable[[], None]] = field(default_factory=list)

    def undo(self) -> None:
        while self._restore:
            self._restore.pop()()


def patch_model(
    model, kernels: Kernels, paths: EnginePaths, compile: bool | str | Callable = False
) -> Patch:
    """Patch `model` in place, on the `paths` the engine resolved (no None switch):
    `attention`: fast_ops.Attention for the language model; `fused_norms`: torch's fused
    rms_norm in both towers; `packed_photos`: the vision tower through vision.packed;
    `own_layers`: decoder layers as layers.layer_forward, their regions (and the vision
    layers, and the decode softmax) compiled with `compile` (True: inductor; a str or
    callable: that dynamo backend), the experts as Triton kernels
    (layers.ExpertKernels.triton) where `kernels.moe`."""
    patch = Patch()
    try:
        own_layers = paths.own_layers and _own_layers(patch, model, kernels, compile)
        if paths.attention:
            softmax_kernel = own_layers and kernels.softmax
            patch.attention = _attention(patch, model, softmax_kernel, own_layers and compile)
            if paths.fused_norms:
                _fused_norms(patch, model)
        if paths.packed_photos:
            _packed_photos(patch, model)
    except Exception:
        patch.undo()
        raise
    return patch


def _attention(patch: Patch, model, softmax_kernel: bool, compile) -> fast_ops.Attention:
    if softmax_kernel:
        from inference.runtime.kernels import softmax  # needs Triton

        attention = fast_ops.Attention(softmax.masked_softmax, softmax.masked_softmax_after_prefix)
    elif compile:  # one kernel instead of five (cast, scale, mask inversion, fill, softmax)
        compiled = partial(torch.compile, backend=compile_backend(compile))
        attention = fast_ops.Attention(
            compiled(fast_ops.masked_softmax), compiled(fast_ops.masked_softmax_after_prefix)
        )
    else:
        attention = fast_ops.Attention()
    _set_attention(patch, model.config.get_text_config(), attention)
    return attention


def _packed_photos(patch: Patch, model) -> None:
    tower = model.model.vision_tower
    batched = tower.forward

    def forward(pixel_values, pixel_position_ids, **kwargs):
        return vision.packed(tower, batched, pixel_values, pixel_position_ids, **kwargs)

    _set_forward(patch, tower, forward)
    _set_attention(patch, tower.config, vision.packed_attention)


def _fused_norms(patch: Patch, model) -> None:
    towers = [model.model.language_model, getattr(model.model, "vision_tower", None)]
    for module in (m for tower in towers if tower is not None for m in tower.modules()):
        if type(module).__name__ == "Gemma4RMSNorm":
            _set_forward(patch, module, fast_ops.fused_rms_norm_forward.__get__(module))


def _own_layers(patch: Patch, model, kernels: Kernels, compile) -> bool:
    text_layers = list(model.model.language_model.layers)
    if not all(layers.is_supported(layer) for layer in text_layers):
        log.warning("own_layer_forward_unsupported", reason="layer kind not supported")
        return False
    if kernels.moe:
        patch.experts = layers.ExpertKernels.triton(prompt_gemms=kernels.moe_prompt)
    regions = (layers.attention_inputs, partial(layers.feed_forward, kernels=patch.experts))
    if compile:
        # one entry per layer kind and shape class (decode batch 1, batch n, prefill)
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        compiled = partial(torch.compile, backend=compile_backend(compile))
        regions = tuple(compiled(region) for region in regions)
        vision_layers = list(model.model.vision_tower.encoder.layers)
        vision_forward = compiled(type(vision_layers[0]).forward)
        for layer in vision_layers:
            _set_forward(patch, layer, partial(vision_forward, layer))
    for layer in text_layers:
        if not hasattr(layer.self_attn, "qkv_weight"):
            layers.fuse_projections(layer)  # views of the same memory: nothing to undo
        _set_forward(patch, layer, partial(layers.layer_forward, layer, regions))
    return True


def _set_forward(patch: Patch, module: torch.nn.Module, forward: Callable) -> None:
    """`module` runs `forward` (an instance attribute over its class's) until undone."""
    previous = vars(module).get("forward")  # one set on the instance before, if any
    module.forward = forward

    def restore() -> None:
        if previous is None:
            del module.forward
        else:
            module.forward = previous

    patch._restore.append(restore)


def _set_attention(patch: Patch, config, function: Callable) -> None:
    """The modules of `config` call `function` as their attention (prompts keep SDPA's
    masks) until undone."""
    name = f"travelbot_{next(_names)}"
    AttentionInterface.register(name, function)
    AttentionMaskInterface.register(name, sdpa_mask)
    previous = config._attn_implementation
    config._attn_implementation = name

    def restore() -> None:
        config._attn_implementation = previous

    patch._restore.append(restore)
