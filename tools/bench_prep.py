"""`python -m tools.bench_prep`: the CPU work before a photo reaches the GPU, per stage.

What the bot does with a photo before the engine can take it: `normalize_image` (bot,
`asyncio.to_thread`), then the engine's `prepare_with_prefix` (the worker's prep pool:
decode, chat template, image processor, tokens). For a Telegram photo (1280x960 JPEG)
and a 12 MP phone photo sent as a file (4032x3024 JPEG, EXIF-rotated), prints and writes
as JSON: each stage's CPU ms and how many ms it holds the GIL (the time a pure-Python
thread could not run beside it, which is what the engine thread's kernel launches wait
for), then photos/s and ms a photo through N preparing threads, and through N threads
each waiting for one of N preparing processes (inference.prep_processes, the Worker's
route on a GPU), with the lag that an engine-like thread (waking every millisecond) sees
meanwhile. The tokenizer is the tiny checkpoint's and the
image processor Gemma 4's at 280 soft tokens (the full-size default).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from inference.engine import GemmaEngine
from inference.images import ImageLimits, normalize_image
from inference.prep_processes import Preparer, PrepProcesses
from inference.types import Request
from tools.samples import draw_sign

SOFT_TOKENS = 280  # Gemma 4's default budget a photo
PHOTOS = {  # name: (width, height, EXIF orientation)
    "telegram 1280x960": (1280, 960, None),
    "phone file 4032x3024": (4032, 3024, 6),  # held upright: stored sideways, tagged
}


def photo_jpeg(width: int, height: int, orientation: int | None, *, seed: int = 0) -> bytes:
    """A sign with sensor noise (a drawing alone compresses far better than a photo)."""
    image = draw_sign(width, height, seed=seed)
    image = Image.blend(image, Image.effect_noise((width, height), 12).convert("RGB"), 0.06)
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, exif=exif.tobytes())
    return buffer.getvalue()


class GilProbe:
    """A thread counting in pure Python: its progress while a stage runs, against its
    progress over as long a sleep right after (the GIL free, the machine as busy), is the
    share of the stage's time it could run; the rest of that time the stage held the GIL.
    Other processes taking the CPU still add to it: the least of several calls counts."""

    def __init__(self) -> None:
        self.count = 0
        self._counting = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            self._counting.wait()
            while self._counting.is_set() and not self._stop:
                self.count += 1

    def _counted(self, call: Callable[[], object]) -> tuple[int, float]:
        start, started = self.count, time.perf_counter()
        call()
        return self.count - start, time.perf_counter() - started

    def gil_ms(self, stage: Callable[[], object]) -> float:
        """Milliseconds one call of `stage` holds the GIL."""
        self._counting.set()
        during, wall = self._counted(stage)
        free, slept = self._counted(lambda: time.sleep(wall))  # no GIL held
        self._counting.clear()
        return max(0.0, wall - during / (free / slept)) * 1000 if free else wall * 1000

    def close(self) -> None:
        self._stop = True
        self._counting.set()
        self._thread.join()


def cpu_ms(stage: Callable[[], object]) -> float:
    """This thread's CPU time for one call: on a shared machine steadier than wall time
    (the least of several calls counts: other processes only add to it)."""
    started = time.thread_time()
    stage()
    return (time.thread_time() - started) * 1000


def stages(engine: GemmaEngine, data: bytes) -> dict[str, Callable[[], object]]:
    """The path's steps, each a call of the code the bot runs, on its own input."""
    normalized = normalize_image(data)
    request = Request(language="de", images=(normalized,))
    prompt = engine.build_prompt(request)
    return {
        "normalize_image": lambda: normalize_image(data),
        "prepare: photo pixels": lambda: engine.photo_features(prompt.images),
        "prepare: chat template": lambda: engine.build_prompt(request),
        "prepare: whole": lambda: engine.prepare_with_prefix(request),
    }


def time_stages(engine: GemmaEngine, probe: GilProbe, repeats: int) -> list[dict]:
    rows = []
    for name, (width, height, orientation) in PHOTOS.items():
        data = photo_jpeg(width, height, orientation)
        for stage, call in stages(engine, data).items():
            call()  # warm
            rows.append(
                {
                    "photo": name,
                    "bytes": len(data),
                    "stage": stage,
                    "cpu_ms": round(min(cpu_ms(call) for _ in range(repeats)), 2),
                    "gil_ms": round(min(probe.gil_ms(call) for _ in range(3 * repeats)), 2),
                }
            )
    return rows


def engine_lag(work: Callable[[], None]) -> tuple[float, dict]:
    """Run `work` beside a thread that sleeps 1 ms at a time (an engine thread between
    launches); (seconds, that thread's wake-up lag in ms: mean and p99)."""
    lags: list[float] = []
    done = threading.Event()

    def tick() -> None:
        while not done.is_set():
            started = time.perf_counter()
            time.sleep(0.001)
            lags.append((time.perf_counter() - started) * 1000 - 1.0)

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    started = time.perf_counter()
    work()
    seconds = time.perf_counter() - started
    done.set()
    ticker.join()
    lags.sort()
    return seconds, {
        "lag_mean_ms": round(statistics.fmean(lags), 3),
        "lag_p99_ms": round(lags[int(len(lags) * 0.99)], 3),
    }


def time_throughput(engine: GemmaEngine, workers: list[int], num_photos: int) -> list[dict]:
    """A row a photo size, route and number of workers (threads, or processes)."""
    rows = []
    for count in workers:
        processes = PrepProcesses()
        processes.start(count, Preparer.of(engine))
        routes = {
            "threads": (normalize_image, engine.prepare_with_prefix),
            "processes": (processes.normalize, processes.prepare_with_prefix),
        }
        try:
            for name, (width, height, orientation) in PHOTOS.items():
                photos = [photo_jpeg(width, height, orientation, seed=i) for i in range(num_photos)]
                for route, (normalize, prepare) in routes.items():
                    row = {"photo": name, "route": route, "workers": count}
                    rows.append(row | time_route(normalize, prepare, photos, count))
        finally:
            processes.close()
    return rows


def time_route(normalize, prepare, photos: list[bytes], workers: int) -> dict:
    """Photos/s and the mean ms a photo takes, all `photos` through `workers` threads."""
    photo_ms: list[float] = []

    def one(data: bytes) -> None:
        started = time.perf_counter()
        prepare(Request(language="de", images=(normalize(data, ImageLimits()),)))
        photo_ms.append((time.perf_counter() - started) * 1000)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, photos[:workers]))  # warm the threads
        photo_ms.clear()
        seconds, lag = engine_lag(lambda: list(pool.map(one, photos)))
    return {
        "photos_per_s": round(len(photos) / seconds, 2),
        "photo_ms_mean": round(statistics.fmean(photo_ms), 1),
        **lag,
    }


def tiny_prep_engine() -> GemmaEngine:
    """The tiny checkpoint's tokenizer and template, Gemma 4's processor at SOFT_TOKENS."""
    from transformers import Gemma4ImageProcessorPil

    from inference.engine import EngineConfig
    from tools.tiny import write_tiny_checkpoint

    path = write_tiny_checkpoint(Path(tempfile.mkdtemp(prefix="bench-prep-")))
    base = GemmaEngine.load(EngineConfig(model_path=path, device="cpu"))
    processor = Gemma4ImageProcessorPil(max_soft_tokens=SOFT_TOKENS)
    return GemmaEngine(base.model, base.tokenizer, processor, image_soft_tokens=SOFT_TOKENS)


def print_tables(result: dict) -> None:
    print(f"\n{'photo':<22} {'stage':<24} {'CPU ms':>8} {'GIL ms':>8}")
    for row in result["stages"]:
        print(f"{row['photo']:<22} {row['stage']:<24} {row['cpu_ms']:>8.1f} {row['gil_ms']:>8.1f}")
    print(f"\n{'photo':<22} {'route':<10} {'workers':>7} {'photos/s':>9} {'ms/photo':>9} "
          f"{'lag ms':>7} {'p99':>7}")  # fmt: skip
    for row in result["throughput"]:
        print(
            f"{row['photo']:<22} {row['route']:<10} {row['workers']:>7} "
            f"{row['photos_per_s']:>9.2f} {row['photo_ms_mean']:>9.1f} "
            f"{row['lag_mean_ms']:>7.2f} {row['lag_p99_ms']:>7.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls a stage")
    parser.add_argument("--workers", default="1,2,4", help="preparing threads or processes")
    parser.add_argument("--photos", type=int, default=8, help="photos a throughput row")
    parser.add_argument("--out", type=Path, default=Path("bench-prep.json"))
    args = parser.parse_args(argv)
    engine = tiny_prep_engine()
    probe = GilProbe()
    try:
        result = {
            "machine": f"{platform.processor() or platform.machine()}, "
            f"{len(os.sched_getaffinity(0))} CPUs usable, load {os.getloadavg()[0]:.2f}",
            "python": sys.version.split()[0],
            "image_soft_tokens": SOFT_TOKENS,
            "image_limits": ImageLimits().__dict__,
            "stages": time_stages(engine, probe, args.repeats),
        }
    finally:
        probe.close()
    workers = [int(n) for n in args.workers.split(",")]
    result["throughput"] = time_throughput(engine, workers, args.photos)
    print_tables(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
