"""Gemma 4's image processor's output for a prompt's photos, in fewer steps.

The same values as `Gemma4ImageProcessorPil` (tests/inference/test_photo_pixels.py): each
photo resized with its size and filter, scaled to 0..1, cut into patches, padded to the
budget's patch count. Its own steps convert the photo from Pillow to numpy and back to
resize it, then copy it in float64 and float32 several times over; here the resized
photo's patches are cast and placed in one copy.
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
    num_soft_tokens_per_image of RGB `photos` at `soft_tokens` a photo. numpy, not torch:
    its copies run in the calling thread (without the GIL), where torch's would start
    its intra-op threads from every preparing thread at once."""
    patch, pooling = processor.patch_size, processor.pooling_kernel_size
    max_patches = soft_tokens * pooling**2
    pixel_values = np.zeros((len(photos), max_patches, patch * patch * 3), np.float32)
    positions = np.full((len(photos), max_patches, 2), -1, np.int64)
    counts = []
    for index, photo in enumerate(photos):
        height, width = get_aspect_ratio_preserving_size(
            photo.height, photo.width, patch, max_patches, pooling
        )
        if photo.size != (width, height):
            photo = photo.resize((width, height), processor.resample)
        rows, cols = height // patch, width // patch
        patches = pixel_values[index, : rows * cols].reshape(rows, cols, patch, patch, 3)
        patches[...] = np.asarray(photo).reshape(rows, patch, cols, patch, 3).swapaxes(1, 2)
        grid = np.indices((rows, cols))[::-1]  # (x, y) of each patch, row by row
        positions[index, : rows * cols] = grid.reshape(2, -1).T
        counts.append(rows * cols // pooling**2)
    pixel_values /= 255  # float32 x / 255 is the processor's float64 x * (1 / 255), cast
    return {
        "pixel_values": torch.from_numpy(pixel_values),
        "image_position_ids": torch.from_numpy(positions),
        "num_soft_tokens_per_image": counts,
    }
