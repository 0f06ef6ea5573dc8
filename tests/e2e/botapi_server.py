"""A fake Telegram Bot API server for end-to-end tests of the real python-telegram-bot client.

The server listens on 127.0.0.1 (random free port) and implements enough of the Bot API for a
PTB ``Application`` to long-poll it and call methods on it. Tests play the user::

    server = BotApiServer()
    await server.start()
    app = (
        ApplicationBuilder().token(TOKEN)
        .base_url(server.base_url).base_file_url(server.base_file_url).build()
    )
    ...  # app.initialize(), app.start(), app.updater.start_polling(poll_interval=0.0, timeout=1)
    ann = TgUser(id=1001)
    mark = server.mark()
    server.send_text(ann, "/start")
    call = await server.wait_for(lambda c: c.method == "sendMessage", after=mark)
    msg = await server.wait_for_message(ann.id, lambda m: m.reply_markup is not None)
    server.press_button(ann, msg, "lang:de")
    await server.stop()  # also usable as ``async with BotApiServer() as server:``

Every request is recorded in ``server.calls`` as an ``ApiCall`` (getUpdates included, but left
out of the ``dump()`` shown on wait timeouts). For errors, ``ApiCall.result`` holds the whole
error payload (``{"ok": False, ...}``). Messages sent by the bot are tracked as ``SentMessage``
with the raw ``text`` the bot sent (HTML tags included; for media messages the caption), while
the Message returned to the bot carries Telegram's plain text plus entities.
``wait_for_message`` returns the live ``SentMessage`` when its current state matches, otherwise a
snapshot of an earlier matching state (e.g. an intermediate edit).

Telegram-like validation: texts over 4096 (captions 1024) UTF-16 code units after HTML parsing,
malformed ``parse_mode="HTML"``, unknown file_ids and "message is not modified" edits answer 400.
``fail_next`` and ``block_user`` inject 429/403-style errors. After ``setWebhook`` the server
behaves like Telegram in webhook mode: each new update is POSTed to the webhook URL with the
``X-Telegram-Bot-Api-Secret-Token`` header (HTTP statuses in ``webhook_statuses``) instead of
waiting for getUpdates, which then answers 409; ``deleteWebhook`` switches back to polling.
Note that PTB turns a description like "Bad Request: message is too long" into
``BadRequest("Message is too long")`` (prefix stripped, then ``str.capitalize``), so match error
texts case-insensitively.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import html
import io
import itertools
import json
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

TOKEN = "123456789:TEST-token-not-real"
MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_CALLBACK_DATA = 64  # bytes of a button's callback_data

# fmt: off
_METHODS = [
    "getMe", "getUpdates", "deleteWebhook", "setWebhook", "getWebhookInfo", "setMyCommands",
    "getMyCommands", "deleteMyCommands", "setMyDescription", "setMyShortDescription", "close",
    "logOut", "sendMessage", "sendMessageDraft", "editMessageText", "editMessageCaption",
    "editMessageReplyMarkup", "deleteMessage", "deleteMessages", "sendChatAction",
    "answerCallbackQuery", "sendPhoto", "sendDocument", "sendVoice", "sendAudio", "sendVideo",
    "sendAnimation", "sendSticker", "getFile", "setChatMenuButton", "getChatMember",
]
_MEDIA = {
    "sendPhoto": "photo", "sendDocument": "document", "sendVoice": "voice", "sendAudio": "audio",
    "sendVideo": "video", "sendAnimation": "animation", "sendSticker": "sticker",
}
_INT_FIELDS = {
    "chat_id", "message_id", "offset", "limit", "timeout", "draft_id", "user_id", "from_chat_id",
    "message_thread_id", "reply_to_message_id", "cache_time",
}
_STR_FIELDS = {  # never decoded, even when they look like JSON
    "text", "caption", "parse_mode", "callback_query_id", "file_id", "description",
    "short_description", "title", "url", "emoji", "action", "language_code",
    "inline_message_id", "data", "query", "name", "secret_token",
}
_TAG_TYPES = {
    "b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline",
    "ins": "underline", "s": "strikethrough", "strike": "strikethrough", "del": "strikethrough",
    "span": "spoiler", "tg-spoiler": "spoiler", "a": "text_link", "code": "code", "pre": "pre",
    "blockquote": "blockquote", "tg-emoji": "custom_emoji",
}
_MEDIA_DEFAULTS = {  # enough for PTB to parse any media kind the bot sends
    "width": 100, "height": 100, "duration": 1, "is_animated": False, "is_video": False,
    "type": "regular",
}
# fmt: on
_CANONICAL = {m.lower(): m for m in _METHODS}
_ADMIN_RIGHTS = {
    right: False
    for right in (
        "can_manage_chat", "can_delete_messages", "can_manage_video_chats",
        "can_restrict_members", "can_promote_members", "can_change_info", "can_invite_users",
        "can_post_stories", "can_edit_stories", "can_delete_stories",
    )
}  # fmt: skip
_SEND_PREFIXES = ("send", "edit", "copy", "forward")
_ATTR = r"""[a-zA-Z_-]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'>]+))?"""
_TAG_RE = re.compile(rf"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+{_ATTR})*)\s*>")
_ATTR_RE = re.compile(r"""([a-zA-Z_-]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?""")
_ENTITY_RE = re.compile(r"&(?:lt|gt|amp|quot|#[0-9]+|#x[0-9a-fA-F]+);")


class ApiError(Exception):
    """A Bot API error answer: HTTP status == error_code, Telegram's JSON body."""

    def __init__(self, code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.payload: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
        if retry_after is not None:
            self.payload["parameters"] = {"retry_after": retry_after}


def _bad(description: str) -> ApiError:
    return ApiError(400, f"Bad Request: {description}")


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def parse_html(text: str) -> tuple[str, list[dict]]:
    """Validate Telegram-HTML roughly like Telegram; return (plain text, entities)."""
    out: list[str] = []
    stack: list[tuple[str, dict[str, str], int]] = []  # (tag, attrs, utf16 start)
    entities: list[dict] = []
    pos = i = 0

    def fail(msg: str, at: int) -> ApiError:
        return _bad(f"can't parse entities: {msg} at byte offset {len(text[:at].encode())}")

    while i < len(text):
        ch = text[i]
        if ch == "<":
            m = _TAG_RE.match(text, i)
            if not m:
                raise fail("Character '<' is reserved and must be escaped as \"&lt;\"", i)
            closing, tag, raw_attrs = m.group(1) == "/", m.group(2).lower(), m.group(3)
            if closing:
                if not stack:
                    raise fail("Unexpected end tag", i)
                if stack[-1][0] != tag:
                    expected = stack[-1][0]
                    raise fail(f'Unmatched end tag, expected "</{expected}>", found "</{tag}>"', i)
                _, attrs, start = stack.pop()
                if tag == "code" and stack and stack[-1][0] == "pre":
                    stack[-1][1].setdefault("language", attrs.get("class", "")[9:])
                elif pos > start:
                    entity = {"type": _TAG_TYPES[tag], "offset": start, "length": pos - start}
                    if tag == "a":
                        entity["url"] = attrs.get("href", "")
                    elif tag == "pre" and attrs.get("language"):
                        entity["language"] = attrs["language"]
                    elif tag == "tg-emoji":
                        entity["custom_emoji_id"] = attrs.get("emoji-id", "")
                    elif tag == "blockquote" and "expandable" in attrs:
                        entity["type"] = "expandable_blockquote"
                    entities.append(entity)
            else:
                if tag not in _TAG_TYPES:
                    raise fail(f'Unsupported start tag "{tag}"', i)
                attrs = {a[0].lower(): a[1] or a[2] or a[3] for a in _ATTR_RE.findall(raw_attrs)}
                if tag == "span" and attrs.get("class") != "tg-spoiler":
                    raise fail('Tag "span" must have class "tg-spoiler"', i)
                if tag == "tg-emoji" and "emoji-id" not in attrs:
                    raise fail('Tag "tg-emoji" must have attribute "emoji-id"', i)
                stack.append((tag, attrs, pos))
            i = m.end()
        elif ch == "&":
            m = _ENTITY_RE.match(text, i)
            if not m:
                raise fail("Character '&' is reserved and must be escaped as \"&amp;\"", i)
            plain = html.unescape(m.group())
            out.append(plain)
            pos += _utf16_len(plain)
            i = m.end()
        elif ch == ">":
            raise fail("Character '>' is reserved and must be escaped as \"&gt;\"", i)
        else:
            out.append(ch)
            pos += 2 if ord(ch) > 0xFFFF else 1
            i += 1
    if stack:
        tag = stack[-1][0]
        raise _bad(f"can't parse entities: Can't find end tag corresponding to start tag \"{tag}\"")
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


_MENTION_RE = re.compile(r"(?<![\w@])@[A-Za-z][A-Za-z0-9_]{3,31}\b")


def _mention_entities(text: str) -> list[dict]:
    """Telegram's "mention" entities of `text` (offsets in UTF-16 code units)."""
    return [
        {"type": "mention", "offset": _utf16_len(text[: m.start()]), "length": len(m.group())}
        for m in _MENTION_RE.finditer(text)
    ]


def _command_entities(text: str) -> list[dict]:
    if not text.startswith("/"):
        return []
    length = len(text.split(maxsplit=1)[0]) if text.strip() else 1
    return [{"type": "bot_command", "offset": 0, "length": length}]


ANONYMOUS_ADMIN_ID = 1087968824  # GroupAnonymousBot: every anonymous admin of every group


@dataclass(frozen=True)
class TgUser:
    id: int
    first_name: str = "Ann"
    language_code: str | None = "en"
    username: str | None = None

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        if self.language_code is not None:
            d["language_code"] = self.language_code
        if self.username is not None:
            d["username"] = self.username
        return d


@dataclass
class ApiCall:
    method: str
    params: dict
    result: Any
    at: float


@dataclass
class SentMessage:
    message_id: int
    chat_id: int
    text: str | None
    parse_mode: str | None
    reply_markup: dict | None
    photo: bytes | None = None
    deleted: bool = False
    edits: int = 0


@dataclass
class _StoredFile:
    file_id: str
    file_unique_id: str
    file_path: str
    content: bytes


@dataclass
class _Fault:
    error: ApiError
    times: int
    when: Callable[[dict], bool] | None = None  # only calls whose params match


def _decode_params(raw: dict[str, Any]) -> dict[str, Any]:
    """Decode PTB's wire format: ints, JSON-encoded values, attach:// references to files."""
    files = {k: v for k, v in raw.items() if isinstance(v, bytes)}

    def resolve(v: Any) -> Any:
        if isinstance(v, str) and v.startswith("attach://"):
            return files.get(v.removeprefix("attach://"), v)
        if isinstance(v, list):
            return [resolve(x) for x in v]
        if isinstance(v, dict):
            return {k: resolve(x) for k, x in v.items()}
        return v

    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, str) and key not in _STR_FIELDS:
            with contextlib.suppress(ValueError):
                if key in _INT_FIELDS:
                    value = int(value)
                elif value.startswith(("{", "[")) or value in ("true", "false"):
                    value = json.loads(value)
        out[key] = resolve(value)
    return out


def _image_size(content: bytes) -> tuple[int, int] | None:
    try:
        from PIL import Image

        with Image.open(io.BytesIO(content)) as img:
            return img.size
    except Exception:
        return None


class BotApiServer:
    """Fake Bot API on 127.0.0.1; see the module docstring."""

    def __init__(
        self, token: str = TOKEN, bot_id: int = 424242, bot_username: str = "travel_test_bot"
    ) -> None:
        self.token = token
        self.bot_user: dict[str, Any] = {"id": bot_id, "is_bot": True, "first_name": "Travel Bot"}
        self.bot_user["username"] = bot_username
        self.calls: list[ApiCall] = []
        self._updates: list[dict] = []
        self._update_ids = itertools.count(1)
        self._ids = itertools.count(1)
        self._message_ids: dict[int, itertools.count[int]] = {}
        self._chats: dict[int, dict] = {}
        self._sent: dict[int, list[SentMessage]] = {}
        self._rendered: dict[tuple[int, int], dict] = {}  # last Message dict per bot message
        self._history: list[SentMessage] = []  # snapshots after every change
        self._files: dict[str, _StoredFile] = {}
        self._faults: dict[str, _Fault] = {}
        self._blocked: set[int] = set()
        self._commands: list = []
        self._waiters: set[asyncio.Event] = set()
        self.file_delay_s = 0.0  # a slow network: each file download waits this long
        self.admins: dict[int, set[int]] = {}  # chat id -> its administrators (getChatMember)
        self.webhook_url: str | None = None  # set by setWebhook: updates are pushed there
        self.webhook_secret_token: str | None = None
        self.webhook_statuses: list[int] = []  # HTTP status of every webhook delivery
        self._deliveries: set[asyncio.Task] = set()
        self._http: aiohttp.ClientSession | None = None
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._port = 0

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/file/{bot}/{path:.+}", self._handle_file)
        app.router.add_route("*", "/{bot}/{method}", self._handle_method)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self._port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self._closing = True
        self._notify()
        for task in list(self._deliveries):
            task.cancel()
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> BotApiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/bot"

    @property
    def base_file_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/file/bot"

    # ---- user side -------------------------------------------------------------------------
    def add_file(self, content: bytes, *, file_name: str = "file") -> tuple[str, str]:
        n = next(self._ids)
        unique = f"U{n}{secrets.token_hex(4)}"
        file_id = f"F{n}-{secrets.token_hex(8)}"
        safe = re.sub(r"[^\w.-]", "_", file_name) or "file"
        self._files[file_id] = _StoredFile(file_id, unique, f"fakeapi/{unique}/{safe}", content)
        return file_id, unique

    def push_update(self, update: dict) -> int:
        update_id = next(self._update_ids)
        if self.webhook_url is not None:
            task = asyncio.get_running_loop().create_task(
                self._deliver({**update, "update_id": update_id})
            )
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)
            return update_id
        self._updates.append({**update, "update_id": update_id})
        self._notify()
        return update_id

    async def post_to_webhook(self, update: dict, *, secret_token: str | None) -> int:
        """POST one update to the webhook URL as Telegram does; returns the HTTP status."""
        assert self.webhook_url is not None, "no webhook set"
        if self._http is None:
            self._http = aiohttp.ClientSession()
        headers = {} if secret_token is None else {"X-Telegram-Bot-Api-Secret-Token": secret_token}
        async with self._http.post(self.webhook_url, json=update, headers=headers) as response:
            return response.status

    async def _deliver(self, update: dict) -> None:
        status = await self.post_to_webhook(update, secret_token=self.webhook_secret_token)
        self.webhook_statuses.append(status)
        self._notify()

    def send_text(
        self,
        user: TgUser,
        text: str,
        *,
        chat_id: int | None = None,
        chat_type: str = "private",
        sender_chat: dict | None = None,
        reply_to: dict | SentMessage | None = None,
        entities: list[dict] | None = None,
    ) -> dict:
        """A text from `user`; with `sender_chat`, sent on behalf of that chat (an anonymous
        group admin: user ANONYMOUS_ADMIN and the group itself as sender_chat). Telegram
        marks a leading /command and every @username as entities; `entities` adds more (a
        text_mention of a user without a username). `reply_to`: a message this replies to
        (a dict a send_ method returned, or a message of the bot's)."""
        content: dict[str, Any] = {"text": text}
        found = _command_entities(text) + _mention_entities(text) + list(entities or ())
        if found:
            content["entities"] = sorted(found, key=lambda e: e["offset"])
        if sender_chat is not None:
            content["sender_chat"] = sender_chat
        if reply_to is not None:
            content["reply_to_message"] = self._replied(reply_to)
        return self._user_message(user, chat_id, chat_type, content)

    def send_service(
        self, user: TgUser, *, chat_id: int, chat_type: str = "supergroup", **fields: Any
    ) -> dict:
        """A service message in a chat, e.g. ``new_chat_members=[TgUser(...).to_dict()]``,
        ``left_chat_member=...``, ``new_chat_title="..."``, ``pinned_message={...}``."""
        return self._user_message(user, chat_id, chat_type, fields)

    def send_channel_post(self, chat_id: int, text: str) -> dict:
        """A post in a channel the bot is in: no `from` user at all."""
        chat = {"id": chat_id, "type": "channel", "title": "Test channel"}
        self._chats[chat_id] = chat
        post = {"message_id": self._next_message_id(chat_id), "date": int(time.time())}
        post |= {"chat": chat, "sender_chat": chat, "text": text}
        self.push_update({"channel_post": post})
        return post

    def send_photo(
        self,
        user: TgUser,
        image: bytes,
        *,
        caption: str | None = None,
        chat_id: int | None = None,
        chat_type: str = "private",
        sender_chat: dict | None = None,
        reply_to: dict | SentMessage | None = None,
    ) -> dict:
        content = self._photo_content(image)
        if caption is not None:
            content["caption"] = caption
            if mentions := _mention_entities(caption):
                content["caption_entities"] = mentions
        if sender_chat is not None:
            content["sender_chat"] = sender_chat
        if reply_to is not None:
            content["reply_to_message"] = self._replied(reply_to)
        return self._user_message(user, chat_id, chat_type, content)

    def send_album(
        self,
        user: TgUser,
        images: list[bytes],
        *,
        captions: dict[int, str] | None = None,
        as_files: bool = False,
        chat_id: int | None = None,
        chat_type: str = "private",
    ) -> list[dict]:
        """An album as Telegram delivers it: one message (and update) per photo, in order,
        consecutive message ids, the same string media_group_id; a caption only on the
        pages that have one (`captions`: page index → text); `as_files`: documents (an
        album of image files: Telegram never mixes them with photos)."""
        group = str(13_573_429_558_600_000 + next(self._ids))
        messages = []
        for index, image in enumerate(images):
            if as_files:
                name = f"IMG_{index + 1:04d}.JPG"
                document = {**self._file_dict(image, name), "file_name": name}
                content = {"document": document | {"mime_type": "image/jpeg"}}
            else:
                content = self._photo_content(image)
            content["media_group_id"] = group
            if captions and index in captions:
                content["caption"] = captions[index]
                if mentions := _mention_entities(captions[index]):
                    content["caption_entities"] = mentions
            messages.append(self._user_message(user, chat_id, chat_type, content))
        return messages

    def _photo_content(self, image: bytes) -> dict[str, Any]:
        """A photo message's `photo` sizes, the largest last, as Telegram sends them."""
        size = _image_size(image)
        sizes = [self._photo_size(image, *(size or (100, 100)))]
        if size and max(size) > 320:
            with contextlib.suppress(Exception):
                from PIL import Image

                with Image.open(io.BytesIO(image)) as img:
                    small = img.convert("RGB")
                    small.thumbnail((320, 320))
                    buf = io.BytesIO()
                    small.save(buf, "JPEG")
                sizes.insert(0, self._photo_size(buf.getvalue(), *small.size))
        return {"photo": sizes}

    def send_document(
        self,
        user: TgUser,
        content: bytes,
        *,
        file_name: str,
        mime_type: str,
        caption: str | None = None,
    ) -> dict:
        doc = {
            **self._file_dict(content, file_name),
            "file_name": file_name,
            "mime_type": mime_type,
        }
        body: dict[str, Any] = {"document": doc}
        if caption is not None:
            body["caption"] = caption
        return self._user_message(user, None, "private", body)

    def send_sticker(self, user: TgUser) -> dict:
        sticker = {
            **self._file_dict(b"RIFF\x00\x00\x00\x00WEBP", "sticker.webp"),
            **_MEDIA_DEFAULTS,
        }
        sticker |= {"width": 512, "height": 512, "emoji": "\N{THUMBS UP SIGN}"}
        return self._user_message(user, None, "private", {"sticker": sticker})

    def send_voice(self, user: TgUser, content: bytes = b"OggS...") -> dict:
        voice = {**self._file_dict(content, "voice.ogg"), "duration": 1, "mime_type": "audio/ogg"}
        return self._user_message(user, None, "private", {"voice": voice})

    def press_button(self, user: TgUser, message: SentMessage, data: str) -> str:
        """A callback_query update: ``user`` pressed the button with ``data`` under ``message``."""
        query_id = str(next(self._ids))
        query = {"id": query_id, "from": user.to_dict(), "chat_instance": f"ci{message.chat_id}"}
        query |= {"data": data, "message": self._rendered[(message.chat_id, message.message_id)]}
        self.push_update({"callback_query": query})
        return query_id

    # ---- reading what the bot did ----------------------------------------------------------
    def calls_to(self, method: str, chat_id: int | None = None) -> list[ApiCall]:
        return [
            c
            for c in self.calls
            if c.method.lower() == method.lower()
            and (chat_id is None or c.params.get("chat_id") == chat_id)
        ]

    def messages(self, chat_id: int) -> list[SentMessage]:
        return list(self._sent.get(chat_id, []))

    def visible_messages(self, chat_id: int) -> list[SentMessage]:
        return [m for m in self._sent.get(chat_id, []) if not m.deleted]

    def mark(self) -> int:
        return len(self.calls)

    async def wait_for(
        self, predicate: Callable[[ApiCall], bool], *, timeout: float = 10.0, after: int = 0
    ) -> ApiCall:
        """First call at index >= ``after`` matching ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            for call in self.calls[after:]:
                if predicate(call):
                    return call
            if not await self._wait_change(deadline):
                raise TimeoutError(f"no matching Bot API call within {timeout}s\n{self.dump()}")

    async def wait_for_message(
        self, chat_id: int, predicate: Callable[[SentMessage], bool], *, timeout: float = 10.0
    ) -> SentMessage:
        """A visible bot message in ``chat_id`` matching ``predicate``: the live object if its
        current state matches, else a snapshot of an earlier state (an edit) that matched."""
        deadline = time.monotonic() + timeout
        while True:
            for msg in self.visible_messages(chat_id):
                if predicate(msg):
                    return msg
            for snap in self._history:
                if snap.chat_id == chat_id and not snap.deleted and predicate(snap):
                    return snap
            if not await self._wait_change(deadline):
                states = "\n".join(f"  {m!r}" for m in self.messages(chat_id))
                raise TimeoutError(
                    f"no matching message in chat {chat_id} within {timeout}s; messages:\n"
                    f"{states}\n{self.dump()}"
                )

    def dump(self, last: int = 20) -> str:
        """Readable list of the last calls (getUpdates left out)."""
        calls = [c for c in self.calls if c.method != "getUpdates"][-last:]
        lines = [f"last {len(calls)} Bot API calls (of {len(self.calls)}):"]
        for c in calls:
            params = {
                k: f"<{len(v)} bytes>" if isinstance(v, bytes) else v for k, v in c.params.items()
            }
            failed = isinstance(c.result, dict) and c.result.get("ok") is False
            lines.append(f"  {c.method} {str(params)[:300]} -> {c.result if failed else 'ok'}")
        return "\n".join(lines)

    # ---- fault injection -------------------------------------------------------------------
    def fail_next(
        self,
        method: str,
        *,
        error_code: int = 429,
        description: str = "Too Many Requests: retry after 1",
        retry_after: int | None = 1,
        times: int = 1,
        when: Callable[[dict], bool] | None = None,
    ) -> None:
        """The next `times` calls of `method` (those whose params match `when`) fail."""
        key = _CANONICAL.get(method.lower(), method)
        self._faults[key] = _Fault(ApiError(error_code, description, retry_after), times, when)

    def block_user(self, chat_id: int) -> None:
        self._blocked.add(chat_id)

    # ---- internals: helpers ----------------------------------------------------------------
    def _notify(self) -> None:
        for event in self._waiters:
            event.set()

    async def _wait_change(self, deadline: float) -> bool:
        """Wait until something changes or ``deadline``; False when the deadline passed."""
        remaining = deadline - time.monotonic()
        if remaining <= 0 or self._closing:
            return False
        event = asyncio.Event()
        self._waiters.add(event)
        try:
            await asyncio.wait_for(event.wait(), remaining)
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(event)
        return True

    def _next_message_id(self, chat_id: int) -> int:
        return next(self._message_ids.setdefault(chat_id, itertools.count(1)))

    def _chat(self, chat_id: int) -> dict:
        if chat_id not in self._chats:
            self._chats[chat_id] = (
                {"id": chat_id, "type": "private", "first_name": "Ann"}
                if chat_id > 0
                else {"id": chat_id, "type": "group", "title": "Test group"}
            )
        return self._chats[chat_id]

    def _file_dict(self, content: bytes, file_name: str) -> dict:
        file_id, unique = self.add_file(content, file_name=file_name)
        return {"file_id": file_id, "file_unique_id": unique, "file_size": len(content)}

    def _photo_size(self, content: bytes, width: int, height: int) -> dict:
        return {**self._file_dict(content, "photo.jpg"), "width": width, "height": height}

    def _user_message(
        self, user: TgUser, chat_id: int | None, chat_type: str, content: dict
    ) -> dict:
        if chat_type == "private":
            chat_id = user.id if chat_id is None else chat_id
            chat = {"id": chat_id, "type": "private", "first_name": user.first_name}
            if user.username:
                chat["username"] = user.username
        else:
            chat_id = -abs(user.id) if chat_id is None else chat_id
            chat = {"id": chat_id, "type": chat_type, "title": "Test group"}
        self._chats[chat_id] = chat
        message = {
            "message_id": self._next_message_id(chat_id),
            "date": int(time.time()),
            "chat": chat,
            "from": user.to_dict(),
            **content,
        }
        self.push_update({"message": message})
        return message

    def _replied(self, message: dict | SentMessage) -> dict:
        """A message as reply_to_message shows it: without its own reply_to_message."""
        if isinstance(message, SentMessage):
            message = self._rendered[(message.chat_id, message.message_id)]
        return {k: v for k, v in message.items() if k != "reply_to_message"}

    def _render(self, params: dict, key: str, limit: int) -> dict:
        """Validate text/caption (+ parse_mode) and return Message fields for it."""
        raw, mode = params.get(key), params.get("parse_mode")
        if raw is None or raw == "":
            if key == "text":
                raise _bad("message text is empty")
            return {}
        plain, entities = str(raw), params.get("entities") or params.get("caption_entities")
        if isinstance(mode, str) and mode.lower() == "html":
            plain, entities = parse_html(str(raw))
        if _utf16_len(plain) > limit:  # Telegram counts UTF-16 code units
            raise _bad(f"message {'caption ' if key == 'caption' else ''}is too long")
        fields: dict[str, Any] = {key: plain}
        if entities:
            fields["entities" if key == "text" else "caption_entities"] = entities
        return fields

    @staticmethod
    def _check_buttons(params: dict) -> None:
        """Telegram refuses a button whose callback_data is empty or over 64 bytes."""
        markup = params.get("reply_markup") or {}
        for row in markup.get("inline_keyboard", []):
            for button in row:
                data = button.get("callback_data")
                if data is not None and not 1 <= len(str(data).encode()) <= MAX_CALLBACK_DATA:
                    raise _bad("BUTTON_DATA_INVALID")

    def _store(self, chat_id: int, content: dict, params: dict, photo: bytes | None) -> dict:
        mid = self._next_message_id(chat_id)
        message = {
            "message_id": mid,
            "date": int(time.time()),
            "chat": self._chat(chat_id),
            "from": self.bot_user,
            **content,
        }
        if params.get("reply_markup"):
            message["reply_markup"] = params["reply_markup"]
        raw = params.get("text", params.get("caption"))
        sent = SentMessage(
            mid, chat_id, raw, params.get("parse_mode"), params.get("reply_markup"), photo
        )
        self._sent.setdefault(chat_id, []).append(sent)
        self._rendered[(chat_id, mid)] = message
        self._history.append(dataclasses.replace(sent))
        return message

    def _find(self, params: dict, missing: str) -> SentMessage:
        for msg in self._sent.get(params.get("chat_id"), []):  # type: ignore[arg-type]
            if msg.message_id == params.get("message_id") and not msg.deleted:
                return msg
        raise _bad(missing)

    def _edit(self, msg: SentMessage, method: str, params: dict) -> dict:
        key = {"editMessageText": "text", "editMessageCaption": "caption"}.get(method)
        old = self._rendered[(msg.chat_id, msg.message_id)]
        dropped = {"reply_markup", "entities", "caption_entities", key or "reply_markup"}
        if key is None:  # editMessageReplyMarkup
            new = {k: v for k, v in old.items() if k != "reply_markup"}
        elif (key == "text") != ("text" in old):
            raise _bad(f"there is no {key} in the message to edit")
        else:  # a text/caption edit without reply_markup drops the inline keyboard
            limit = MAX_TEXT if key == "text" else MAX_CAPTION
            new = {k: v for k, v in old.items() if k not in dropped}
            new.update(self._render(params, key, limit))
        if params.get("reply_markup"):
            new["reply_markup"] = params["reply_markup"]
        if {k: v for k, v in new.items() if k != "edit_date"} == {
            k: v for k, v in old.items() if k != "edit_date"
        }:
            raise _bad(
                "message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message"
            )
        new["edit_date"] = int(time.time())
        self._rendered[(msg.chat_id, msg.message_id)] = new
        if key is not None:
            msg.text, msg.parse_mode = params.get(key), params.get("parse_mode")
        msg.reply_markup = new.get("reply_markup")
        msg.edits += 1
        self._history.append(dataclasses.replace(msg))
        return new

    # ---- internals: HTTP -------------------------------------------------------------------
    @staticmethod
    def _json(payload: Any, status: int = 200) -> web.Response:
        return web.json_response(payload, status=status)

    def _unauthorized(self) -> web.Response:
        return self._json({"ok": False, "error_code": 401, "description": "Unauthorized"}, 401)

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["bot"] != f"bot{self.token}":
            return self._unauthorized()
        path = request.match_info["path"]
        for stored in self._files.values():
            if stored.file_path == path:
                await asyncio.sleep(self.file_delay_s)
                return web.Response(body=stored.content)
        return self._json({"ok": False, "error_code": 404, "description": "Not Found"}, 404)

    async def _handle_method(self, request: web.Request) -> web.Response:
        if request.match_info["bot"] != f"bot{self.token}":
            return self._unauthorized()
        called = request.match_info["method"]
        method = _CANONICAL.get(called.lower(), called)
        raw: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                raw.update(await request.json())
            else:
                for key, value in (await request.post()).items():
                    raw[key] = value.file.read() if isinstance(value, web.FileField) else value
        params = _decode_params(raw)
        try:
            result = await self._dispatch(method, params)
            payload, status = {"ok": True, "result": result}, 200
        except ApiError as exc:
            result, payload, status = exc.payload, exc.payload, exc.payload["error_code"]
        self.calls.append(ApiCall(method, params, result, time.monotonic()))
        self._notify()
        return self._json(payload, status)

    async def _dispatch(self, method: str, params: dict) -> Any:
        fault = self._faults.get(method)
        if fault and (fault.when is None or fault.when(params)):
            fault.times -= 1
            if fault.times <= 0:
                del self._faults[method]
            raise fault.error
        chat_id = params.get("chat_id")
        self._check_buttons(params)
        if method.startswith(_SEND_PREFIXES) and chat_id in self._blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        if method == "getUpdates":
            if self.webhook_url is not None:
                raise ApiError(409, "Conflict: can't use getUpdates method while webhook is active")
            return await self._get_updates(params)
        if method == "setWebhook":
            self.webhook_url = str(params["url"]) or None
            self.webhook_secret_token = params.get("secret_token")
            return True
        if method == "deleteWebhook":
            self.webhook_url = self.webhook_secret_token = None
            return True
        if method == "getMe":
            return {**self.bot_user, "can_join_groups": True, "supports_inline_queries": False}
        if method == "getChatMember":
            user_id, chat = int(params["user_id"]), int(chat_id)
            status = "administrator" if user_id in self.admins.get(chat, ()) else "member"
            member = {"status": status, "user": {"id": user_id, "is_bot": False, "first_name": "A"}}
            if status == "administrator":
                member |= {"can_be_edited": False, "is_anonymous": True} | _ADMIN_RIGHTS
            return member
        if method == "getWebhookInfo":
            url = self.webhook_url or ""
            return {"url": url, "has_custom_certificate": False, "pending_update_count": 0}
        if method == "setMyCommands":
            self._commands = list(params.get("commands") or [])
        if method == "getMyCommands":
            return self._commands
        if method == "getFile":
            stored = self._files.get(str(params.get("file_id")))
            if stored is None:
                raise _bad("invalid file_id")
            return {
                "file_id": stored.file_id,
                "file_unique_id": stored.file_unique_id,
                "file_size": len(stored.content),
                "file_path": stored.file_path,
            }
        if method == "sendMessage":
            return self._store(int(chat_id), self._render(params, "text", MAX_TEXT), params, None)
        if method == "sendMessageDraft":
            if params.get("text"):
                self._render(params, "text", MAX_TEXT)
            return True
        if method in _MEDIA:
            return self._send_media(method, params)
        if method in ("editMessageText", "editMessageCaption", "editMessageReplyMarkup"):
            if "inline_message_id" in params:
                return True
            return self._edit(self._find(params, "message to edit not found"), method, params)
        if method == "deleteMessage":
            msg = self._find(params, "message to delete not found")
            msg.deleted = True
            self._history.append(dataclasses.replace(msg))
            return True
        return True  # sendChatAction, answerCallbackQuery, setChatMenuButton, ...

    def _send_media(self, method: str, params: dict) -> dict:
        kind = _MEDIA[method]
        value = params.get(kind)
        if isinstance(value, bytes):
            content = value
        elif isinstance(value, str) and value in self._files:
            content = self._files[value].content
        else:
            content = b""  # a URL or unknown file_id: nothing to store
        fields = self._render(params, "caption", MAX_CAPTION)
        if kind == "photo":
            width, height = _image_size(content) or (100, 100)
            media: Any = [self._photo_size(content, width, height)]
        else:
            media = {**self._file_dict(content, kind), **_MEDIA_DEFAULTS}
        photo = content if kind == "photo" else None
        return self._store(int(params["chat_id"]), {kind: media, **fields}, params, photo)

    async def _get_updates(self, params: dict) -> list[dict]:
        offset, limit = int(params.get("offset") or 0), int(params.get("limit") or 100)
        if offset > 0:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        elif offset < 0:
            self._updates = self._updates[offset:]
        deadline = time.monotonic() + float(params.get("timeout") or 0)
        while not self._updates and await self._wait_change(deadline):
            pass
        return self._updates[: max(1, min(limit, 100))]


def bot_process_env(server: BotApiServer, model_dir, database, **settings: str) -> dict[str, str]:
    """Environment for a bot subprocess talking to `server` with the tiny model on the CPU;
    `settings` are more TRAVELBOT_* values (without the prefix)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAVELBOT_")}
    env.update(
        TRAVELBOT_TELEGRAM_TOKEN=TOKEN,
        TRAVELBOT_TELEGRAM_BASE_URL=server.base_url,
        TRAVELBOT_TELEGRAM_BASE_FILE_URL=server.base_file_url,
        TRAVELBOT_MODEL_PATH=str(model_dir),
        TRAVELBOT_DATABASE_PATH=str(database),
        TRAVELBOT_DEVICE="cpu",
        TRAVELBOT_MAX_SEQ_LEN="2048",
    )
    env.update({f"TRAVELBOT_{name.upper()}": value for name, value in settings.items()})
    return env
