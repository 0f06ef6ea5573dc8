"""Telegram's flood limits are on what the bot sends (30 messages a second, 20 a minute in a
group), and PTB's AIORateLimiter counts every call that names a chat. A read sends nothing:
counted, each "is the presser an admin there?" (getChatMember, asked for any press of a
button naming a group's data, a forged one too) took one of that group's 20 a minute, and
two members pressing such buttons held up every answer in the group for half a minute."""

from __future__ import annotations

from typing import Any

from telegram.ext import AIORateLimiter

READS = frozenset({"getChat", "getChatMember"})  # the calls naming a chat that send nothing


class SendRateLimiter(AIORateLimiter):
    """AIORateLimiter for what the bot sends; reads go straight through."""

    async def process_request(
        self,
        callback,
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ):
        if endpoint in READS:
            return await callback(*args, **kwargs)
        return await super().process_request(
            callback, args, kwargs, endpoint, data, rate_limit_args
        )
