"""A bounded queue in front of one engine thread, streaming events back to asyncio.

The bot calls `worker.normalize_image(photo)`, `async for event in worker.submit(request)`,
and `worker.forget(owner)`. Torch runs only in the engine thread; events cross back with
call_soon_threadsafe. Photos are normalized and requests prepared in preparing processes
(prep_processes), waited for by the preparing threads.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from inference.images import ImageLimits, normalize_image
from inference.prep_processes import Preparer, PrepProcesses
from inference.types import (
    Event,
    Finished,
    InferenceError,
    Queued,
    QueueFull,
    Request,
    Started,
    WorkerStopped,
)

log = structlog.get_logger()

# A prefill takes at most 16 prompts (RuntimeConfig.deep_queue_prefill_seqs): more threads
# would prepare further ahead than the engine takes, and only contend for the GIL.
MAX_PREP_THREADS = 16
# an idle engine waits this long at most for photos still being prepared when others are
# ready, so that a burst is prefilled together: one prefill of 8 costs less than one of 1
# then one of 7 (docs/performance.md, "Through the Worker")
PREFILL_GATHER_S = 0.05
# preparing processes on a GPU host: more only contend with the engine's own threads for
# the cores, and each holds a tokenizer (docs/performance.md, "Through the Worker")
MAX_PREP_PROCESSES = 8


# a request → its model inputs and the token ids it shares (GemmaEngine.prepare_with_prefix)
InputsOf = Callable[[Request], tuple[dict, tuple[int, ...]]]


class Engine(Protocol):
    """What the worker drives: requests are added, then `step()` advances all of them.

    Events for a request go to its `emit`: Delta..., then Finished, or an
    InferenceError. A `step()` that raises fails every active request (`fail_all`).
    """

    max_slots: int  # requests that may be active at once
    device: object  # where the model runs: a torch.device

    @property
    def num_active(self) -> int: ...

    def preparer(self) -> Preparer | None:
        """What preparing processes need to make this engine's inputs; None: it makes its
        own (`prepare` without `inputs_of`)."""

    def prepare(self, request: Request, inputs_of: InputsOf | None = None) -> object:
        """CPU work before a request can join (images, tokens); called from other threads.
        `inputs_of(request)`: its inputs and shared prefix, made elsewhere."""

    def add(
        self, prepared: object, emit: Callable[[Event], None], is_cancelled: Callable[[], bool]
    ) -> None: ...

    def step(self) -> None: ...

    def fail_all(self, error: InferenceError) -> None: ...

    def forget(self, owner: str) -> None:
        """Drop what the engine keeps of `owner`'s requests (called between steps)."""


class SequentialEngine:
    """The batching protocol over GemmaEngine: one request at a time with generate()."""

    max_slots = 1

    def __init__(self, engine) -> None:
        self.engine = engine
        self.device = engine.device
        self._active: list[tuple[Request, Callable, Callable]] = []

    @property
    def num_active(self) -> int:
        return len(self._active)

    def preparer(self) -> None:
        return None  # generate() prepares its own inputs

    def prepare(self, request: Request, inputs_of: InputsOf | None = None) -> Request:
        return request

    def add(self, request, emit, is_cancelled) -> None:
        self._active.append((request, emit, is_cancelled))

    def step(self) -> None:
        request, emit, is_cancelled = self._active.pop(0)
        try:
            finished = self.engine.generate(request, emit, is_cancelled)
        except Exception as exc:  # this request fails; the next one runs
            log.exception("generation_failed", request_id=request.request_id)
            emit(InferenceError(f"generation failed: {type(exc).__name__}"))
            return
        emit(finished)

    def fail_all(self, error: InferenceError) -> None:
        for _, emit, _ in self._active:
            emit(error)
        self._active.clear()

    def forget(self, owner: str) -> None:
        pass  # generate() keeps nothing of a request once it returns


@dataclass(eq=False)  # a job is itself only: found in the queue by identity
class _Job:
    request: Request
    prepared: object
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def post(self, item: Event | InferenceError) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, item)


def host_prep_threads() -> int:
    """Preparing threads (and processes) for this host: one a CPU the process may use,
    less the engine thread's, at most MAX_PREP_THREADS."""
    usable = (
        os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    )
    return max(1, min(MAX_PREP_THREADS, len(usable) - 1))


class Worker:
    def __init__(
        self,
        engine_factory: Callable[[], Engine],
        *,
        max_queue: int = 64,
        prep_threads: int | None = None,  # None: host_prep_threads()
        # None: one a preparing thread where the model runs on a GPU; none on a CPU, where
        # its forward already keeps every core busy
        prep_processes: int | None = None,
    ) -> None:
        self._engine_factory = engine_factory
        self._engine: Engine | None = None
        self._num_prep_threads = prep_threads or host_prep_threads()
        self._prep_pool = ThreadPoolExecutor(
            self._num_prep_threads, thread_name_prefix="inference-prep"
        )
        self._num_prep_processes = prep_processes
        self._processes = PrepProcesses()
        self._num_preparing = 0
        self.max_queue = max_queue
        self._pending: deque[_Job] = deque()
        self._wakeup = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        # work on the engine's own state, run by the engine thread between steps
        self._commands: deque[tuple[Callable[[Engine], None], Future]] = deque()
        self._engine_done = False  # the engine thread has ended: nothing else uses the engine

    @property
    def queue_depth(self) -> int:
        """Requests waiting to start."""
        return len(self._pending)

    @property
    def num_running(self) -> int:
        """Requests inside the engine (prefilling or decoding)."""
        return self._engine.num_active if self._engine is not None else 0

    @property
    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def num_prep_processes(self) -> int:
        """Preparing processes running (0: photos are prepared in threads)."""
        return self._processes.num_processes if self._processes.is_running else 0

    def device_memory_bytes(self) -> int | None:
        """GPU memory this process holds (torch's caching allocator); None without CUDA.

        Reads torch only if the engine already imported it: an HTTP engine or a CPU run
        must not pay for importing torch, let alone for creating a CUDA context."""
        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return None
        return int(torch.cuda.memory_reserved())

    async def start(self) -> None:
        """Start the engine thread and wait until the model is loaded (raises if it fails)
        and the preparing processes are ready."""
        loop = asyncio.get_running_loop()
        loaded: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(
            target=self._run, args=(loop, loaded), name="inference-engine", daemon=True
        )
        self._thread.start()
        await loaded
        await asyncio.to_thread(self._start_processes)

    def _start_processes(self) -> None:
        engine, num = self._engine, self._num_prep_processes
        if num is None:
            on_gpu = engine.device.type != "cpu"
            num = min(MAX_PREP_PROCESSES, self._num_prep_threads) if on_gpu else 0
        if not num:
            return
        try:
            self._processes.start(num, engine.preparer())
        except Exception:  # slower in threads, but serving
            log.exception("prep_processes_failed", fallback="threads")

    async def stop(self) -> None:
        """Finish the running requests, fail the waiting ones, stop the thread."""
        with self._wakeup:
            self._stopping = True
            waiting = list(self._pending)
            self._pending.clear()
            self._wakeup.notify_all()
        for job in waiting:
            job.post(WorkerStopped("the worker is stopping"))
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        self._prep_pool.shutdown(wait=False)
        await asyncio.to_thread(self._processes.close)

    async def normalize_image(self, data: bytes, limits: ImageLimits) -> bytes:
        """inference.images.normalize_image, in a preparing process once they run."""
        return await asyncio.to_thread(self.image_normalizer(), data, limits)

    def image_normalizer(self) -> Callable[[bytes, ImageLimits], bytes]:
        """normalize_image as `normalize_image` runs it, for a thread to call."""
        return self._processes.normalize if self._processes.is_running else normalize_image

    async def submit(self, request: Request) -> AsyncIterator[Event]:
        """Queue `request` and yield its events until Finished; raises InferenceError."""
        loop = asyncio.get_running_loop()
        with self._wakeup:
            self._check_can_take()
            self._num_preparing += 1
        try:
            prepared = await loop.run_in_executor(self._prep_pool, self._prepare, request)
        except BaseException:
            with self._wakeup:
                self._num_preparing -= 1
                self._wakeup.notify()
            raise
        job = _Job(request, prepared, loop)
        with self._wakeup:
            self._num_preparing -= 1  # and queued in the same breath: see _admit's gathering
            if self._stopping:
                self._wakeup.notify()
                raise WorkerStopped("the worker is stopping")
            self._pending.append(job)
            position = len(self._pending)
            self._wakeup.notify()
        try:
            yield Queued(position)
            while True:
                item = await job.events.get()
                if isinstance(item, InferenceError):
                    raise item
                yield item
                if isinstance(item, Finished):
                    return
        finally:
            job.cancelled.set()  # no-op when finished; stops generation if the caller left
            with self._wakeup:
                # a caller that left while waiting gives its place up at once: it no longer
                # counts against max_queue, and is never prefilled
                if job in self._pending:
                    self._pending.remove(job)

    async def forget(self, owner: str) -> None:
        """Return once the engine keeps nothing of `owner`'s requests (their photos' vision
        output). Its requests still running or waiting may keep them again."""
        await self._in_engine_thread(lambda engine: engine.forget(owner))

    async def _in_engine_thread(self, command: Callable[[Engine], None]) -> None:
        """Run `command(engine)` where the engine's state is used: in the engine thread,
        between two steps (at once when it is idle)."""
        done: Future = Future()
        with self._wakeup:
            if self._engine is None:  # not loaded (yet): it keeps nothing
                return
            if self._engine_done:
                command(self._engine)
                return
            self._commands.append((command, done))
            self._wakeup.notify()
        await asyncio.wrap_future(done)

    def _check_can_take(self) -> None:
        if self._stopping or not self.is_alive or self._engine is None:
            raise WorkerStopped("the worker is not running")
        if len(self._pending) + self._num_preparing >= self.max_queue:
            raise QueueFull(f"{len(self._pending)} requests waiting")

    def _prepare(self, request: Request) -> object:
        processes = self._processes
        try:
            return self._engine.prepare(
                request, processes.prepare_with_prefix if processes.can_prepare else None
            )
        except InferenceError:
            raise
        except Exception as exc:  # a request the engine cannot take must not stop the worker
            log.exception("request_rejected", request_id=request.request_id)
            raise InferenceError(f"request rejected: {type(exc).__name__}") from exc

    def _run(self, loop: asyncio.AbstractEventLoop, loaded: asyncio.Future) -> None:
        try:
            self._engine = engine = self._engine_factory()
        except BaseException as exc:
            loop.call_soon_threadsafe(loaded.set_exception, exc)
            return
        loop.call_soon_threadsafe(loaded.set_result, None)
        while True:
            admitted = self._admit(engine)
            if admitted is None:
                return
            for job in admitted:
                self._add(engine, job)
            if engine.num_active:
                self._step(engine)

    def _admit(self, engine: Engine) -> list[_Job] | None:
        """Jobs to start now (None: stop). Waits while there is nothing to do; runs the
        commands given to the engine thread meanwhile."""
        gathering_until = None
        with self._wakeup:
            while True:
                self._run_commands(engine)
                if self._stopping and not engine.num_active:
                    self._engine_done = True
                    return None
                if self._pending and self._num_preparing and not engine.num_active:
                    # a burst: photos still being prepared join this prefill, not the next
                    now = time.monotonic()
                    gathering_until = gathering_until or now + PREFILL_GATHER_S
                    if now < gathering_until:
                        self._wakeup.wait(gathering_until - now)
                        continue
                admitted = []
                while self._pending and engine.num_active + len(admitted) < engine.max_slots:
                    admitted.append(self._pending.popleft())
                if admitted:
                    for position, waiting in enumerate(self._pending, start=1):
                        waiting.post(Queued(position))
                if admitted or engine.num_active:
                    return admitted
                self._wakeup.wait()

    def _run_commands(self, engine: Engine) -> None:
        """Run the commands given to the engine thread, first come first served."""
        while self._commands:
            command, done = self._commands.popleft()
            wanted = done.set_running_or_notify_cancel()  # False: its caller left; run it anyway
            try:
                command(engine)
            except Exception as exc:  # the caller's error, not the engine's
                if wanted:
                    done.set_exception(exc)
            else:
                if wanted:
                    done.set_result(None)

    def _add(self, engine: Engine, job: _Job) -> None:
        job.post(Started())
        try:
            engine.add(job.prepared, self._emitter(job), job.cancelled.is_set)
        except InferenceError as exc:
            job.post(exc)
        except Exception as exc:  # a request the engine cannot take must not stop the worker
            log.exception("request_rejected", request_id=job.request.request_id)
            job.post(InferenceError(f"request rejected: {type(exc).__name__}"))

    def _step(self, engine: Engine) -> None:
        try:
            engine.step()
        except Exception as exc:  # one failed batch fails its requests, not the worker
            log.exception("engine_step_failed", error=type(exc).__name__)
            engine.fail_all(InferenceError(f"generation failed: {type(exc).__name__}"))

    def _emitter(self, job: _Job) -> Callable[[Event | InferenceError], None]:
        def emit(item: Event | InferenceError) -> None:
            if isinstance(item, Finished):
                log.info(
                    "generation_finished",
                    request_id=job.request.request_id,
                    num_prompt_tokens=item.num_prompt_tokens,
                    num_output_tokens=item.num_output_tokens,
                    finish_reason=item.finish_reason,
                )
            job.post(item)

        return emit
