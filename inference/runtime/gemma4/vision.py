"""The vision tower on all photos of a prefill at once, packed without their padding.

The image processor pads every photo's patches to the same count (2,520 at 280 soft
tokens). A padded batch needs an attention mask, and with a mask SDPA cannot use flash
attention: it falls back to its slower memory-efficient kernel. One photo at a time needs
no mask, but launches every layer's kernels once per photo.

Here the photos' own patches are packed into one sequence: every projection, norm and MLP
runs once for all of them and on no padding (times: docs/performance.md), and only the
attention is split (`photo_attention`, a custom op so the compiled layers do not see the
photo sizes): photos of one size (every 4:3 or 3:4 phone photo) as one SDPA batch, cuDNN
first; mixed sizes on a GPU as one variable-length flash attention. Then each photo is
pooled on its own patch positions, as the tower does. Same features: padding patches are
masked out of attention and dropped by the pooler.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.modeling_outputs import BaseModelOutputWithPooling

from inference.runtime.gemma4.fast_ops import flash_varlen, varlen_flash_works


@torch.library.custom_op("travelbot::photo_attention", mutates_args=())
def photo_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bounds: torch.Tensor,
    lengths: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """q/k/v [1, heads, patches, D] of packed photos; `lengths` (CPU): patches per photo,
    `bounds` (int32, on the device): where each photo starts, and the end. Each photo
    attends only to itself → [1, patches, heads, D]. Photos of one size: SDPA on them as a
    batch (cuDNN first on GPUs); else, where flash attention runs, one variable-length
    call; elsewhere SDPA once per photo."""
    if bool((lengths == lengths[0]).all()):
        return same_size_photos(query, key, value, len(lengths), scale)
    if varlen_flash_works(query):
        longest = int(lengths.max())
        q, k, v = (t[0].transpose(0, 1).contiguous() for t in (query, key, value))  # [T, H, D]
        return flash_varlen(q, k, v, bounds, bounds, longest, longest, causal=False,
                            scale=scale)[None]  # fmt: skip
    output = query.new_empty(1, query.shape[2], query.shape[1], query.shape[3])
    start = 0
    for length in lengths.tolist():
        part = slice(start, start + length)
        output[:, part] = F.scaled_dot_product_attention(
            query[:, :, part], key[:, :, part], value[:, :, part], scale=scale
        ).transpose(1, 2)
        start += length
    return output


# cuDNN first: at the vision tower's sizes (16 heads of 72) it beat flash, as a batch or as
# one variable-length call (docs/performance.md)
PHOTO_BACKENDS = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION,
                  SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]  # fmt: skip


def same_size_photos(query, key, value, photos: int, scale: float) -> torch.Tensor:
    """photo_attention for `photos` photos of one size: a batch, no mask."""
    _, heads, patches, head_dim = query.shape
    q, k, v = (t[0].view(heads, photos, patches // photos, head_dim).transpose(0, 1)
               for t in (query, key, value))  # fmt: skip
    with sdpa_kernel(PHOTO_BACKENDS, set_priority=True):
        output = F.scaled_dot_product_attention(q, k, v, scale=scale)  # [n, H, L, D]
    return output.transpose(1, 2).reshape(1, patches, heads, head_dim)


@photo_attention.register_fake
def _(query, key, value, bounds, lengths, scale):
    return query.new_empty(1, query.shape[2], query.shape[1], query.shape[3])


def packed_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """transformers' attention interface: per photo when `photo_lengths` is passed."""
    lengths = kwargs.pop("photo_lengths", None)
    bounds = kwargs.pop("photo_bounds", None)
    if lengths is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      **kwargs)  # fmt: skip
    output = torch.ops.travelbot.photo_attention(query, key, value, bounds, lengths, scaling or 1.0)
    return output, None


def patch_counts(pixel_position_ids: torch.Tensor) -> list[int] | None:
    """Each photo's own patches, from the processor's positions [photos, patches, 2] (padding
    is -1); None when padding is not only at the end. From CPU tensors: no host sync."""
    valid = (pixel_position_ids != -1).all(dim=-1)  # [photos, patches]
    counts, prefix = torch.stack([valid.sum(-1), valid.long().cumprod(-1).sum(-1)]).tolist()
    return counts if counts == prefix else None


def packed(tower, batched, pixel_values, pixel_position_ids, **kwargs):
    """Gemma4VisionModel.forward for photos whose padding patches all come last."""
    counts = patch_counts(pixel_position_ids)
    if counts is None or kwargs:  # padding not only at the end: keep the masked batch
        return batched(pixel_values, pixel_position_ids, **kwargs)
    return packed_photos(tower, pixel_values, pixel_position_ids, counts)


def photo_embeddings(model, pixel_values, pixel_position_ids, counts: list[int]) -> torch.Tensor:
    """The photos' soft tokens as the language model takes them [Σ soft tokens, hidden], in
    photo order, as get_image_features gives them, but with the patch counts from the CPU:
    the CPU need not wait for the GPU before it launches the text layers."""
    tower = model.model.vision_tower
    features = packed_photos(tower, pixel_values, pixel_position_ids, counts).last_hidden_state
    return model.model.embed_vision(inputs_embeds=features)


def packed_photos(tower, pixel_values, pixel_position_ids, counts: list[int]):
    """The tower on photos packed without their padding (`counts` patches each)."""
    pixels = torch.cat([pixel_values[i, :count] for i, count in enumerate(counts)])[None]
    positions = torch.cat([pixel_position_ids[i, :count] for i, count in enumerate(counts)])[None]
    no_padding = torch.zeros(positions.shape[:2], dtype=torch.bool, device=positions.device)
    embeds = tower.patch_embedder(pixels, positions, no_padding)
    # once for all layers: where each photo starts, on the device (its attention's bounds)
    bounds = torch.tensor([0, *itertools.accumulate(counts)], dtype=torch.int32)
    hidden = tower.encoder(
        inputs_embeds=embeds,
        attention_mask=None,
        pixel_position_ids=positions,
        photo_lengths=torch.tensor(counts),
        photo_bounds=bounds.to(positions.device, non_blocking=True),
    ).last_hidden_state
    pooled, start = [], 0
    for count in counts:
        part = slice(start, start + count)
        features, _ = tower.pooler(
            hidden_states=hidden[:, part],
            pixel_position_ids=positions[:, part],
            padding_positions=no_padding[:, part],
            output_length=count // tower.config.pooling_kernel_size**2,
        )
        # the processor makes photos whole pooling cells, so every output position is
        # valid: no mask to apply (indexing by one would make the CPU wait for the GPU)
        pooled.append(features[0])
        start += count
    features = torch.cat(pooled)
    if tower.config.standardize:
        features = (features - tower.std_bias.float()) * tower.std_scale.float()
    return BaseModelOutputWithPooling(last_hidden_state=features.to(embeds.dtype))
