"""The vision tower on photos packed without their padding gives the padded batch's features."""

from __future__ import annotations

import io

import torch
from PIL import Image

from inference import GemmaEngine, Request
from inference.runtime.config import EnginePaths
from inference.runtime.gemma4 import vision
from inference.runtime.gemma4.patch import patch_model
from inference.runtime.kernels import Kernels
from tools.samples import draw_menu, draw_sign


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def photo_batch(engine: GemmaEngine) -> tuple[torch.Tensor, torch.Tensor]:
    photos = [draw_sign(640, 480), draw_menu(360, 480, seed=2), draw_sign(900, 240)]
    inputs = [
        engine.prepare_inputs(Request(language="en", images=(png(p),)), on_device=False)
        for p in photos
    ]
    pixels = torch.cat([i["pixel_values"] for i in inputs])
    positions = torch.cat([i["image_position_ids"] for i in inputs])
    return pixels, positions


@torch.inference_mode()
def features(engine: GemmaEngine, pixels, positions) -> list[torch.Tensor]:
    return list(engine.model.model.get_image_features(pixels, positions).pooler_output)


def run_installed(engine: GemmaEngine, pixels, positions):
    """Features with the packed photos patched in, and the (photos, patches) shape of each
    call to the tower's own (padded batch) forward."""
    tower = engine.model.model.vision_tower
    original, shapes = tower.forward, []

    def recording(pixel_values, pixel_position_ids, **kwargs):
        shapes.append(tuple(pixel_values.shape[:2]))
        return original(pixel_values, pixel_position_ids, **kwargs)

    tower.forward = recording
    paths = EnginePaths(attention=False, fused_norms=False, packed_photos=True, own_layers=False)
    patch = patch_model(engine.model, Kernels(), paths)
    try:
        return features(engine, pixels, positions), shapes
    finally:
        patch.undo()
        assert tower.forward is recording


def test_packed_photos_features_equal_the_padded_batch(tiny_engine: GemmaEngine) -> None:
    pixels, positions = photo_batch(tiny_engine)
    counts = (positions != -1).all(-1).sum(-1).tolist()
    assert len(set(counts)) > 1 and max(counts) < positions.shape[1]  # padded, unequal
    expected = features(tiny_engine, pixels, positions)
    got, shapes = run_installed(tiny_engine, pixels, positions)
    assert shapes == []  # the batched tower was not called: one packed sequence instead
    assert [f.shape for f in got] == [f.shape for f in expected]
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_photos_of_one_size_attend_as_a_batch(tiny_engine: GemmaEngine, monkeypatch) -> None:
    photos = [draw_menu(360, 480, seed=seed) for seed in (1, 2, 3)]
    inputs = [tiny_engine.prepare_inputs(Request(language="en", images=(png(p),)), on_device=False)
              for p in photos]  # fmt: skip
    pixels = torch.cat([i["pixel_values"] for i in inputs])
    positions = torch.cat([i["image_position_ids"] for i in inputs])
    assert len(set((positions != -1).all(-1).sum(-1).tolist())) == 1
    batches = []
    batched = vision.same_size_photos

    def recording(query, key, value, photos, scale):
        batches.append(photos)
        return batched(query, key, value, photos, scale)

    monkeypatch.setattr(vision, "same_size_photos", recording)
    expected = features(tiny_engine, pixels, positions)
    got, shapes = run_installed(tiny_engine, pixels, positions)
    assert shapes == [] and batches and set(batches) == {3}  # every layer: one batch of 3
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_padding_not_at_the_end_keeps_the_masked_batch(tiny_engine: GemmaEngine) -> None:
    pixels, positions = photo_batch(tiny_engine)
    pixels, positions = pixels.flip(1), positions.flip(1)  # padding first
    expected = features(tiny_engine, pixels, positions)
    got, shapes = run_installed(tiny_engine, pixels, positions)
    assert shapes == [tuple(pixels.shape[:2])]
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
