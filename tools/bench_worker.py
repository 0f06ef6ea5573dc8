"""The bench's headline rows: requests through the `Worker`, as the bot sends them.

Each request is a fresh photo as Telegram delivers one: a JPEG whose long side is 1280 px
(the largest PhotoSize of a photo sent as a photo, for most clients), 4:3 as phones take
them, at JPEG quality 87 (an assumption close to Telegram's recompression). On the clock,
as in bot/answering.py: `Worker.normalize_image` (in a preparing process on a GPU), then
`Worker.submit`, until the Finished event; the first Delta is the request's first token.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable

import torch

from inference.images import ImageLimits
from inference.runtime.batch_engine import BatchEngine
from inference.types import Queued, Request, Started
from inference.worker import Worker
from tools.bench_rows import Row, Tracked, timed_row
from tools.samples import draw_menu, draw_sign

PHONE_SIZE = (1280, 960)  # Telegram's largest PhotoSize of a 4:3 phone photo
PHONE_JPEG_QUALITY = 87


def phone_photos(count: int, *, seed: int) -> list[bytes]:
    """`count` photos (signs and menus) as JPEGs as Telegram delivers them, none alike."""
    photos = []
    for index in range(count):
        draw = draw_sign if index % 2 == 0 else draw_menu
        buffer = io.BytesIO()
        draw(*PHONE_SIZE, seed=seed + index).save(buffer, format="JPEG", quality=PHONE_JPEG_QUALITY)
        photos.append(buffer.getvalue())
    return photos


# a photo's request as the bench sends it: (index, normalized photo, owner) → Request
Build = Callable[[int, bytes, str], Request]


class Stages(dict):
    """When a request reached each stage of the bot's path (seconds on the row's clock):
    normalized, queued (prepared: its first Queued event), started (in the engine)."""

    def on_event(self, event, now: float) -> None:
        if isinstance(event, Queued):
            self.setdefault("queued", now)
        elif isinstance(event, Started):
            self.setdefault("started", now)


async def ask(worker: Worker, build: Build, photo: bytes, index: int, owner: str,
              state: Tracked, stages: Stages, clock: Callable[[], float]) -> None:  # fmt: skip
    """One traveller's photo, as the bot handles it, its events into `state`."""
    state.arrival = clock()
    image = await worker.normalize_image(photo, ImageLimits())
    stages["normalized"] = clock()
    async for event in worker.submit(build(index, image, owner)):
        stages.on_event(event, clock())
        state.on_event(event, clock())


def stage_times(tracked: list[Tracked], stages: list[Stages]) -> dict:
    """Median and longest ms of each stage, and when the last request entered the engine:
    where the path outside the engine spends its time."""
    spans = {"normalize": ("arrival", "normalized"), "prepare": ("normalized", "queued"),
             "wait": ("queued", "started")}  # fmt: skip
    times = [
        {"arrival": state.arrival, **stage} for state, stage in zip(tracked, stages, strict=True)
    ]
    out: dict = {}
    for name, (start, end) in spans.items():
        ms = sorted((t[end] - t[start]) * 1000 for t in times)
        out[f"{name}_ms_median_max"] = [round(ms[len(ms) // 2], 1), round(ms[-1], 1)]
    out["last_started_s"] = round(max(t["started"] for t in times), 3)
    return out


async def burst(
    worker: Worker, device: torch.device, photos: list[bytes], build: Build, name: str
) -> Row:
    """All `photos` sent at once; the row's photos forgotten after it (Worker.forget)."""
    row = Row(name=name, concurrency=len(photos))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    owner = f"bench {name} x{len(photos)}"
    tracked = [Tracked() for _ in photos]
    stages = [Stages() for _ in photos]
    started = time.perf_counter()

    def clock() -> float:
        return time.perf_counter() - started

    await asyncio.gather(
        *(ask(worker, build, photo, index, owner, tracked[index], stages[index], clock)
          for index, photo in enumerate(photos))
    )  # fmt: skip
    await worker.forget(owner)
    timed_row(row, tracked, device)
    prompt_tokens = [state.prompt_tokens for state in tracked]
    row.extra["prompt_tokens_min_max"] = [min(prompt_tokens), max(prompt_tokens)]
    row.extra["decode_step"] = "not seen through the Worker"
    row.extra["stages"] = stage_times(tracked, stages)
    row.extra["prep_processes"] = worker.num_prep_processes  # 0: prepared in threads
    return row


def worker_rows(
    engine: BatchEngine, bursts: list[list[bytes]], build: Build, record: Callable[[Row], None]
) -> None:
    """A Worker over `engine` (already warm), one burst per list of photos, each row given
    to `record`; the Worker stopped after, the engine left open."""

    async def rows() -> None:
        worker = Worker(lambda: engine, max_queue=max([64, *map(len, bursts)]))
        await worker.start()
        try:
            device = engine.base.device
            await burst(worker, device, phone_photos(2, seed=10_000), build, "worker, warm-up")
            for photos in bursts:
                record(await burst(worker, device, photos, build, "worker, together"))
        finally:
            await worker.stop()

    asyncio.run(rows())
