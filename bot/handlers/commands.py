"""/start, /help, /lang, /think, /mydata, /forget and unknown commands (/diet: diet.py,
/currency: currency.py)."""

from __future__ import annotations

import html
import time

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ChatType

from bot.addressing import is_group, names_bot
from bot.context import BotContext
from bot.handlers.currency import own_rates_text
from bot.handlers.diet import describe
from bot.stats import percentile
from bot.storage import StoredMessage
from inference import match_language, native_name, split_answer

LANGUAGE_BUTTONS_PER_ROW = 3
RECENT_MESSAGES_SHOWN = 5
PHRASES_SHOWN = 10
SNIPPET_CHARS = 200


async def start(update: Update, context: BotContext) -> None:
    """Greet the user in their language and say what to send."""
    user = update.effective_user
    context.profile, _ = await context.storage.get_or_create_user(
        context.speaker_id, default_language=context.language
    )
    name = html.escape(user.first_name or "")
    await update.effective_message.reply_html(
        context.t("start", name=name, language=_language_name(context))
    )


async def help_command(update: Update, context: BotContext) -> None:
    """What the bot does and every command."""
    await update.effective_message.reply_html(
        context.t("help", language=_language_name(context), think=_think_word(context))
    )


async def lang(update: Update, context: BotContext) -> None:
    """Show the reply language with a keyboard of the common ones, or set any language
    Gemma handles from `/lang nl` / `/lang Nederlands` / `/lang dutch`."""
    texts = context.services.texts
    if context.args:
        query = " ".join(context.args)
        language = match_language(query)
        if language is None:
            options = ", ".join(f"{code} ({native_name(code)})" for code in texts.languages)
            await update.effective_message.reply_html(
                context.t("lang_unknown", query=html.escape(query[:50]), options=options)
            )
            return
        await set_language(update, context, language)
        return
    buttons = [
        InlineKeyboardButton(native_name(code), callback_data=f"lang:{code}:{context.speaker_id}")
        for code in texts.languages
    ]
    rows = [
        buttons[i : i + LANGUAGE_BUTTONS_PER_ROW]
        for i in range(0, len(buttons), LANGUAGE_BUTTONS_PER_ROW)
    ]
    await update.effective_message.reply_html(
        context.t("lang_current", language=_language_name(context)),
        reply_markup=InlineKeyboardMarkup(rows),
    )


async def set_language(update: Update, context: BotContext, language: str) -> None:
    context.profile = await context.storage.set_language(context.speaker_id, language)
    await update.effective_message.reply_html(
        context.t("lang_set", language=_language_name(context))
    )


async def think(update: Update, context: BotContext) -> None:
    """Toggle thinking mode, or set it with `/think on|off`."""
    argument = (context.args[0].lower() if context.args else "").strip()
    if argument in ("on", "1", "yes"):
        enabled = True
    elif argument in ("off", "0", "no"):
        enabled = False
    elif not argument:
        enabled = not (context.profile and context.profile.think)
    else:
        await update.effective_message.reply_html(context.t("think_usage"))
        return
    user_id = context.speaker_id
    await context.storage.get_or_create_user(user_id, default_language=context.language)
    context.profile = await context.storage.set_think(user_id, enabled)
    await update.effective_message.reply_html(
        context.t("think_now_on" if enabled else "think_now_off")
    )


async def overlay(update: Update, context: BotContext) -> None:
    """`/overlay on|off`: the translation drawn on every photo answered, or only on request
    (the "Show on the photo" button); bare, say which and how to change it."""
    argument = (context.args[0].lower() if context.args else "").strip()
    user_id = context.speaker_id
    if argument not in ("on", "off"):
        on = await context.storage.get_overlay(user_id)
        await update.effective_message.reply_html(
            context.t("overlay_usage", state=context.t("overlay_on" if on else "overlay_off"))
        )
        return
    on = argument == "on"
    await context.storage.set_overlay(user_id, on, default_language=context.language)
    await update.effective_message.reply_html(
        context.t("overlay_now_on" if on else "overlay_now_off")
    )


async def mydata(update: Update, context: BotContext) -> None:
    """Show everything the bot keeps about the user, in a private chat only: in a group it
    would show their words in other chats to everyone there."""
    if update.effective_chat.type != ChatType.PRIVATE:
        await update.effective_message.reply_html(context.t("mydata_in_private"))
        return
    data = await context.storage.get_user_data(context.speaker_id)
    if data.user is None and not data.messages and not data.photos_asked_by_others:
        await update.effective_message.reply_html(
            context.t("mydata_empty", language=_language_name(context))
        )
        return
    lines = [
        context.t(
            "mydata_summary",
            language=_language_name(context),
            think=_think_word(context),
            count=len(data.messages),
            first=_when(data.messages[0].created_at) if data.messages else "–",
            last=_when(data.messages[-1].created_at) if data.messages else "–",
        )
    ]
    if data.diet:
        lines.append("\n" + context.t("mydata_diet", items=describe(context, data.diet)))
    if data.currency.code or data.currency.own_rates:
        rates = own_rates_text(context, data.currency.own_rates)
        code = data.currency.code or "–"
        lines.append("\n" + context.t("mydata_currency", code=code, rates=rates))
    if data.overlay:
        lines.append("\n" + context.t("mydata_overlay"))
    if data.messages:
        lines.append("\n" + context.t("mydata_recent"))
        for message in data.messages[-RECENT_MESSAGES_SHOWN:]:
            who = context.t("role_user" if message.role == "user" else "role_model")
            text = split_answer(message.text).prose if message.role == "model" else message.text
            if len(message.image_file_ids) > 1:
                text = f"{context.t('album_reference', pages=len(message.image_file_ids))} {text}"
            elif message.image_file_id:
                text = f"{context.t('photo_reference')} {text}"
            lines.append(f"<b>{who}:</b> {html.escape(_snippet(text))}")
    if data.held:
        lines.append("\n" + context.t("mydata_held", count=len(data.held)))
        for job in data.held[-RECENT_MESSAGES_SHOWN:]:
            text = f"{context.t('photo_reference')} {job.question or ''}".strip()
            lines.append(html.escape(_snippet(text)))
    if data.photos_asked_by_others:
        count = data.photos_asked_by_others
        lines.append("\n" + context.t("mydata_photos_asked_by_others", count=count))
    phrases = kept_phrases(data.messages)
    if phrases:
        shown = " · ".join(html.escape(p) for p in phrases[-PHRASES_SHOWN:])
        lines.append("\n" + context.t("mydata_phrases", phrases=shown))
    await update.effective_message.reply_html("\n".join(lines))


def kept_phrases(messages: list[StoredMessage]) -> list[str]:
    """The phrases kept with the stored answers (for "Show to staff"), oldest first."""
    answers = (split_answer(m.text) for m in messages if m.role == "model")
    return [phrase.text for answer in answers for phrase in answer.data.phrases]


async def forget(update: Update, context: BotContext) -> None:
    """Ask for confirmation before erasing the speaker's data; the buttons name whose (in a
    group only they, or an admin for a chat that spoke, may press either)."""
    yes, no = f"forget:yes:{context.speaker_id}", f"forget:no:{context.speaker_id}"
    keyboard = InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(context.t("forget_yes"), callback_data=yes),
                InlineKeyboardButton(context.t("forget_no"), callback_data=no),
            ]
        ]
    )
    await update.effective_message.reply_html(context.t("forget_confirm"), reply_markup=keyboard)


async def stats(update: Update, context: BotContext) -> None:
    """Admins only: queue, latency percentiles, users and jobs. Others see no such command."""
    if update.effective_user.id not in context.settings.admin_user_ids or (
        context.speaker_id != update.effective_user.id
    ):
        await unknown_command(update, context)
        return
    figures = context.services.stats
    worker = context.worker
    jobs = await context.storage.count_jobs_by_status()

    def ms(values, q: float) -> str:
        value = percentile(values, q)
        return "–" if value is None else f"{value * 1000:.0f} ms"

    lines = [
        "<b>travelbot</b>",
        f"uptime: {(time.monotonic() - figures.started_at) / 3600:.1f} h",
        f"queue: {worker.queue_depth} waiting, {worker.num_running} running",
        f"answered: {figures.num_answered}, failed: {figures.num_failed}",
        f"latency p50 / p95: {ms(figures.latencies_s, 0.5)} / {ms(figures.latencies_s, 0.95)}",
        f"first text p50 / p95: {ms(figures.first_token_s, 0.5)} / "
        f"{ms(figures.first_token_s, 0.95)}",
        f"users stored: {await context.storage.count_users()}",
        "jobs: " + (", ".join(f"{k} {v}" for k, v in sorted(jobs.items())) or "none"),
    ]
    await update.effective_message.reply_html("\n".join(lines))


async def unknown_command(update: Update, context: BotContext) -> None:
    """Any command the bot does not have; in a group only one named for it (`/x@thisbot`):
    there a bare `/x` or `/x@other_bot` is another bot's."""
    message = update.effective_message
    if is_group(message) and not names_bot(message, context.bot.username or ""):
        return
    await message.reply_html(context.t("unknown_command"))


def _language_name(context: BotContext) -> str:
    return native_name(context.language)


def _think_word(context: BotContext) -> str:
    return context.t("think_on" if context.profile and context.profile.think else "think_off")


def _snippet(text: str) -> str:
    return text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS] + "…"


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")
