"""A bounded queue in front of one engine thread, streaming events back to asyncio.

The bot calls one thing: `async for event in worker.submit(request)`.
Torch runs only in the engine thread; events cross back with call_soon_threadsafe.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

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


class Engine(Protocol):
    def generate(
        self, request: Request, emit: Callable[[Event], None], is_cancelled: Callable[[], bool]
    ) -> Finished: ...


@dataclass
class _Job:
    request: Request
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def post(self, item: Event | InferenceError) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, item)


class Worker:
    def __init__(self, engine_factory: Callable[[], Engine], *, max_queue: int = 64) -> None:
        self._engine_factory = engine_factory
        self.max_queue = max_queue
        self._pending: deque[_Job] = deque()
        self._running: _Job | None = None
        self._wakeup = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def queue_depth(self) -> int:
        """Requests waiting, not counting the one running."""
        return len(self._pending)

    @property
    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    async def start(self) -> None:
        """Start the engine thread and wait until the model is loaded (raises if it fails)."""
        loop = asyncio.get_running_loop()
        loaded: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(
            target=self._run, args=(loop, loaded), name="inference-engine", daemon=True
        )
        self._thread.start()
        await loaded

    async def stop(self) -> None:
        """Finish the running request, fail the waiting ones, stop the thread."""
        with self._wakeup:
            self._stopping = True
            waiting = list(self._pending)
            self._pending.clear()
            self._wakeup.notify_all()
        for job in waiting:
            job.post(WorkerStopped("the worker is stopping"))
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    async def submit(self, request: Request) -> AsyncIterator[Event]:
        """Queue `request` and yield its events until Finished; raises InferenceError."""
        job = _Job(request, asyncio.get_running_loop())
        with self._wakeup:
            if self._stopping or not self.is_alive:
                raise WorkerStopped("the worker is not running")
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"{len(self._pending)} requests waiting")
            self._pending.append(job)
            position = len(self._pending) + (1 if self._running else 0)
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

    def _run(self, loop: asyncio.AbstractEventLoop, loaded: asyncio.Future) -> None:
        try:
            engine = self._engine_factory()
        except BaseException as exc:
            loop.call_soon_threadsafe(loaded.set_exception, exc)
            return
        loop.call_soon_threadsafe(loaded.set_result, None)
        while (job := self._next_job()) is not None:
            self._serve(engine, job)

    def _next_job(self) -> _Job | None:
        with self._wakeup:
            while True:
                if self._stopping:
                    return None
                while self._pending and self._pending[0].cancelled.is_set():
                    self._pending.popleft()
                if self._pending:
                    job = self._running = self._pending.popleft()
                    for position, waiting in enumerate(self._pending, start=2):
                        waiting.post(Queued(position))
                    return job
                self._wakeup.wait()

    def _serve(self, engine: Engine, job: _Job) -> None:
        request_id = job.request.request_id
        job.post(Started())
        try:
            finished = engine.generate(job.request, job.post, job.cancelled.is_set)
        except Exception as exc:  # one request's failure must not stop the worker
            log.exception("generation_failed", request_id=request_id, error=type(exc).__name__)
            job.post(InferenceError(f"generation failed: {type(exc).__name__}"))
        else:
            log.info(
                "generation_finished",
                request_id=request_id,
                num_prompt_tokens=finished.num_prompt_tokens,
                num_output_tokens=finished.num_output_tokens,
                finish_reason=finished.finish_reason,
            )
            job.post(finished)
        finally:
            with self._wakeup:
                self._running = None
