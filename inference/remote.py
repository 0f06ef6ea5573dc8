"""The engine on other machines: OpenAI-compatible servers (vLLM, SGLang, `travelbot serve`)
behind the surface of `Worker`, so the bot does not know the difference.

Each request takes a slot on the endpoint with the fewest requests in flight (at most
`max_concurrency_per_endpoint` each) or waits in a bounded queue (Queued events tell its
place). A request that fails before the response began (connection refused, 5xx, 429) is
tried on another endpoint; an endpoint that could not be reached is avoided for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import structlog

from inference.images import ImageLimits, normalize_image
from inference.openai_wire import ThoughtSplitter, chat_payload, read_chunk, read_sse_line
from inference.types import (
    Delta,
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


@dataclass(frozen=True)
class RemoteConfig:
    base_urls: tuple[str, ...]  # e.g. ("http://vllm-0:8000/v1",)
    model: str
    api_key: str | None = None
    max_concurrency_per_endpoint: int = 32
    max_queue: int = 64  # requests waiting for a free slot
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 120.0  # the longest silence while waiting for the next chunk
    avoid_failed_endpoint_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.base_urls or self.max_concurrency_per_endpoint < 1 or self.max_queue < 0:
            raise ValueError(f"invalid remote engine config: {self}")


@dataclass(eq=False)
class _Endpoint:
    url: str
    num_in_flight: int = 0
    avoid_until: float = 0.0  # monotonic time; set when it could not be reached


@dataclass(eq=False)
class _Ticket:
    """One request's claim on a slot: waiting, holding an endpoint, or failed by stop()."""

    tried: set[_Endpoint] = field(default_factory=set)
    endpoint: _Endpoint | None = None
    position: int | None = None  # last place reported in a Queued event
    failure: InferenceError | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class _Retry(Exception):
    """The endpoint failed before the response began; another one may answer."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    def as_error(self) -> InferenceError:
        if self.status == 429:
            return QueueFull(f"every engine endpoint is busy: {self}")
        return InferenceError(f"no engine endpoint answered: {self}")


class RemoteWorker:
    def __init__(self, config: RemoteConfig) -> None:
        self.config = config
        self._endpoints = [_Endpoint(url.rstrip("/")) for url in config.base_urls]
        self._waiting: deque[_Ticket] = deque()
        self._client: httpx.AsyncClient | None = None
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a free slot."""
        return len(self._waiting)

    @property
    def num_running(self) -> int:
        """Requests sent to an endpoint and not yet answered."""
        return sum(endpoint.num_in_flight for endpoint in self._endpoints)

    @property
    def is_alive(self) -> bool:
        return self._client is not None and not self._stopping

    def device_memory_bytes(self) -> int | None:
        return None  # the GPUs are on the endpoints' machines

    async def start(self) -> None:
        """Open the HTTP client and log which endpoints serve the model (never raises:
        an endpoint that is still starting is used once it answers)."""
        config = self.config
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        num_connections = len(self._endpoints) * (config.max_concurrency_per_endpoint + 1)
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(config.read_timeout_s, connect=config.connect_timeout_s),
            limits=httpx.Limits(max_connections=num_connections),
        )
        await asyncio.gather(*(self._check(endpoint) for endpoint in self._endpoints))

    async def stop(self) -> None:
        """Fail the waiting requests, let the running ones finish, close the client."""
        self._stopping = True
        while self._waiting:
            ticket = self._waiting.popleft()
            ticket.failure = WorkerStopped("the worker is stopping")
            ticket.changed.set()
        try:
            async with asyncio.timeout(self.config.read_timeout_s):
                await self._idle.wait()
        except TimeoutError:
            log.warning("remote_requests_abandoned", num_running=self.num_running)
        if self._client is not None:
            await self._client.aclose()

    async def normalize_image(self, data: bytes, limits: ImageLimits) -> bytes:
        """In a thread: here the event loop is the only other Python work."""
        return await asyncio.to_thread(normalize_image, data, limits)

    async def submit(self, request: Request) -> AsyncIterator[Event]:
        """Yield Queued, Started, Delta..., Finished for `request`; raises InferenceError."""
        if not self.is_alive:
            raise WorkerStopped("the worker is not running")
        payload = chat_payload(request, model=self.config.model)
        ticket = _Ticket()
        self._waiting.append(ticket)
        self._grant()
        if ticket.endpoint is None and len(self._waiting) > self.config.max_queue:
            self._waiting.remove(ticket)
            raise QueueFull(f"{len(self._waiting)} requests waiting")
        try:
            while True:
                async for position in self._wait_for_slot(ticket):
                    yield Queued(position)
                try:
                    async with contextlib.aclosing(self._stream(ticket, payload)) as events:
                        async for event in events:
                            yield event
                    return
                except _Retry as exc:
                    self._retry_elsewhere(ticket, exc, request.request_id)
        finally:
            self._leave(ticket)

    async def forget(self, owner: str) -> None:
        """Nothing to do here: this process keeps nothing of a request, and what the remote
        servers cache is theirs (the owner is not sent to them)."""

    async def _wait_for_slot(self, ticket: _Ticket) -> AsyncIterator[int]:
        """Places in the queue as they change, until the ticket holds an endpoint."""
        while True:
            if ticket.failure is not None:
                raise ticket.failure
            position = 1 if ticket.endpoint else self._waiting.index(ticket) + 1
            if position != ticket.position:
                ticket.position = position
                yield position
            if ticket.endpoint is not None:
                return
            ticket.changed.clear()
            await ticket.changed.wait()

    def _grant(self) -> None:
        """Give free slots to waiting tickets, first come first served."""
        now = time.monotonic()
        waiting = list(self._waiting)
        for ticket in waiting:
            endpoint = self._pick(ticket, now)
            if endpoint is not None:
                self._waiting.remove(ticket)
                endpoint.num_in_flight += 1
                ticket.endpoint = endpoint
                self._idle.clear()
        for ticket in waiting:
            ticket.changed.set()  # granted, or its place may have moved

    def _pick(self, ticket: _Ticket, now: float) -> _Endpoint | None:
        """The least busy endpoint with a free slot, not tried by this request yet;
        endpoints that failed recently only when no other is left."""
        untried = [e for e in self._endpoints if e not in ticket.tried]
        reachable = [e for e in untried if e.avoid_until <= now] or untried
        cap = self.config.max_concurrency_per_endpoint
        free = [e for e in reachable if e.num_in_flight < cap]
        return min(free, key=lambda e: e.num_in_flight, default=None)

    def _release(self, ticket: _Ticket) -> None:
        assert ticket.endpoint is not None
        ticket.endpoint.num_in_flight -= 1
        ticket.endpoint = None
        if self.num_running == 0:
            self._idle.set()
        self._grant()

    def _leave(self, ticket: _Ticket) -> None:
        if ticket.endpoint is not None:
            self._release(ticket)
        elif ticket in self._waiting:
            self._waiting.remove(ticket)
            self._grant()

    def _retry_elsewhere(self, ticket: _Ticket, exc: _Retry, request_id: str) -> None:
        endpoint = ticket.endpoint
        assert endpoint is not None
        log.warning(
            "engine_endpoint_failed", url=endpoint.url, error=str(exc), request_id=request_id
        )
        if exc.status != 429:  # busy is not broken
            endpoint.avoid_until = time.monotonic() + self.config.avoid_failed_endpoint_s
        ticket.tried.add(endpoint)
        self._release(ticket)
        if len(ticket.tried) == len(self._endpoints):
            raise exc.as_error() from exc
        self._waiting.appendleft(ticket)
        self._grant()

    async def _stream(self, ticket: _Ticket, payload: dict) -> AsyncIterator[Event]:
        """One attempt on the ticket's endpoint: Started, Delta..., Finished."""
        assert self._client is not None and ticket.endpoint is not None
        url = f"{ticket.endpoint.url}/chat/completions"
        has_begun = False
        try:
            async with self._client.stream("POST", url, json=payload) as response:
                if response.status_code != 200:
                    raise await _failure(response)
                has_begun = True
                yield Started()
                async with contextlib.aclosing(_read_events(response)) as events:
                    async for event in events:
                        yield event
        except httpx.HTTPError as exc:
            message = f"{type(exc).__name__} from {url}"
            if not has_begun:
                raise _Retry(message) from exc
            raise InferenceError(f"the engine connection failed: {message}") from exc

    async def _check(self, endpoint: _Endpoint) -> None:
        assert self._client is not None
        try:
            response = await self._client.get(f"{endpoint.url}/models")
            response.raise_for_status()
            served = [model.get("id") for model in response.json().get("data", [])]
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            endpoint.avoid_until = time.monotonic() + self.config.avoid_failed_endpoint_s
            log.warning("engine_endpoint_unreachable", url=endpoint.url, error=type(exc).__name__)
            return
        if self.config.model in served:
            log.info("engine_endpoint_ready", url=endpoint.url, model=self.config.model)
        else:
            log.error(
                "engine_model_not_served", url=endpoint.url, model=self.config.model, served=served
            )


async def _failure(response: httpx.Response) -> Exception:
    """The error for a non-200 answer: retry elsewhere on 429 and 5xx."""
    body = (await response.aread())[:500].decode(errors="replace")
    message = f"HTTP {response.status_code} from {response.url}: {body}"
    if response.status_code == 429 or response.status_code >= 500:
        return _Retry(message, status=response.status_code)
    return InferenceError(f"the engine refused the request: {message}")


async def _read_events(response: httpx.Response) -> AsyncIterator[Delta | Finished]:
    """Deltas from the server-sent events, then Finished built from them and the usage."""
    texts: dict[bool, list[str]] = {False: [], True: []}  # is_thought -> pieces
    finish_reason, usage = None, {}
    splitter = ThoughtSplitter()
    async for line in response.aiter_lines():
        chunk = read_sse_line(line)
        if chunk is None:
            continue
        content = read_chunk(chunk)
        if content.error is not None:
            raise InferenceError(f"the engine failed: {content.error}")
        for delta in _split_thoughts(content.deltas, splitter):
            pieces = texts[delta.is_thought]
            text = delta.text if pieces else delta.text.lstrip()  # as the local engine
            if text:
                pieces.append(text)
                yield Delta(text, is_thought=delta.is_thought)
        finish_reason = content.finish_reason or finish_reason
        usage = content.usage or usage
    for delta in splitter.flush():
        texts[delta.is_thought].append(delta.text)
        yield delta
    if finish_reason is None:
        raise InferenceError("the engine's stream ended without a finish reason")
    yield Finished(
        text="".join(texts[False]).strip(),
        thought="".join(texts[True]).strip(),
        num_prompt_tokens=int(usage.get("prompt_tokens", 0)),
        num_output_tokens=int(usage.get("completion_tokens", 0)),
        finish_reason=finish_reason,
    )


def _split_thoughts(deltas: tuple[Delta, ...], splitter: ThoughtSplitter) -> list[Delta]:
    """The content's deltas with any thought in them marked as thought."""
    out: list[Delta] = []
    for delta in deltas:
        out.extend([delta] if delta.is_thought else splitter.feed(delta.text))
    return out
