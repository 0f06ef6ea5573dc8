"""Show one answer as it is produced: a status placeholder, the text streamed into a
draft (private chats) or into the placeholder (groups), then the final messages."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog
from telegram import Bot, InlineKeyboardMarkup, Message, ReplyParameters
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, TelegramError

from bot.render import preview

log = structlog.get_logger()

TYPING_REFRESH_S = 4.5  # Telegram shows "typing" for about five seconds


class AnswerStream:
    def __init__(
        self, bot: Bot, chat_id: int, reply_to: int, *, is_private: bool, interval_s: float
    ) -> None:
        self._bot = bot
        self._chat_id = chat_id
        self._reply = ReplyParameters(reply_to, allow_sending_without_reply=True)
        self._use_drafts = is_private
        self._interval_s = interval_s
        self._placeholder: Message | None = None
        self._shown = ""
        self._answer = ""
        self._last_push = 0.0
        self._typing: asyncio.Task | None = None
        self.first_text_at: float | None = None  # monotonic time of the first answer text

    async def start(self, status: str) -> int:
        """Send the placeholder; return its message id."""
        self._placeholder = await self._bot.send_message(
            self._chat_id, status, parse_mode=ParseMode.HTML, reply_parameters=self._reply
        )
        self._shown = status
        self._typing = asyncio.create_task(self._keep_typing())
        return self._placeholder.message_id

    async def set_status(self, status: str) -> None:
        if not self._answer:
            await self._show(status)

    async def append(self, text: str) -> None:
        self._answer += text
        now = time.monotonic()
        if self.first_text_at is None:
            self.first_text_at = now
        if now - self._last_push >= self._interval_s:
            self._last_push = now
            await self._push_preview()

    async def finish(
        self,
        messages: list[str],
        *,
        sent: int = 0,
        on_sent: Callable[[int, int], Awaitable[None]] | None = None,
        keyboard: InlineKeyboardMarkup | None = None,
    ) -> None:
        """Send the final messages from `messages[sent]` on (they notify the user), calling
        `on_sent(count, message_id)` after each one Telegram accepts; then remove the
        placeholder. The `keyboard` goes under the last message."""
        self.close()
        for index in range(sent, len(messages)):
            message = await self._bot.send_message(
                self._chat_id,
                messages[index],
                parse_mode=ParseMode.HTML,
                reply_parameters=self._reply if index == 0 else None,
                reply_markup=keyboard if index == len(messages) - 1 else None,
            )
            if on_sent is not None:
                await on_sent(index + 1, message.message_id)
        await self.discard()

    async def discard(self) -> None:
        """Remove the placeholder (the answer was sent, or erased with /forget)."""
        self.close()
        if self._placeholder is not None:
            with contextlib.suppress(TelegramError):
                await self._placeholder.delete()
            self._placeholder = None

    async def fail(self, text: str) -> None:
        self.close()
        await self._show(text)

    async def _push_preview(self) -> None:
        text = preview(self._answer)
        if not text:
            return
        try:
            if self._use_drafts and self._placeholder is not None:
                await self._bot.send_message_draft(
                    self._chat_id,
                    draft_id=self._placeholder.message_id,
                    text=text,
                    parse_mode=ParseMode.HTML,
                )
            else:
                await self._show(text)
        except TelegramError as exc:  # a preview is best effort; the final answer is not
            log.warning("preview_failed", error=str(exc))

    async def _show(self, text: str) -> None:
        if self._placeholder is None or text == self._shown:
            return
        try:
            await self._placeholder.edit_text(text, parse_mode=ParseMode.HTML)
            self._shown = text
        except BadRequest as exc:
            if "not modified" not in str(exc).lower():
                raise

    async def _keep_typing(self) -> None:
        while True:
            with contextlib.suppress(TelegramError):
                await self._bot.send_chat_action(self._chat_id, ChatAction.TYPING)
            await asyncio.sleep(TYPING_REFRESH_S)

    def close(self) -> None:
        """Stop the typing indicator (idempotent)."""
        if self._typing is not None:
            self._typing.cancel()
            self._typing = None
