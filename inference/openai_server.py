"""`travelbot serve`: a Worker behind an OpenAI-compatible chat-completions API (aiohttp).

The messages are the prompt, as with vLLM: they are rendered by the checkpoint's own chat
template (`prompts.render_chat`), without the travel assistant's system prompt or task
templates, so one client payload means the same on vLLM, SGLang and here. The bot's remote
engine sends the travel chat it builds itself.

A request is bounded before it costs anything: refused (429) without its body being read
when the worker's queue has no room for it, or when it is large (a photo) and as many large
bodies are arriving already; its body read (within a time limit) before it takes a place
in the queue, so a slow client holds none; the body's text, its images' data taken out,
bounded before it is parsed, a large one parsed off the event loop; its counts and sizes
checked (`RequestLimits`) before an image is decoded or a text tokenized; its images
decoded in a pool of their own. A client that leaves cancels its handler (aiohttp's
handler cancellation), and with it its place in the queue or its generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import ipaddress
import json
import signal
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from inference.gauges import worker_gauges
from inference.openai_wire import (
    FINISH_REASONS,
    BadRequest,
    BodyTooLarge,
    CompletionCall,
    RequestLimits,
    delta_dict,
    error_dict,
    parse_completion_body,
    usage_dict,
)
from inference.types import (
    Delta,
    Event,
    Finished,
    ImageRejected,
    InferenceError,
    QueueFull,
    WorkerStopped,
)
from inference.worker import Worker

log = structlog.get_logger()

disable_created_metrics()  # no *_created series, as in the bot's metrics

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}
_INFERENCE_STATUS = {QueueFull: 429, WorkerStopped: 503, ImageRejected: 400}
# answered without Authorization, as vLLM does: a load balancer's or Docker's probe, and a
# Prometheus scrape, carry no key; neither tells anything of a request
_OPEN_PATHS = frozenset({"/health", "/metrics"})
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
CLIENT_LEFT = 499  # the status counted for a request whose client left (nginx's)
# A body up to this size needs no place among the large uploads: aiohttp buffers as much
# of any connection's bytes before it stops reading from it. Larger ones are parsed in the
# admission's parse pool rather than on the event loop.
SMALL_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class ServerConfig:
    model_name: str  # the name clients pass as `model` and /v1/models lists
    api_key: str | None = None  # None: no Authorization needed (`serve` warns)
    default_max_tokens: int = 1024
    limits: RequestLimits = field(default_factory=RequestLimits)
    # images are decoded by this many threads, apart from the engine's preparation and
    # asyncio's default executor: a request without images never waits behind photos
    decode_threads: int = 2
    body_timeout_s: float = 60.0  # a body must arrive whole within this
    # and a large one, after its first seconds, at least this fast: else a few slow senders
    # would keep the `max_large_uploads` places, and everyone's photos, for the whole minute
    min_upload_bytes_per_s: int = 64 * 1024
    upload_grace_s: float = 5.0
    # bodies over SMALL_BODY_BYTES (or of unknown length, or compressed) received at once;
    # one more is a 429 before it is read: slow senders of photos hold at most this many
    max_large_uploads: int = 8
    # a connection is closed when it has not sent a whole request line and headers within
    # this (of opening, or of the last answer): an idle keep-alive, or a slow client
    idle_timeout_s: float = 30.0


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class Admission:
    """Requests between their arrival and the worker's queue. A request whose body has
    arrived counts against the worker's queue room while it is checked and its images
    decoded; one that would not be queued is refused (429) before its body is read, its
    images decoded or its text tokenized. Bodies still arriving hold no place in the queue
    (a slow client would keep it from others); large ones are received a few at a time."""

    def __init__(self, worker: Worker, config: ServerConfig) -> None:
        self.worker = worker
        self.max_large_uploads = config.max_large_uploads
        self.num_admitting = 0  # bodies read, being checked or decoded: places in the queue
        self.num_reading = 0  # bodies being received
        self.num_large_reading = 0  # those over SMALL_BODY_BYTES, of unknown size, compressed
        self.decode_pool = ThreadPoolExecutor(
            config.decode_threads, thread_name_prefix="serve-decode"
        )
        # large bodies are parsed here, off the event loop and apart from the photos
        self.parse_pool = ThreadPoolExecutor(1, thread_name_prefix="serve-parse")

    def check_room(self) -> None:
        """Raise unless the worker runs and its queue has room for one more request."""
        worker = self.worker
        if not worker.is_alive:
            raise WorkerStopped("the worker is not running")
        if worker.queue_depth + self.num_admitting >= worker.max_queue:
            raise QueueFull(f"{worker.queue_depth} requests waiting")

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """A place in the queue, from when the body has arrived until it is queued."""
        self.check_room()
        self.num_admitting += 1
        try:
            yield
        finally:
            self.num_admitting -= 1

    @contextlib.contextmanager
    def receiving(self, *, large: bool) -> Iterator[None]:
        """A body being received; a large one is a 429 when `max_large_uploads` are."""
        if large and self.num_large_reading >= self.max_large_uploads:
            raise ApiError(
                429, f"{self.num_large_reading} large bodies are being received", "too_many_uploads"
            )
        self.num_reading += 1
        self.num_large_reading += large
        try:
            yield
        finally:
            self.num_reading -= 1
            self.num_large_reading -= large

    def shutdown(self) -> None:
        for pool in (self.decode_pool, self.parse_pool):
            pool.shutdown(wait=False, cancel_futures=True)


class Metrics:
    """Prometheus metrics of one app (its own registry: tests run several)."""

    def __init__(self, admission: Admission) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "travelbot_serve_requests",
            f"Chat completions answered, by HTTP status ({CLIENT_LEFT}: the client left).",
            ["status"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "travelbot_serve_request_seconds",
            "Time to answer a chat completion (a streamed one: to its end).",
            buckets=_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StateGauges(admission))


class _StateGauges(Collector):
    """The worker's state and the admission's, read at scrape time."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission

    def describe(self) -> list:
        return []  # the registry need not call collect() at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        admission = self.admission
        worker = admission.worker
        yield GaugeMetricFamily(
            "travelbot_serve_bodies_reading",
            "Request bodies being received (they hold no place in the queue).",
            value=admission.num_reading,
        )
        yield GaugeMetricFamily(
            "travelbot_serve_large_bodies_reading",
            f"Of those, the ones over {SMALL_BODY_BYTES} bytes, of unknown size or compressed "
            f"(at most {admission.max_large_uploads}).",
            value=admission.num_large_reading,
        )
        yield GaugeMetricFamily(
            "travelbot_serve_requests_admitting",
            "Requests received, being checked or their images decoded (places in the queue).",
            value=admission.num_admitting,
        )
        yield from worker_gauges(worker, "travelbot_serve")


WORKER = web.AppKey("worker", Worker)
CONFIG = web.AppKey("config", ServerConfig)
ADMISSION = web.AppKey("admission", Admission)
METRICS = web.AppKey("metrics", Metrics)


def create_app(worker: Worker, config: ServerConfig) -> web.Application:
    app = web.Application(
        middlewares=[_counted, _errors_as_json, _check_api_key],
        client_max_size=config.limits.max_body_bytes,
    )
    app[WORKER], app[CONFIG] = worker, config
    app[ADMISSION] = admission = Admission(worker, config)
    app[METRICS] = Metrics(admission)

    async def shut_pools(_app: web.Application) -> None:
        admission.shutdown()

    app.on_cleanup.append(shut_pools)
    app.router.add_get("/v1/models", list_models)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve `app` on host:port (0: a free port); returns the runner and the bound port."""
    runner = web.AppRunner(
        app,
        access_log=None,
        # a client that disconnects cancels its handler, and so its request: queued, it
        # gives its place up; running, its generation stops
        handler_cancellation=True,
        keepalive_timeout=app[CONFIG].idle_timeout_s,
    )
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, runner.addresses[0][1]


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server to this machine ("", "0.0.0.0", a name other
    than localhost, or a public address do not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def serve(worker: Worker, config: ServerConfig, *, host: str, port: int) -> None:
    """Load the model, serve until SIGINT or SIGTERM, then stop."""
    await worker.start()
    runner, bound_port = await start_site(create_app(worker, config), host, port)
    log.info("server_started", host=host, port=bound_port, model=config.model_name)
    if config.api_key is None:
        log.warning(
            "auth_disabled",
            host=host,
            port=bound_port,
            detail="no TRAVELBOT_SERVE_API_KEY: anyone who reaches this port may use the model",
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()
        await worker.stop()


@web.middleware
async def _counted(request: web.Request, handler) -> web.StreamResponse:
    """Chat completions by status, and their time, for /metrics."""
    if request.path != "/v1/chat/completions":
        return await handler(request)
    metrics, start, status = request.app[METRICS], time.monotonic(), 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except asyncio.CancelledError:
        status = CLIENT_LEFT
        raise
    finally:
        metrics.requests.labels(status=str(status)).inc()
        metrics.seconds.observe(time.monotonic() - start)


@web.middleware
async def _errors_as_json(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        status, message, code = exc.status, str(exc), exc.code
    except BadRequest as exc:
        status, message, code = 413 if isinstance(exc, BodyTooLarge) else 400, str(exc), exc.code
    except InferenceError as exc:
        status = next((s for kind, s in _INFERENCE_STATUS.items() if isinstance(exc, kind)), 500)
        message = str(exc) or exc.kind
        code = "invalid_image" if isinstance(exc, ImageRejected) else exc.kind
    except web.HTTPException as exc:  # aiohttp's own: unknown path, wrong method, too large
        status, message, code = exc.status, exc.reason, exc.reason.lower().replace(" ", "_")
    log.info("api_error", path=request.path, status=status, code=code)
    body = error_dict(message, _ERROR_TYPES.get(status, "server_error"), code)
    response = web.json_response(body, status=status)
    if status in (408, 413) or code == "too_many_uploads":
        response.force_close()  # the rest of the body is not read: nothing more on this one
    return response


@web.middleware
async def _check_api_key(request: web.Request, handler) -> web.StreamResponse:
    key = request.app[CONFIG].api_key
    if key is not None and request.path not in _OPEN_PATHS:
        # aiohttp keeps a header's bytes that are not UTF-8 as surrogates: back to bytes
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, f"Bearer {key}".encode()):  # constant time
            raise ApiError(
                401, "invalid or missing API key (Authorization: Bearer)", "invalid_api_key"
            )
    return await handler(request)


async def health(request: web.Request) -> web.Response:
    """200 while the engine runs, as vLLM's /health (compose health checks use it)."""
    return web.Response(status=200 if request.app[WORKER].is_alive else 503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


async def list_models(request: web.Request) -> web.Response:
    model = {"id": request.app[CONFIG].model_name, "object": "model", "owned_by": "travelbot"}
    return web.json_response({"object": "list", "data": [model]})


async def chat_completions(request: web.Request) -> web.StreamResponse:
    config, worker = request.app[CONFIG], request.app[WORKER]
    async with contextlib.AsyncExitStack() as stack:
        with contextlib.ExitStack() as admitting:  # a place in the queue until queued
            call = await _read_call(request, config, request.app[ADMISSION], admitting)
            chat = call.request.chat
            log.info(
                "completion_requested",
                request_id=call.request.request_id,
                stream=call.stream,
                num_messages=len(chat),
                num_images=sum(len(m.images) for m in chat),
                think=call.request.think,
            )
            events = await stack.enter_async_context(
                contextlib.aclosing(worker.submit(call.request))
            )
            first = await _queued(events)
        chunks = _ChunkMaker(call)
        if call.stream:
            return await _stream(request, chunks, _resume(first, events))
        return web.json_response(await _complete(chunks, _resume(first, events)))


async def _read_call(
    request: web.Request,
    config: ServerConfig,
    admission: Admission,
    admitting: contextlib.ExitStack,
) -> CompletionCall:
    """The body, read whole before it takes a place in the queue (entered on `admitting`);
    checked within the limits before any decoding; its images decoded in the admission's
    pool."""
    admission.check_room()  # a request that would not be queued: refused unread
    raw = await _read_body(request, config, admission)
    admitting.enter_context(admission.slot())  # the queue may have filled meanwhile
    limits = config.limits
    parse = functools.partial(
        parse_completion_body, raw, default_max_tokens=config.default_max_tokens, limits=limits
    )
    loop = asyncio.get_running_loop()
    if len(raw) <= SMALL_BODY_BYTES:
        checked = parse()
    else:  # up to ~100 MB searched for images' data: not on the event loop
        checked = await loop.run_in_executor(admission.parse_pool, parse)
    if checked.model and checked.model != config.model_name:
        raise ApiError(404, f"model {checked.model!r} is not served here", "model_not_found")
    if not checked.num_images:
        return checked.decode(limits.image)  # nothing to decode
    decode = functools.partial(
        checked.decode, limits.image, admission.worker.image_normalizer()
    )  # the images normalized in a preparing process where the model runs on a GPU
    return await loop.run_in_executor(admission.decode_pool, decode)


async def _read_body(
    request: web.Request, config: ServerConfig, admission: Admission
) -> bytes | bytearray:
    """The body, within the size and time limits; a large one only while fewer than
    `max_large_uploads` are being received, and only while it keeps its pace."""
    limits = config.limits
    length = request.content_length
    if (length or 0) > limits.max_body_bytes:
        raise web.HTTPRequestEntityTooLarge(limits.max_body_bytes, length)
    if not request.can_read_body:  # none, or read by a middleware (aiohttp keeps it)
        return await request.read()
    # a compressed body may be larger than its length says (aiohttp inflates it)
    large = length is None or length > SMALL_BODY_BYTES or "Content-Encoding" in request.headers
    body = bytearray()  # not bytes: joined without a copy of the whole
    started = asyncio.get_running_loop().time()
    with admission.receiving(large=large):
        try:
            async with asyncio.timeout(config.body_timeout_s):
                while True:
                    due = (
                        started + config.upload_grace_s + len(body) / config.min_upload_bytes_per_s
                    )
                    async with asyncio.timeout_at(due if large else None):
                        chunk = await request.content.readany()
                    if not chunk:
                        break
                    body += chunk
                    if len(body) > limits.max_body_bytes:  # chunked: no length announced
                        raise web.HTTPRequestEntityTooLarge(limits.max_body_bytes, len(body))
        except TimeoutError:
            raise ApiError(408, "the body did not arrive in time", "request_timeout") from None
    return body


async def _queued(events: AsyncIterator[Event]) -> Event:
    """The first event: admission errors (queue full, stopped) raise here, and so do the
    engine's refusals while preparing (a prompt too long for it): the request's fault, a 400."""
    try:
        return await anext(events)
    except InferenceError as exc:
        if type(exc) is InferenceError:
            raise ApiError(400, str(exc), "request_rejected") from exc
        raise


async def _resume(first: Event, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
    yield first
    async for event in events:
        yield event


class _ChunkMaker:
    def __init__(self, call: CompletionCall) -> None:
        self.call = call
        self.id = f"chatcmpl-{call.request.request_id}"
        self.created = int(time.time())

    def _base(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.call.model}

    def chunk(self, delta: dict, finished: Finished | None = None) -> dict[str, Any]:
        """A delta; the last one carries the finish reason (usage comes in `usage_chunk`)."""
        reason = FINISH_REASONS[finished.finish_reason] if finished is not None else None
        choice = {"index": 0, "delta": delta, "finish_reason": reason}
        return {**self._base("chat.completion.chunk"), "choices": [choice]}

    def usage_chunk(self, finished: Finished) -> dict[str, Any]:
        return {**self._base("chat.completion.chunk"), "choices": [], "usage": _usage(finished)}

    def completion(self, finished: Finished) -> dict[str, Any]:
        message = {
            "role": "assistant",
            "content": finished.text,
            "reasoning_content": finished.thought or None,
        }
        choice = {
            "index": 0,
            "message": message,
            "finish_reason": FINISH_REASONS[finished.finish_reason],
        }
        return {**self._base("chat.completion"), "choices": [choice], "usage": _usage(finished)}


def _usage(finished: Finished) -> dict[str, int]:
    return usage_dict(finished.num_prompt_tokens, finished.num_output_tokens)


async def _complete(chunks: _ChunkMaker, events: AsyncIterator[Event]) -> dict[str, Any]:
    async for event in events:
        if isinstance(event, Finished):
            return chunks.completion(event)
    raise InferenceError("the worker ended the stream without an answer")


async def _stream(
    request: web.Request, chunks: _ChunkMaker, events: AsyncIterator[Event]
) -> web.StreamResponse:
    """Server-sent events; an error after the headers went out becomes an `error` event."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    try:
        await _send(response, chunks.chunk({"role": "assistant", "content": ""}))
        try:
            async for event in events:
                if isinstance(event, Delta):
                    await _send(response, chunks.chunk(delta_dict(event)))
                elif isinstance(event, Finished):
                    await _send(response, chunks.chunk({}, event))
                    if chunks.call.include_usage:
                        await _send(response, chunks.usage_chunk(event))
        except InferenceError as exc:
            request_id = chunks.call.request.request_id
            log.warning("completion_failed", request_id=request_id, kind=exc.kind)
            await _send(response, error_dict(str(exc) or exc.kind, "server_error", exc.kind))
        await response.write(b"data: [DONE]\n\n")
    except ConnectionResetError:  # the client left; closing `events` cancels the request
        log.info("client_disconnected", request_id=chunks.call.request.request_id)
    return response


async def _send(response: web.StreamResponse, data: dict[str, Any]) -> None:
    await response.write(f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode())
