"""The OpenAI chat-completions wire format, both ways: a Request becomes a payload (the
remote engine's client), a payload becomes a Request (`travelbot serve`); engine events
become chunks and chunks become events again.

Conventions shared by vLLM and SGLang: `top_k` in the body (-1: off), thinking switched
on by `chat_template_kwargs: {"enable_thinking": true}`, the thought streamed as
`reasoning_content` (newer vLLM calls it `reasoning`; both are read).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from inference.images import ImageLimits, normalize_image
from inference.prompts import travel_chat
from inference.types import ChatMessage, Delta, Request, Sampling

FINISH_REASONS = {"stop": "stop", "length": "length", "cancelled": "abort"}
_FINISH_FROM_WIRE = {wire: ours for ours, wire in FINISH_REASONS.items()}
_ROLES_FROM_WIRE = {"system": "system", "developer": "system", "user": "user", "assistant": "model"}
_DATA_URL_PREFIX = "data:"


class BadRequest(ValueError):
    """A payload that cannot be served; the message is shown to the client."""

    def __init__(self, message: str, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.code = code


# Client side: Request -> payload, chunk -> events


def chat_payload(request: Request, *, model: str) -> dict[str, Any]:
    """A streaming chat-completions body that asks what `request` asks."""
    sampling = request.sampling
    return {
        "model": model,
        # as they are: the server's chat template (the checkpoint's) places them, as the
        # in-process engine's does
        "messages": [_wire_message(m) for m in request.chat or travel_chat(request)],
        "max_tokens": request.max_new_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k or -1,
        "chat_template_kwargs": {"enable_thinking": request.think},
        # a server without a reasoning parser then keeps the thought's markers in the
        # content, where ThoughtSplitter finds them
        "skip_special_tokens": False,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def _wire_message(message: ChatMessage) -> dict[str, Any]:
    role = "assistant" if message.role == "model" else message.role
    if not message.images:
        return {"role": role, "content": message.text}
    parts: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": image_data_url(image)}}
        for image in message.images
    ]
    parts.append({"type": "text", "text": message.text})
    return {"role": role, "content": parts}


def image_data_url(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


@dataclass(frozen=True)
class ChunkContent:
    """What one streamed chunk carries."""

    deltas: tuple[Delta, ...] = ()
    finish_reason: str | None = None  # ours: "stop", "length" or "cancelled"
    usage: dict[str, int] | None = None
    error: str | None = None


THOUGHT_OPEN, THOUGHT_CLOSE, THOUGHT_LABEL = "<|channel>", "<channel|>", "thought\n"


class ThoughtSplitter:
    """Gemma 4's thought, `<|channel>thought\n ... <channel|>`, out of a streamed content
    text: from a server that has no reasoning parser for Gemma 4 (a parser sends it apart,
    as `reasoning_content`). A marker split across pieces is held back until it is whole."""

    def __init__(self) -> None:
        self._held = ""
        self._in_thought = False
        self._label_pending = False  # "thought\n" may still follow the open marker

    def feed(self, text: str) -> list[Delta]:
        text, self._held = self._held + text, ""
        deltas: list[Delta] = []
        while text:
            marker = THOUGHT_CLOSE if self._in_thought else THOUGHT_OPEN
            if self._label_pending:
                if THOUGHT_LABEL.startswith(text) and len(text) < len(THOUGHT_LABEL):
                    self._held = text
                    break
                self._label_pending = False
                text = text.removeprefix(THOUGHT_LABEL)
                continue
            at = text.find(marker)
            if at < 0:
                keep = _partial_suffix(text, marker)
                text, self._held = text[: len(text) - keep], text[len(text) - keep :]
                if text:
                    deltas.append(Delta(text, is_thought=self._in_thought))
                break
            if at:
                deltas.append(Delta(text[:at], is_thought=self._in_thought))
            text = text[at + len(marker) :]
            self._in_thought = not self._in_thought
            self._label_pending = self._in_thought
        return deltas

    def flush(self) -> list[Delta]:
        """At the end of the stream: what was held back, as the text it turned out to be."""
        held, self._held = self._held, ""
        return [Delta(held, is_thought=self._in_thought)] if held else []


def _partial_suffix(text: str, marker: str) -> int:
    """The length of the longest end of `text` that begins `marker`."""
    return next((n for n in range(min(len(text), len(marker) - 1), 0, -1)
                 if marker.startswith(text[-n:])), 0)  # fmt: skip


def read_sse_line(line: str) -> dict[str, Any] | None:
    """The JSON of one `data:` line; None for other lines and for `[DONE]`."""
    if not line.startswith("data:"):
        return None
    data = line[len("data:") :].strip()
    return None if data == "[DONE]" else json.loads(data)


def read_chunk(chunk: dict[str, Any]) -> ChunkContent:
    if "error" in chunk:
        error = chunk["error"]
        return ChunkContent(error=str(error.get("message") if isinstance(error, dict) else error))
    deltas: list[Delta] = []
    finish_reason = None
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        thought = delta.get("reasoning_content") or delta.get("reasoning")
        if thought:
            deltas.append(Delta(thought, is_thought=True))
        if delta.get("content"):
            deltas.append(Delta(delta["content"]))  # thought markers: ThoughtSplitter
        if choice.get("finish_reason"):
            finish_reason = _FINISH_FROM_WIRE.get(choice["finish_reason"], "stop")
    return ChunkContent(tuple(deltas), finish_reason, chunk.get("usage"))


# Server side: payload -> Request, events -> chunks


@dataclass(frozen=True)
class CompletionCall:
    request: Request
    model: str
    stream: bool
    include_usage: bool


def read_completion_call(
    body: Any, *, default_max_tokens: int, image_limits: ImageLimits
) -> CompletionCall:
    """Check a chat-completions body and build the Request; raises BadRequest or
    ImageRejected. Decodes and normalises images: run it off the event loop."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    if (body.get("n") or 1) != 1:
        raise BadRequest("only n=1 is supported", "unsupported_parameter")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list")
    chat = tuple(_read_message(m, image_limits) for m in messages)
    if chat[-1].role != "user":
        raise BadRequest("the last message must come from the user")
    max_tokens = _first_set(body, "max_completion_tokens", "max_tokens", default=default_max_tokens)
    kwargs = body.get("chat_template_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise BadRequest("'chat_template_kwargs' must be an object")
    defaults = Sampling()
    try:
        sampling = Sampling(
            temperature=float(_first_set(body, "temperature", default=defaults.temperature)),
            top_p=float(_first_set(body, "top_p", default=defaults.top_p)),
            top_k=max(int(_first_set(body, "top_k", default=defaults.top_k)), 0),  # -1: off
        )
        request = Request(
            language="",
            chat=chat,
            think=bool(kwargs.get("enable_thinking", False)),
            max_new_tokens=int(max_tokens),
            sampling=sampling,
        )
    except (TypeError, ValueError) as exc:
        raise BadRequest(str(exc)) from exc
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise BadRequest("'stream_options' must be an object")
    return CompletionCall(
        request=request,
        model=str(body.get("model", "")),
        stream=bool(body.get("stream", False)),
        include_usage=bool(stream_options.get("include_usage", False)),
    )


def _first_set(body: dict, *keys: str, default: Any) -> Any:
    return next((body[key] for key in keys if body.get(key) is not None), default)


def _read_message(message: Any, image_limits: ImageLimits) -> ChatMessage:
    if not isinstance(message, dict) or message.get("role") not in _ROLES_FROM_WIRE:
        raise BadRequest("each message needs a role: system, developer, user or assistant")
    role = _ROLES_FROM_WIRE[message["role"]]
    content = message.get("content")
    if isinstance(content, str):
        return ChatMessage(role, content)
    if not isinstance(content, list):
        raise BadRequest("message content must be a string or a list of parts")
    texts: list[str] = []
    images: list[bytes] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(str(part.get("text", "")))
        elif kind == "image_url" and role == "user":
            image_url = part.get("image_url") or {}
            url = image_url if isinstance(image_url, str) else image_url.get("url", "")
            images.append(normalize_image(_decode_data_url(url), image_limits))
        else:
            raise BadRequest(f"unsupported content part: {kind!r} in a {message['role']} message")
    return ChatMessage(role, "\n".join(texts), tuple(images))


def _decode_data_url(url: str) -> bytes:
    header, _, data = url.partition(",")
    if not header.startswith(_DATA_URL_PREFIX) or not header.endswith(";base64"):
        raise BadRequest("images must be data URLs: data:image/...;base64,...", "invalid_image")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest("the image data URL is not valid base64", "invalid_image") from exc


def usage_dict(num_prompt_tokens: int, num_output_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": num_prompt_tokens,
        "completion_tokens": num_output_tokens,
        "total_tokens": num_prompt_tokens + num_output_tokens,
    }


def delta_dict(delta: Delta) -> dict[str, str]:
    return {"reasoning_content" if delta.is_thought else "content": delta.text}


def error_dict(message: str, kind: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": code}}
