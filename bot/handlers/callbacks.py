"""Inline keyboard buttons: language choice, /diet, /forget confirmation, "Show to staff",
"Ask anyway"."""

from __future__ import annotations

import asyncio
import re

import structlog
from telegram import CallbackQuery, ReplyParameters, Update
from telegram.constants import ChatMemberStatus, ParseMode
from telegram.error import BadRequest, TelegramError

from bot.answering import run_erasable
from bot.context import BotContext
from bot.drawing import CALLBACK_PREFIX as OVERLAY_PREFIX
from bot.drawing import draw_on_photo
from bot.drawing import read_callback as read_overlay_callback
from bot.handlers import diet
from bot.handlers.messages import ask_anyway
from bot.logging import user_ref
from bot.phrase_card import render_card
from bot.phrases import CALLBACK_PREFIX, read_callback
from inference import LANGUAGES, Phrase, native_name, split_answer

log = structlog.get_logger()

_CHAT_ID = re.compile(r"-?[0-9]{1,20}")
MAX_JOB_ID_DIGITS = 18


async def button(update: Update, context: BotContext) -> None:
    """Dispatch `lang:<code>:<id>`, `diet:<code>|clear|done`, `forget:yes|no:<id>`,
    `say:<row>:<n>`, `anyway:<job id>` and `ovl:<row>:<page>`; anything else is a stale or
    forged button."""
    query = update.callback_query
    kind, _, value = (query.data or "").partition(":")
    if kind == "lang":
        await _language_button(query, context, *value.split(":", 1))
    elif kind == "diet":
        shown = await diet.press(query, context, value)
        if shown is None:
            await query.answer(context.t("button_expired"))
            return
        text, keyboard = shown
        await query.answer()
        await _edit(query, text, parse_mode=ParseMode.HTML, reply_markup=keyboard)
    elif kind == "forget" and value.partition(":")[0] in ("yes", "no"):
        await _forget_button(query, context, *value.split(":", 1))
    elif kind == "anyway":
        await _ask_anyway_button(update, context, value)
    elif kind == CALLBACK_PREFIX:
        await show_phrase(query, context)
    elif kind == OVERLAY_PREFIX:
        await show_on_photo(query, context)
    else:
        log.warning("unknown_callback", kind=kind[:16], length=len(query.data or ""))
        await query.answer(context.t("button_expired"), show_alert=False)


async def _language_button(
    query: CallbackQuery, context: BotContext, code: str, owner: str = ""
) -> None:
    """`lang:<code>:<id>`: set <id>'s answer language; only they (or an admin of a chat
    that spoke) may press it, as with /forget."""
    owner_id = _button_owner(owner, query.from_user.id)
    if code not in LANGUAGES or owner_id is None:
        await query.answer(context.t("button_expired"))
        return
    if not await _may_act_for(query, owner_id):
        await query.answer(context.t("button_not_yours"), show_alert=True)
        return
    context.profile = await context.storage.set_language(owner_id, code)
    await query.answer()
    await query.edit_message_text(
        context.t("lang_set", language=native_name(code)), parse_mode=ParseMode.HTML
    )


async def _ask_anyway_button(update: Update, context: BotContext, value: str) -> None:
    """`anyway:<job id>`: for the photo's sender only, or an admin of a chat that sent it."""
    query = update.callback_query
    job_id = int(value) if value.isdigit() and len(value) <= MAX_JOB_ID_DIGITS else 0
    held = await context.storage.get_job(job_id) if job_id else None
    if held is not None and not await _may_act_for(query, held.user_id):
        await query.answer(context.t("button_not_yours"))
        return
    await ask_anyway(update, context, job_id, held.user_id if held else context.speaker_id)


async def show_phrase(query: CallbackQuery, context: BotContext) -> None:
    """Send the phrase a "Show to staff" button names as a picture, to the chat of its
    answer, for the person it was answered to; once the answer is erased, "expired", and
    /forget stops a picture still being drawn or sent."""
    ref = read_callback(query.data or "")
    stored = await context.storage.get_message(ref[0]) if ref else None
    in_chat = stored is not None and query.message is not None
    phrases = split_answer(stored.text).data.phrases if in_chat and stored.role == "model" else ()
    if not ref or ref[1] >= len(phrases) or stored.chat_id != query.message.chat.id:
        await query.answer(context.t("button_expired"))
        return
    if not await _may_act_for(query, stored.user_id):
        await query.answer(context.t("button_not_yours"), show_alert=True)
        return
    drawing = context.services.drawing_cards
    if query.from_user.id in drawing:  # one picture at a time per user; taps meanwhile: none
        await query.answer()
        return
    drawing.add(query.from_user.id)
    try:
        await query.answer()
        work = _send_card(query, context, stored.chat_id, phrases[ref[1]])
        if await run_erasable(context.services, (stored.user_id,), work) is not None:
            log.info("phrase_card_erased", message_id=stored.id)
            return
    finally:
        drawing.discard(query.from_user.id)
    log.info("phrase_card_sent", message_id=stored.id)


async def _send_card(
    query: CallbackQuery, context: BotContext, chat_id: int, phrase: Phrase
) -> None:
    picture = await asyncio.to_thread(render_card, phrase, context.services.fonts)
    reply = ReplyParameters(query.message.message_id, allow_sending_without_reply=True)
    await query.get_bot().send_photo(
        chat_id, picture, caption=phrase.meaning, reply_parameters=reply
    )


async def show_on_photo(query: CallbackQuery, context: BotContext) -> None:
    """Draw the translation on the photo (the album's page) a "Show on the photo" button
    names, in the chat of its answer, for the person it was answered to; once the answer is
    erased, "expired". One drawing at a time per user: a tap meanwhile is told so."""
    ref = read_overlay_callback(query.data or "")
    stored = await context.storage.get_message(ref[0]) if ref else None
    in_chat = (
        stored is not None
        and stored.role == "model"
        and query.message is not None
        and stored.chat_id == query.message.chat.id
    )
    turn = await context.storage.get_photo_turn(stored) if in_chat else None
    if not ref or turn is None or ref[1] >= len(turn.image_file_ids):
        await query.answer(context.t("button_expired"))
        return
    if not await _may_act_for(query, stored.user_id):
        await query.answer(context.t("button_not_yours"), show_alert=True)
        return
    services, user_id = context.services, query.from_user.id
    if user_id in services.drawing_overlays:
        await query.answer(context.t("overlay_in_progress"))
        return
    services.drawing_overlays.add(user_id)
    try:
        await query.answer(context.t("overlay_drawing"))
        work = draw_on_photo(
            query.get_bot(),
            services,
            stored,
            turn,
            ref[1],
            language=context.language,
            reply_to=query.message.message_id,
        )
        if await run_erasable(services, turn.owners, work) is not None:
            log.info("overlay_erased", message_id=stored.id)
    finally:
        services.drawing_overlays.discard(user_id)


async def _edit(query: CallbackQuery, text: str, **kwargs) -> None:
    """Show the button's outcome; a second tap on the same button changes nothing."""
    try:
        await query.edit_message_text(text, **kwargs)
    except BadRequest as exc:
        if "not modified" not in str(exc).lower():
            raise


async def _forget_button(
    query: CallbackQuery, context: BotContext, action: str, owner: str = ""
) -> None:
    """`forget:yes|no:<id>`: erase, or keep, the data of <id>; only they (or an admin of a
    chat that spoke) may press either, so nobody else can answer for them."""
    owner = _button_owner(owner, query.from_user.id)
    if owner is None:
        await query.answer(context.t("button_expired"))
        return
    if not await _may_act_for(query, owner):
        await query.answer(context.t("button_not_yours"), show_alert=True)
        return
    if action == "no":
        await query.answer()
        await _edit(query, context.t("forget_cancelled"))
        return
    count = await context.services.erase_user(owner)
    log.info("user_data_erased", user=user_ref(owner), rows=count)
    await query.answer()
    await _edit(query, context.t("forget_done", count=count))
    context.profile = None


def _button_owner(owner: str, presser_id: int) -> int | None:
    """Whose data a /forget or /lang button names: buttons from before ids were added name
    the presser's; a malformed id, nobody's (None)."""
    if not owner:
        return presser_id
    return int(owner) if _CHAT_ID.fullmatch(owner) else None


async def _may_act_for(query: CallbackQuery, owner: int) -> bool:
    """The presser's own data; or the data of a chat that spoke (an anonymous admin as the
    group, a channel as itself: kept under that chat's id), for an admin of that chat."""
    if owner == query.from_user.id:
        return True
    if owner > 0 or query.message is None:
        return False  # another user's: never
    try:
        member = await query.get_bot().get_chat_member(owner, query.from_user.id)
    except TelegramError:  # a chat the bot cannot see the members of
        return False
    return member.status in (ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.OWNER)
