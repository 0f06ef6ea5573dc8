"""Inline keyboard buttons: language choice and /forget confirmation."""

from __future__ import annotations

import structlog
from telegram import CallbackQuery, Update
from telegram.constants import ChatMemberStatus, ParseMode

from bot.context import BotContext
from bot.logging import user_ref
from inference import LANGUAGES, native_name

log = structlog.get_logger()


async def button(update: Update, context: BotContext) -> None:
    """Dispatch `lang:<code>` and `forget:yes:<id>|no`; anything else is a stale or forged
    button."""
    query = update.callback_query
    kind, _, value = (query.data or "").partition(":")
    user_id = query.from_user.id
    if kind == "lang" and value in LANGUAGES:
        context.profile = await context.storage.set_language(user_id, value)
        await query.answer()
        await query.edit_message_text(
            context.t("lang_set", language=native_name(value)), parse_mode=ParseMode.HTML
        )
    elif kind == "forget" and value.partition(":")[0] == "yes":
        owner = _forget_owner(value, user_id)
        if not await _may_erase(query, owner):
            await query.answer(context.t("button_not_yours"), show_alert=True)
            return
        count = await context.services.erase_user(owner)
        log.info("user_data_erased", user=user_ref(owner), rows=count)
        await query.answer()
        await query.edit_message_text(context.t("forget_done", count=count))
        context.profile = None
    elif kind == "forget" and value == "no":
        await query.answer()
        await query.edit_message_text(context.t("forget_cancelled"))
    else:
        log.warning("unknown_callback", kind=kind[:16], length=len(query.data or ""))
        await query.answer(context.t("button_expired"), show_alert=False)


def _forget_owner(value: str, presser_id: int) -> int:
    """Whose data a `forget:yes:<id>` button erases (buttons from before ids were added
    erase the presser's)."""
    owner = value.partition(":")[2]
    return int(owner) if owner.lstrip("-").isdigit() else presser_id


async def _may_erase(query: CallbackQuery, owner: int) -> bool:
    """The presser's own data; or, for an anonymous admin's (kept under the group's id), an
    admin of that group."""
    if owner == query.from_user.id:
        return True
    message = query.message
    if message is None or owner != message.chat.id:
        return False
    member = await message.get_bot().get_chat_member(owner, query.from_user.id)
    return member.status in (ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.OWNER)
