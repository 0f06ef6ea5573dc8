"""Processes that prepare photos beside the engine, each with its own GIL.

Normalizing a photo and making a request's inputs (chat template, tokens, pixel patches)
is Python-level work: in threads of the engine's process, a burst of photos shares one
GIL with the engine thread and with each other (docs/performance.md, "Through the
Worker"). Here each process holds a model-less copy of the engine's preparing half
(`Preparer`), loaded once when the pool starts. Processes are spawned, never forked: the
parent has CUDA initialised. A process that dies (killed, out of memory) breaks the pool:
it is started again, and the work it held is tried once more there.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import threading
import time
from concurrent.futures import CancelledError, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import structlog
from PIL import Image

from inference.images import ImageLimits, normalize_image
from inference.types import ImageRejected, InferenceError, Request, WorkerStopped

log = structlog.get_logger()

# how long a starting pool waits for all its processes to be ready (import torch and
# transformers, load the tokenizer) before it gives up
START_TIMEOUT_S = 300


@dataclass(frozen=True)
class Preparer:
    """What a preparing process needs to make a GemmaEngine's inputs, pickled to it once."""

    tokenizer: object
    image_processor: object
    image_soft_tokens: int
    dtype: object  # torch.dtype of the pixel values

    @classmethod
    def of(cls, engine) -> Preparer:
        """The preparing half of `engine` (a GemmaEngine)."""
        return cls(engine.tokenizer, engine.image_processor, engine.image_soft_tokens,
                   engine.dtype)  # fmt: skip

    def engine(self):
        """A GemmaEngine without a model: it makes inputs as `engine` does, on the CPU."""
        from inference.engine import GemmaEngine

        return GemmaEngine(None, self.tokenizer, self.image_processor,
                           image_soft_tokens=self.image_soft_tokens, dtype=self.dtype)  # fmt: skip


class PrepProcesses:
    """A pool of preparing processes; `start` it, then call it from any thread."""

    def __init__(self) -> None:
        self.num_processes = 0
        self._preparer: Preparer | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()  # one restart for a pool that broke, however many saw it
        self._closed = False

    @property
    def is_running(self) -> bool:
        return self._pool is not None

    @property
    def can_prepare(self) -> bool:
        """Requests' inputs are made here (else only photos are normalized)."""
        return self.is_running and self._preparer is not None

    def start(self, num_processes: int, preparer: Preparer | None) -> None:
        """Spawn the processes and wait until each is ready (raises if one cannot start);
        without a `preparer` they only normalize photos."""
        self.num_processes, self._preparer = num_processes, preparer
        started = time.monotonic()
        self._pool = self._started_pool()
        seconds = round(time.monotonic() - started, 1)
        log.info("prep_processes_started", processes=num_processes, seconds=seconds)

    def close(self) -> None:
        with self._lock:
            pool, self._pool, self._closed = self._pool, None, True
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def normalize(self, data: bytes, limits: ImageLimits) -> bytes:
        """inference.images.normalize_image in a process; raises ImageRejected."""
        try:
            return self._run(normalize_image, data, limits)
        except _ProcessDied as exc:  # twice on this photo: it is what kills them
            raise ImageRejected("corrupt", str(exc)) from None

    def prepare_with_prefix(self, request: Request) -> tuple[dict, tuple[int, ...]]:
        """GemmaEngine.prepare_with_prefix in a process: the same inputs and prefix."""
        try:
            inputs, prefix = self._run(_prepare_with_prefix, request)
        except _ProcessDied as exc:
            raise InferenceError(f"photo preparation failed: {exc}") from None
        return _from_wire(inputs), prefix

    def _run(self, function, *args):
        """`function(*args)` in a process; tried once more in a new pool if its process
        died."""
        for attempt in (1, 2):
            pool = self._pool
            if pool is None and self._closed:
                raise WorkerStopped("the preparing processes are stopped")
            if pool is None:
                raise _ProcessDied("no preparing process could be started again")
            try:
                return pool.submit(function, *args).result()
            except BrokenProcessPool:
                log.error("prep_process_died", attempt=attempt)
                self._restart(pool)
            except CancelledError:  # closed while it waited
                raise WorkerStopped("the preparing processes are stopped") from None
        raise _ProcessDied("a preparing process died on it twice")

    def _restart(self, broken: ProcessPoolExecutor) -> None:
        """A new pool for a broken one; none if it cannot start (then the Worker prepares
        in its threads)."""
        with self._lock:
            if self._pool is not broken:  # stopped, or started again by another thread
                return
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            try:
                self._pool = self._started_pool()
            except Exception:
                log.exception("prep_processes_restart_failed", fallback="threads")
                return
            log.info("prep_processes_restarted", processes=self.num_processes)

    def _started_pool(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("spawn")
        ready = context.Barrier(self.num_processes, timeout=START_TIMEOUT_S)
        pool = ProcessPoolExecutor(
            self.num_processes, context, initializer=_start_process,
            initargs=(self._preparer, ready),
        )  # fmt: skip
        try:
            # a pool spawns a process for each task given while none is idle: one task each,
            # held until every process has loaded (so the first burst pays no import)
            waits = [pool.submit(_wait_ready) for _ in range(self.num_processes)]
            for wait in waits:
                wait.result(timeout=START_TIMEOUT_S + 10)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        return pool


class _ProcessDied(Exception):
    pass


@dataclass
class _ThisProcess:
    """In a preparing process: its engine without a model, and the barrier of its pool's
    start."""

    engine: object = None
    ready: object = None


_this_process = _ThisProcess()


def _start_process(preparer: Preparer | None, ready) -> None:
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # no CUDA context here: the GPU is the engine's
    _this_process.ready = ready
    if preparer is not None:
        import torch

        torch.set_num_threads(1)  # one process a core: intra-op threads would only contend
        _this_process.engine = preparer.engine()
    _warm(_this_process.engine)


def _warm(engine) -> None:
    """Normalize a photo and prepare a request about it once, so that the first ones a
    traveller sends do not pay what a process's first call costs (compiling the chat
    template, lazy imports; docs/performance.md, "Through the Worker")."""
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), "white").save(buffer, "JPEG")
    photo = normalize_image(buffer.getvalue())
    if engine is not None:
        engine.prepare_with_prefix(Request(language="en", question="?", images=(photo,)))


def _wait_ready() -> None:
    _this_process.ready.wait()


def _prepare_with_prefix(request: Request) -> tuple[dict, tuple[int, ...]]:
    inputs, prefix = _this_process.engine.prepare_with_prefix(request)
    return _to_wire(inputs), prefix


def _to_wire(inputs: dict) -> dict:
    """Tensors as numpy arrays, pickled as their bytes (torch would move them to shared
    memory files); bfloat16, which numpy lacks, as its bits, in int16."""
    import torch

    wire = {}
    for name, value in inputs.items():
        if isinstance(value, torch.Tensor):
            bits = value.view(torch.int16) if value.dtype == torch.bfloat16 else value
            value = _Array(bits.numpy(), value.dtype == torch.bfloat16)
        wire[name] = value
    return wire


def _from_wire(wire: dict) -> dict:
    import torch

    inputs = {}
    for name, value in wire.items():
        if isinstance(value, _Array):
            tensor = torch.from_numpy(value.array)
            value = tensor.view(torch.bfloat16) if value.is_bfloat16 else tensor
        inputs[name] = value
    return inputs


@dataclass(frozen=True)
class _Array:
    array: object  # numpy.ndarray
    is_bfloat16: bool
