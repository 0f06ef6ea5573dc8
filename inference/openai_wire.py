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
import math
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

from inference.images import ImageLimits, normalize_image
from inference.prompts import travel_chat
from inference.types import ChatMessage, Delta, ImageRejected, Request, Sampling

FINISH_REASONS = {"stop": "stop", "length": "length", "cancelled": "abort"}
_FINISH_FROM_WIRE = {wire: ours for ours, wire in FINISH_REASONS.items()}
_ROLES_FROM_WIRE = {"system": "system", "developer": "system", "user": "user", "assistant": "model"}
_DATA_URL_PREFIX = "data:"


class BadRequest(ValueError):
    """A payload that cannot be served; the message is shown to the client."""

    def __init__(self, message: str, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.code = code


class BodyTooLarge(BadRequest):
    """A body larger than any request within the limits could be (a 413)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "body_too_large")


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

_MAX_INT = 2**31 - 1  # the largest max_tokens or top_k taken (the engine caps max_tokens)

# What the engine cannot honour (Request and Sampling have no stop strings, seed, tools,
# output formats, penalties or log-probabilities): asking for one is a 400, not an answer
# that quietly ignores it. The "off" values, which some clients always send, pass.
_UNSUPPORTED = {
    "stop": (None, []),
    "seed": (None,),
    "tools": (None, []),
    "tool_choice": (None, "none", "auto"),
    "functions": (None, []),
    "function_call": (None, "none", "auto"),
    "response_format": (None, {"type": "text"}),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "presence_penalty": (None, 0),
    "frequency_penalty": (None, 0),
}


@dataclass(frozen=True)
class RequestLimits:
    """What one chat-completions body may hold, checked before anything in it is decoded or
    tokenized: these, not the body's size, bound the work and memory a request costs."""

    max_messages: int = 256
    max_images: int = 10  # per request, so per message too: an album (Telegram: 10 at most)
    # all images of a request together: the body bound stays that of 4 photos at the size
    # limit (an album the bot sends is 10 normalized JPEGs of ~0.3-2 MB)
    max_images_bytes: int = 80 * 1024 * 1024
    max_message_chars: int = 32_768
    max_total_chars: int = 65_536  # all messages' texts together
    image: ImageLimits = field(default_factory=ImageLimits)

    @property
    def max_json_marks(self) -> int:
        """The most `,` `{` `[` a body within the limits holds: any character of a text may
        be one, and a few are needed per message, part and parameter (base64 has none).
        Counted in the raw body before it is parsed: 100 MB of `[1,1,...]` would be tens
        of millions of Python objects."""
        return 4 * self.max_total_chars + 16 * (self.max_messages + self.max_images) + 1024

    @property
    def max_text_bytes(self) -> int:
        """The most bytes a body within the limits holds outside its images' base64 data:
        each character JSON-escaped at worst (12 bytes: a surrogate pair as
        \\uXXXX\\uXXXX), and room for the rest (roles, keys, parameters, white space)."""
        return 12 * self.max_total_chars + 256 * self.max_messages + 64 * 1024

    @property
    def max_parsed_bytes(self) -> int:
        """The most bytes besides the images' data that are parsed: more than
        `max_text_bytes`, so that a client sending too much text is told what is too long
        (a message, all of them, the JSON values), up to ~0.1 s of parsing; a larger body
        that is not images is refused unparsed."""
        return 32 * self.max_text_bytes

    @property
    def max_body_bytes(self) -> int:
        """The largest body that can pass the checks: each image in base64, and the text."""
        images = min(self.max_images * self.image.max_bytes, self.max_images_bytes)
        return _base64_len(images) + self.max_text_bytes


@dataclass(frozen=True)
class CompletionCall:
    request: Request
    model: str
    stream: bool
    include_usage: bool


@dataclass(frozen=True)
class _Message:
    role: Literal["system", "user", "model"]
    text: str
    images: tuple[str | bytes | memoryview, ...]  # base64, not decoded yet


@dataclass(frozen=True)
class CheckedCall:
    """A body that passed every check that needs no decoding; `decode` builds the Request."""

    messages: tuple[_Message, ...]
    think: bool
    max_new_tokens: int
    sampling: Sampling
    model: str
    stream: bool
    include_usage: bool

    @property
    def num_images(self) -> int:
        return sum(len(m.images) for m in self.messages)

    def decode(self, image_limits: ImageLimits, normalize=normalize_image) -> CompletionCall:
        """Decode and normalise the images (CPU work: off the event loop where there are
        any; `normalize`: Worker.image_normalizer's); raises BadRequest or ImageRejected."""
        chat = tuple(
            ChatMessage(
                m.role,
                m.text,
                tuple(normalize(_decode_base64(data), image_limits) for data in m.images),
            )
            for m in self.messages
        )
        request = Request(
            language="",
            chat=chat,
            think=self.think,
            max_new_tokens=self.max_new_tokens,
            sampling=self.sampling,
        )
        return CompletionCall(request, self.model, self.stream, self.include_usage)


def read_completion_call(
    body: Any, *, default_max_tokens: int, image_limits: ImageLimits
) -> CompletionCall:
    """`check_completion_body`, then `decode`, at once: for callers no event loop waits on."""
    limits = RequestLimits(image=image_limits)
    return check_completion_body(body, default_max_tokens=default_max_tokens, limits=limits).decode(
        image_limits
    )


# An image's base64 data as the value of "url" (or of "image_url" itself): the `"` before
# "url" follows `{` or `,` (and white space), so it opens a string even where the body's
# texts quote JSON (their quotes are escaped); the data runs from ";base64," to the next
# `"`, as base64 has none. Sought back from each ";base64," found, in a small window.
_BASE64_MARK = b";base64,"
_IMAGE_URL_BEFORE = re.compile(
    rb'[{,]\s{0,256}"(?:url|image_url)"\s{0,256}:\s{0,256}"data:(?:[^"\\]|\\/){0,256};base64,\Z'
)
_LOOK_BACK = 1536  # bytes: more than any match of _IMAGE_URL_BEFORE
# A large body is searched in steps of this many bytes (a few milliseconds each): between
# them a thread searching it lets the event loop have the GIL
_STEP = 4 * 1024 * 1024


def parse_completion_body(
    raw: bytes | bytearray, *, default_max_tokens: int, limits: RequestLimits
) -> CheckedCall:
    """Parse a chat-completions body and check it (`check_completion_body`), its images'
    base64 data taken out before the JSON is parsed: only the rest is parsed, so a body
    of photos costs milliseconds, and one with more besides them than `max_parsed_bytes`
    is refused unparsed (BodyTooLarge); what passes holds at most `max_text_bytes`. The
    images stay views of `raw`. Up to ~100 MB are searched: in a thread for a large body
    (the GIL is let go every few milliseconds)."""
    text = _TextOf(raw, limits)
    _check_text_size(text.size, limits.max_parsed_bytes)
    # 10 MB of `[1,1,...]` would be millions of Python objects: counted first
    if text.count(b",{[") > limits.max_json_marks:
        raise BadRequest("the body holds more JSON values than a request may", "too_many_values")
    try:
        body = json.loads(text.join())
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise BadRequest("the body is not valid JSON") from exc
    checked = check_completion_body(
        body, default_max_tokens=default_max_tokens, limits=limits, image_data=text.data
    )
    # last, so that a text too long is told so; what looked like image data but is no
    # image part's is text after all
    _check_text_size(text.size + sum(map(len, text.data.values())), limits.max_text_bytes)
    return checked


class _TextOf:
    """A body with the base64 data of its first image data URLs (one more than a request
    may hold) each replaced by a key, and the data by key (`data`). The keys are random, so
    a body cannot name data it did not send. Data with JSON escapes other than `\\/` (PHP's
    json_encode writes them) stays in the text. Counted and measured before it is joined:
    a large body that is not images is refused uncopied."""

    def __init__(self, raw: bytes | bytearray, limits: RequestLimits) -> None:
        self.raw = raw
        self.ranges: list[tuple[int, int]] = []  # of `raw`: the text
        self.keys: list[bytes] = []  # one between each two ranges
        self.data: dict[str, bytes | memoryview] = {}
        nonce = secrets.token_hex(8)
        view = memoryview(raw)
        start = at = 0  # the first byte not yet in `ranges`; where to look on
        for _ in range(16 * (limits.max_images + 1)):  # marks looked at, in images or not
            if len(self.data) > limits.max_images:
                break
            at = _find(raw, _BASE64_MARK, at)
            if at < 0:
                break
            begin = at = at + len(_BASE64_MARK)
            if not _IMAGE_URL_BEFORE.search(raw, max(start, begin - _LOOK_BACK), begin):
                continue
            at = end = _find(raw, b'"', begin)  # up to it, all is in this string
            if end < 0:
                break
            image: bytes | memoryview | None = view[begin:end]
            if raw.find(b"\\", begin, end) >= 0:
                image = _unescape_slashes(view[begin:end])
                if image is None:
                    continue  # other escapes: left to the JSON parser
            key = f"{nonce}{len(self.data)}"
            self.data[key] = image
            self.ranges.append((start, begin))
            self.keys.append(key.encode())
            start = end
        self.ranges.append((start, len(raw)))
        self.size = sum(end - start for start, end in self.ranges) + sum(map(len, self.keys))

    def count(self, chars: bytes) -> int:
        """How many of `chars` the text holds (none is in a key), in steps of _STEP."""
        singles = [bytes((char,)) for char in chars]
        return sum(
            self.raw.count(char, at, min(at + _STEP, end))
            for start, end in self.ranges
            for at in range(start, end, _STEP)
            for char in singles
        )

    def join(self) -> bytes:
        view = memoryview(self.raw)
        pieces: list[bytes | memoryview] = []
        for (start, end), key in zip(self.ranges, [*self.keys, b""], strict=True):
            pieces += (view[start:end], key)
        return b"".join(pieces)


def _unescape_slashes(data: memoryview) -> bytes | None:
    """`data` with each `\\/` as `/`, in steps of _STEP; None if it holds another escape."""
    pieces = []
    at = 0
    while at < len(data):
        stop = min(at + _STEP, len(data))
        stop += stop < len(data) and data[stop - 1] == ord("\\")  # not between `\\` and `/`
        pieces.append(bytes(data[at:stop]).replace(b"\\/", b"/"))
        if b"\\" in pieces[-1]:
            return None
        at = stop
    return b"".join(pieces)


def _find(raw: bytes | bytearray, needle: bytes, start: int) -> int:
    """`raw.find(needle, start)`, in steps of _STEP bytes (the GIL may pass between). Its
    first byte is sought first (memchr: ~10 times as fast), up to 16 times a step."""
    for at in range(start, len(raw), _STEP):
        stop = at + _STEP + len(needle) - 1
        for _ in range(16):
            at = raw.find(needle[:1], at, stop)
            if at < 0 or raw.startswith(needle, at):
                break
            at += 1
        else:
            at = raw.find(needle, at, stop)
        if at >= 0:
            return at
    return -1


def _check_text_size(size: int, limit: int) -> None:
    if size > limit:
        raise BodyTooLarge(f"the body holds more than {limit} bytes besides its images' data")


def check_completion_body(
    body: Any,
    *,
    default_max_tokens: int,
    limits: RequestLimits,
    image_data: dict[str, bytes | memoryview] | None = None,
) -> CheckedCall:
    """Check a chat-completions body against `limits` without decoding an image or
    tokenizing a text (cheap: it may run on the event loop); raises BadRequest or
    ImageRejected. `image_data`: image data taken out of the body by key
    (`parse_completion_body`); those used are removed from it."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    for key, off in _UNSUPPORTED.items():
        if body.get(key) not in off:
            raise BadRequest(f"{key!r} is not supported by this server", "unsupported_parameter")
    if body.get("n") not in (None, 1):
        raise BadRequest("only n=1 is supported", "unsupported_parameter")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list")
    if len(messages) > limits.max_messages:
        raise BadRequest(f"at most {limits.max_messages} messages", "too_many_messages")
    read = _MessageReader(limits, {} if image_data is None else image_data)
    chat = tuple(read(m) for m in messages)
    if chat[-1].role != "user":
        raise BadRequest("the last message must come from the user")
    kwargs = _object(body, "chat_template_kwargs")
    stream_options = _object(body, "stream_options")
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    defaults = Sampling()
    try:
        sampling = Sampling(
            temperature=_number(body, "temperature", defaults.temperature),
            top_p=_number(body, "top_p", defaults.top_p),
            top_k=max(_integer(body, "top_k", defaults.top_k, low=-1), 0),  # -1: off
        )
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    model = body.get("model")
    if not isinstance(model, str | None):
        raise BadRequest("'model' must be a string")
    return CheckedCall(
        messages=chat,
        think=_flag(kwargs, "enable_thinking"),
        max_new_tokens=_integer(body, key, default_max_tokens, low=1),
        sampling=sampling,
        model=model or "",
        stream=_flag(body, "stream"),
        include_usage=_flag(stream_options, "include_usage"),
    )


def _object(body: dict, key: str) -> dict:
    value = body.get(key)
    if not isinstance(value, dict | None):
        raise BadRequest(f"{key!r} must be an object")
    return value or {}


def _flag(body: dict, key: str) -> bool:
    value = body.get(key)
    if not isinstance(value, bool | None):
        raise BadRequest(f"{key!r} must be true or false")
    return bool(value)


def _number(body: dict, key: str, default: float) -> float:
    """A finite number (JSON allows 1e400, which Python reads as infinity, and NaN)."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{key!r} must be a number")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        number = math.inf
    if not math.isfinite(number):
        raise BadRequest(f"{key!r} must be a finite number")
    return number


def _integer(body: dict, key: str, default: int, *, low: int) -> int:
    value = body.get(key)
    if value is None:
        return default
    number = _number(body, key, default)
    if number != int(number) or not low <= number <= _MAX_INT:
        raise BadRequest(f"{key!r} must be an integer from {low} to {_MAX_INT}")
    return int(number)


class _MessageReader:
    """Messages one by one, counting images and characters against the limits part by
    part, so that a body over them is refused at the first part too many."""

    def __init__(self, limits: RequestLimits, image_data: dict[str, bytes | memoryview]) -> None:
        self.limits = limits
        self.image_data = image_data  # taken out of the body, by key: those used are removed
        self.num_images = 0
        self.num_image_chars = 0  # base64 of all images so far
        self.num_chars = 0  # of all messages, the newlines that join parts included
        self.message_chars = 0

    def __call__(self, message: Any) -> _Message:
        if not isinstance(message, dict) or message.get("role") not in _ROLES_FROM_WIRE:
            raise BadRequest("each message needs a role: system, developer, user or assistant")
        role = _ROLES_FROM_WIRE[message["role"]]
        content = message.get("content")
        self.message_chars = 0
        if isinstance(content, str):
            return _Message(role, self._text(content), ())
        if not isinstance(content, list):
            raise BadRequest("message content must be a string or a list of parts")
        texts: list[str] = []
        images: list[str] = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                texts.append(self._text(part.get("text", ""), joined=bool(texts)))
            elif kind == "image_url" and role == "user":
                images.append(self._image(part.get("image_url")))
            else:
                raise BadRequest(
                    f"unsupported content part: {kind!r} in a {message['role']} message"
                )
        return _Message(role, "\n".join(texts), tuple(images))

    def _text(self, text: Any, *, joined: bool = False) -> str:
        """`text`, counted; `joined`: a newline will join it to the text before."""
        if not isinstance(text, str):
            raise BadRequest("a text part's 'text' must be a string")
        length = len(text) + joined
        self.message_chars += length
        self.num_chars += length
        if self.message_chars > self.limits.max_message_chars:
            raise BadRequest(
                f"a message has more than {self.limits.max_message_chars} characters",
                "message_too_long",
            )
        if self.num_chars > self.limits.max_total_chars:
            raise BadRequest(
                f"the messages have more than {self.limits.max_total_chars} characters",
                "prompt_too_long",
            )
        if not text.isascii():
            try:
                text.encode()
            except UnicodeEncodeError as exc:  # JSON's "\\ud800": no character
                raise BadRequest(
                    f"a text holds a lone surrogate ({text[exc.start]!r}): not Unicode text",
                    "invalid_text",
                ) from None
        return text

    def _image(self, image_url: Any) -> str | bytes | memoryview:
        """The base64 data of an image part, its size checked; decoded later."""
        self.num_images += 1
        if self.num_images > self.limits.max_images:
            raise BadRequest(
                f"at most {self.limits.max_images} images per request", "too_many_images"
            )
        url = image_url.get("url") if isinstance(image_url, dict) else image_url
        header, _, data = url.partition(",") if isinstance(url, str) else ("", "", "")
        if not header.startswith(_DATA_URL_PREFIX) or not header.endswith(";base64"):
            raise BadRequest("images must be data URLs: data:image/...;base64,...", "invalid_image")
        data = self.image_data.pop(data, data)
        if len(data) > _base64_len(self.limits.image.max_bytes):
            raise ImageRejected("too_large", f"over {self.limits.image.max_bytes} bytes")
        self.num_image_chars += len(data)
        if self.num_image_chars > _base64_len(self.limits.max_images_bytes):
            raise ImageRejected("too_large", f"images over {self.limits.max_images_bytes} bytes")
        return data


def _base64_len(num_bytes: int) -> int:
    return 4 * -(-num_bytes // 3)


def _decode_base64(data: str | bytes | memoryview) -> bytes:
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
