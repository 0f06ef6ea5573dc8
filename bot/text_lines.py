"""Exact boxes of the text lines in a photo, from a real pretrained detector: PP-OCRv4's text
detection network (DB), which the `rapidocr-onnxruntime` wheel ships (4.7 MB ONNX), run by
onnxruntime on the CPU. Nothing is downloaded at run time. Only the detector runs, not the
recogniser: the model reads the text; this only says where the lines are, to snap the
model's rough boxes to (bot/overlay.py).

The photo is scaled to at most MAX_SIDE px before detection: measured by
scripts/measure_text_detector.py (docs/text-detector.md), a 12 MP photo at full size costs
seconds of CPU, at 1024 px a fraction of that. Without the package (or where it cannot load)
`load_detector` gives None and the model's boxes are drawn as they are.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass
from pathlib import Path

import structlog
from PIL import Image

log = structlog.get_logger()

MAX_SIDE = 1024  # px, the photo's longer side as the detector sees it
MODEL_FILE = "models/ch_PP-OCRv4_det_infer.onnx"
THREADS = 1  # one CPU core a detection: the other stays free for the event loop and others


@dataclass(frozen=True)
class LineBox:
    """A detected text line, in pixels of the photo given: left, top, right, bottom."""

    x0: int
    y0: int
    x1: int
    y1: int


class TextLineDetector:
    """PP-OCRv4 detection with rapidocr's own pre- and post-processing (DB thresholds as
    rapidocr ships them). Not thread-safe to build; `detect` may run in one thread at a time
    per instance (the bot bounds it with a semaphore)."""

    def __init__(self, *, threads: int = THREADS, max_side: int = MAX_SIDE) -> None:
        import rapidocr_onnxruntime
        from rapidocr_onnxruntime.ch_ppocr_det import TextDetector

        model = Path(rapidocr_onnxruntime.__file__).parent / MODEL_FILE
        self.max_side = max_side
        self._detector = TextDetector(
            {
                "model_path": str(model),
                "limit_side_len": max_side,
                "limit_type": "max",
                "mean": [0.5, 0.5, 0.5],
                "std": [0.5, 0.5, 0.5],
                "thresh": 0.3,
                "box_thresh": 0.5,
                "max_candidates": 1000,
                "unclip_ratio": 1.6,
                "use_dilation": True,
                "score_mode": "fast",
                "intra_op_num_threads": threads,
                "inter_op_num_threads": 1,
                "use_cuda": False,
                "use_dml": False,
            }
        )

    def detect(self, image: Image.Image) -> list[LineBox]:
        """The text lines of `image` (any size), in its pixels, top to bottom."""
        import numpy as np  # with rapidocr-onnxruntime: the bot starts without either

        scale = min(1.0, self.max_side / max(image.size))
        small = image.convert("RGB")
        if scale < 1.0:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            small = small.resize(size, Image.Resampling.BILINEAR)
        bgr = np.ascontiguousarray(np.asarray(small)[:, :, ::-1])
        polygons, _ = self._detector(bgr)
        if polygons is None:
            return []
        boxes = []
        for polygon in polygons:
            xs, ys = polygon[:, 0] / scale, polygon[:, 1] / scale
            box = LineBox(int(xs.min()), int(ys.min()), int(np.ceil(xs.max())), int(ys.max()))
            if box.x1 > box.x0 and box.y1 > box.y0:
                boxes.append(box)
        return sorted(boxes, key=lambda b: (b.y0, b.x0))


def load_detector() -> TextLineDetector | None:
    """The detector, or None where rapidocr-onnxruntime (or onnxruntime, OpenCV) is missing or
    broken: then the model's boxes are used as they are."""
    try:
        return TextLineDetector()
    except Exception as exc:  # ImportError, a missing libGL for OpenCV, a bad model file
        log.warning("text_detector_unavailable", error=type(exc).__name__)
        return None


class SharedDetector:
    """The process's one detector: loaded on first use, off the event loop, and run by one
    thread at a time (detection is a second of a CPU core: more at once would only queue in
    onnxruntime while starving the bot's own thread)."""

    def __init__(self) -> None:
        self._slot = asyncio.Lock()
        self._detector: TextLineDetector | None = None
        self._loaded = False

    async def detect(self, photo: bytes) -> list[LineBox]:
        """The lines of a normalised photo (JPEG bytes); [] without a detector, or where it
        fails on this photo."""
        async with self._slot:
            if not self._loaded:
                self._detector = await asyncio.to_thread(load_detector)
                self._loaded = True
            if self._detector is None:
                return []
            try:
                return await asyncio.to_thread(_detect, self._detector, photo)
            except Exception as exc:
                log.warning("text_detection_failed", error=type(exc).__name__)
                return []


def _detect(detector: TextLineDetector, photo: bytes) -> list[LineBox]:
    with Image.open(io.BytesIO(photo)) as image:
        return detector.detect(image)
