"""What answers the photos: a worker (the in-process engine or OpenAI-compatible endpoints,
both behind `submit`), asked exactly as the bot asks for a photo without a caption; or the
classical OCR baseline (PP-OCRv4 from the rapidocr-onnxruntime wheel, on the CPU), which
only reads.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable
from typing import Protocol

from evaluation.photoset import Photo
from evaluation.score import Score, score
from inference.answer_block import split_answer
from inference.images import normalize_image
from inference.types import Delta, Event, Finished, Request, Sampling


class AnswerWorker(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def submit(self, request: Request): ...  # AsyncIterator[Event]


async def answer_all(
    worker: AnswerWorker,
    photos: list[Photo],
    *,
    max_new_tokens: int,
    concurrency: int = 1,
    on_score: Callable[[Score], None] = lambda _: None,
) -> tuple[list[Score], list[dict]]:
    """Each photo's score and answer, in the set's order. Greedy: the same weights give the
    same scores. `concurrency` > 1 is faster, and every latency the longer."""
    limit = asyncio.Semaphore(concurrency)

    async def one(photo: Photo) -> tuple[Score, dict]:
        request = Request(
            language=photo.answer_language,
            images=(normalize_image(photo.image),),
            max_new_tokens=max_new_tokens,
            sampling=Sampling(temperature=0.0),
        )
        async with limit:
            started = time.perf_counter()
            text, first_token_s, finish = await _answer(worker.submit(request), started)
            latency_s = time.perf_counter() - started
        prose = split_answer(text).prose
        result = score(photo, prose, latency_s=latency_s)
        on_score(result)
        answer = {"id": photo.id, "answer": text, "first_token_s": first_token_s,
                  "finish_reason": finish}  # fmt: skip
        return result, answer

    done = await asyncio.gather(*(one(photo) for photo in photos))
    return [s for s, _ in done], [a for _, a in done]


async def _answer(events, started: float) -> tuple[str, float | None, str | None]:
    pieces: list[str] = []
    first_token_s = finish = None
    event: Event
    async for event in events:
        if isinstance(event, Delta) and not event.is_thought:
            if first_token_s is None:
                first_token_s = time.perf_counter() - started
            pieces.append(event.text)
        elif isinstance(event, Finished):
            finish = event.finish_reason
    return "".join(pieces), first_token_s, finish


def read_with_ocr(
    photos: list[Photo], on_score: Callable[[Score], None] = lambda _: None
) -> tuple[list[Score], list[dict]]:
    """The OCR baseline: the text it reads, one line per box, scored for transcription."""
    import numpy as np
    from PIL import Image
    from rapidocr_onnxruntime import RapidOCR

    ocr = RapidOCR()
    scores, answers = [], []
    for photo in photos:
        pixels = np.asarray(Image.open(io.BytesIO(photo.image)).convert("RGB"))
        started = time.perf_counter()
        boxes, _ = ocr(pixels)
        latency_s = time.perf_counter() - started
        text = "\n".join(box[1] for box in boxes or ())
        result = score(photo, text, latency_s=latency_s, full=False)
        on_score(result)
        scores.append(result)
        answers.append({"id": photo.id, "answer": text})
    return scores, answers
