"""`travelbot serve`: a Worker behind an OpenAI-compatible chat-completions API (aiohttp).

The messages are the prompt, as with vLLM: they are rendered by the checkpoint's own chat
template (`prompts.render_chat`), without the travel assistant's system prompt or task
templates, so one client payload means the same on vLLM, SGLang and here. The bot's remote
engine sends the travel chat it builds itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

from inference.images import ImageLimits
from inference.openai_wire import (
    FINISH_REASONS,
    BadRequest,
    CompletionCall,
    delta_dict,
    error_dict,
    read_completion_call,
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

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}
_INFERENCE_STATUS = {QueueFull: 429, WorkerStopped: 503, ImageRejected: 400}


@dataclass(frozen=True)
class ServerConfig:
    model_name: str  # the name clients pass as `model` and /v1/models lists
    api_key: str | None = None  # None: no Authorization needed
    default_max_tokens: int = 1024
    image_limits: ImageLimits = field(default_factory=ImageLimits)


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


WORKER = web.AppKey("worker", Worker)
CONFIG = web.AppKey("config", ServerConfig)


def create_app(worker: Worker, config: ServerConfig) -> web.Application:
    app = web.Application(
        middlewares=[_errors_as_json, _check_api_key],
        client_max_size=4 * config.image_limits.max_bytes,  # base64 photos, history included
    )
    app[WORKER], app[CONFIG] = worker, config
    app.router.add_get("/v1/models", list_models)
    app.router.add_post("/v1/chat/completions", chat_completions)
    return app


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve `app` on host:port (0: a free port); returns the runner and the bound port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, runner.addresses[0][1]


async def serve(worker: Worker, config: ServerConfig, *, host: str, port: int) -> None:
    """Load the model, serve until SIGINT or SIGTERM, then stop."""
    await worker.start()
    runner, bound_port = await start_site(create_app(worker, config), host, port)
    log.info("server_started", host=host, port=bound_port, model=config.model_name)
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
async def _errors_as_json(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        status, message, code = exc.status, str(exc), exc.code
    except BadRequest as exc:
        status, message, code = 400, str(exc), exc.code
    except InferenceError as exc:
        status = next((s for kind, s in _INFERENCE_STATUS.items() if isinstance(exc, kind)), 500)
        message = str(exc) or exc.kind
        code = "invalid_image" if isinstance(exc, ImageRejected) else exc.kind
    except web.HTTPException as exc:  # aiohttp's own: unknown path, wrong method, too large
        status, message, code = exc.status, exc.reason, exc.reason.lower().replace(" ", "_")
    log.info("api_error", path=request.path, status=status, code=code)
    body = error_dict(message, _ERROR_TYPES.get(status, "server_error"), code)
    return web.json_response(body, status=status)


@web.middleware
async def _check_api_key(request: web.Request, handler) -> web.StreamResponse:
    key = request.app[CONFIG].api_key
    given = request.headers.get("Authorization", "").encode()
    if key and not hmac.compare_digest(given, f"Bearer {key}".encode()):
        raise ApiError(401, "invalid or missing API key (Authorization: Bearer)", "invalid_api_key")
    return await handler(request)


async def list_models(request: web.Request) -> web.Response:
    model = {"id": request.app[CONFIG].model_name, "object": "model", "owned_by": "travelbot"}
    return web.json_response({"object": "list", "data": [model]})


async def chat_completions(request: web.Request) -> web.StreamResponse:
    config, worker = request.app[CONFIG], request.app[WORKER]
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest("the body is not valid JSON") from exc
    call = await asyncio.to_thread(
        read_completion_call,
        body,
        default_max_tokens=config.default_max_tokens,
        image_limits=config.image_limits,
    )
    if call.model and call.model != config.model_name:
        raise ApiError(404, f"model {call.model!r} is not served here", "model_not_found")
    chat = call.request.chat
    log.info(
        "completion_requested",
        request_id=call.request.request_id,
        stream=call.stream,
        num_messages=len(chat),
        num_images=sum(len(m.images) for m in chat),
        think=call.request.think,
    )
    async with contextlib.aclosing(worker.submit(call.request)) as events:
        first = await anext(events)  # admission errors (queue full, stopped) raise here
        chunks = _ChunkMaker(call)
        if call.stream:
            return await _stream(request, chunks, _resume(first, events))
        return web.json_response(await _complete(chunks, _resume(first, events)))


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
