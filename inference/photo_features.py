"""Gemma 4's image processor's output for a prompt's photos, made with torch.

The same values as `Gemma4ImageProcessorPil` (tests/inference/test_photo_pixels.py): each
photo resized with its size and filter, scaled to 0..1, cut into patches, padded to the
budget's patch count. Its own steps convert the photo from Pillow to numpy and back to
resize it, then copy it in float64 and float32 several times over; here torch casts and
places the resized photo's patches in one copy.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers.models.gemma4.image_processing_pil_gemma4 import (
    get_aspect_ratio_preserving_size,
)


def check_processor(processor) -> None:
    """Raise ValueError unless `processor` does what photo_features repeats."""
    repeats = (
        processor.do_resize
        and processor.do_rescale
        and processor.rescale_factor == 1 / 255
        and not processor.do_normalize
    )
    if not repeats:
        raise ValueError("the image processor is not configured as Gemma 4's")


def photo_features(photos: list[Image.Image], processor, soft_tokens: int) -> dict:
    """pixel_values (float32), image_position_ids (-1: padding) and
    num_soft_tokens_per_image of RGB `photos` at `soft_tokens` a photo."""
    patch, pooling = processor.patch_size, processor.pooling_kernel_size
    max_patches = soft_tokens * pooling**2
    pixel_values = torch.zeros(len(photos), max_patches, patch * patch * 3)
    positions = torch.full((len(photos), max_patches, 2), -1, dtype=torch.long)
    counts = []
    for index, photo in enumerate(photos):
        height, width = get_aspect_ratio_preserving_size(
            photo.height, photo.width, patch, max_patches, pooling
        )
        if photo.size != (width, height):
            photo = photo.resize((width, height), processor.resample)
        rows, cols = height // patch, width // patch
        pixels = torch.from_numpy(np.array(photo))  # (height, width, 3) uint8
        patches = pixels.view(rows, patch, cols, patch, 3).permute(0, 2, 1, 3, 4)
        pixel_values[index, : rows * cols] = patches.reshape(rows * cols, -1)
        grid_y, grid_x = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
        positions[index, : rows * cols] = torch.stack((grid_x, grid_y), dim=-1).reshape(-1, 2)
        counts.append(rows * cols // pooling**2)
    pixel_values.div_(255)  # float32 x / 255 is the processor's float64 x * (1 / 255), cast
    return {
        "pixel_values": pixel_values,
        "image_position_ids": positions,
        "num_soft_tokens_per_image": counts,
    }
