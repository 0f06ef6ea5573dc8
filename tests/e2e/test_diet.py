"""/diet through the real client: the keyboard toggles in place, the traveller's own words,
/mydata and /forget, bad inputs and forged buttons. The bot talks to a real `travelbot
serve` (tiny Gemma 4) over HTTP, so the tests read the system messages that reached the
model, not the tiny model's noise."""

from __future__ import annotations

from telegram import Bot

from bot.recovery import recover_jobs
from inference import DIET_CODES, MAX_DIET_NOTE_CHARS, MAX_DIET_NOTES, Diet
from inference.prompts import LANGUAGE_RULE, SYSTEM_PROMPT, diet_rule
from tests.conftest import RecordingServer, RunningBot, small_photo
from tests.e2e.botapi_server import TOKEN, ApiCall, SentMessage, TgUser
from tests.e2e.test_answer_language import engine_overrides  # noqa: F401 (through serve)
from tests.e2e.test_conversation import final_answer_after, reply_after
from tests.e2e.test_privacy import files_holding, forget


async def open_keyboard(bot: RunningBot, user: TgUser) -> SentMessage:
    """Send /diet; the bot's message with the keyboard (updated in place by edits)."""
    mark = bot.server.mark()
    bot.server.send_text(user, "/diet")
    reply = await reply_after(bot, user.id, mark)
    sent = reply.result["message_id"]
    return next(m for m in bot.server.messages(user.id) if m.message_id == sent)


async def press(bot: RunningBot, user: TgUser, message: SentMessage, data: str) -> ApiCall:
    """Press a button; the bot's answerCallbackQuery, once the message shows the outcome."""
    mark = bot.server.mark()
    bot.server.press_button(user, message, data)
    answered = await bot.server.wait_for(lambda c: c.method == "answerCallbackQuery", after=mark)
    if "text" not in answered.params:  # a button that worked edits its message
        await bot.server.wait_for(lambda c: c.method == "editMessageText", after=mark)
    return answered


async def say(bot: RunningBot, user: TgUser, text: str, **where) -> str:
    mark = bot.server.mark()
    bot.server.send_text(user, text, **where)
    return (await reply_after(bot, where.get("chat_id", user.id), mark)).params["text"]


async def ask(bot: RunningBot, user: TgUser, *, photo: bool) -> None:
    mark = bot.server.mark()
    if photo:
        bot.server.send_photo(user, small_photo("MENU"))
    else:
        bot.server.send_text(user, "and which is for me?")
    await final_answer_after(bot, user.id, mark)


def labels(message: SentMessage) -> dict[str, str]:
    rows = message.reply_markup["inline_keyboard"]
    return {button["callback_data"]: button["text"] for row in rows for button in row}


async def test_the_keyboard_toggles_in_place_and_every_answer_follows_the_diet(
    bot: RunningBot, recording_server: RecordingServer
) -> None:
    t = bot.services.texts
    ann = TgUser(id=8101, language_code="en")
    keyboard = await open_keyboard(bot, ann)
    assert keyboard.text == t.get("en", "diet_current", items=t.get("en", "diet_nothing"))
    buttons = labels(keyboard)
    assert list(buttons) == [f"diet:{code}" for code in DIET_CODES] + ["diet:clear", "diet:done"]
    assert buttons["diet:tree_nuts"] == "Tree nuts" and buttons["diet:done"] == "Done"

    for code in ("vegan", "peanuts", "milk", "vegan"):  # vegan on, then off again
        assert "text" not in (await press(bot, ann, keyboard, f"diet:{code}")).params
    assert (await bot.storage.get_diet(ann.id)).codes == ("peanuts", "milk")
    assert keyboard.edits == 4 and keyboard in bot.server.visible_messages(ann.id)
    assert keyboard.text == t.get("en", "diet_current", items="allergic to Peanuts, Milk")
    shown = labels(keyboard)
    assert (shown["diet:peanuts"], shown["diet:vegan"]) == ("✓ Peanuts", "Vegan")

    saved = await say(bot, ann, "/diet\nno coriander; no raw egg,\n  NO  Coriander, <b>fish</b>")
    diet = Diet(("peanuts", "milk"), ("no coriander", "no raw egg", "<b>fish</b>"))
    assert await bot.storage.get_diet(ann.id) == diet  # repeats dropped, spaces collapsed
    items = "allergic to Peanuts, Milk; “no coriander”; “no raw egg”; “&lt;b&gt;fish&lt;/b&gt;”"
    assert saved == t.get("en", "diet_saved", items=items)

    english = LANGUAGE_RULE.format(language="English")
    await ask(bot, ann, photo=True)
    assert recording_server.system_messages() == [SYSTEM_PROMPT, english, diet_rule(diet)]
    await ask(bot, ann, photo=False)  # a follow-up about the photo
    assert recording_server.system_messages() == [SYSTEM_PROMPT, english, diet_rule(diet)]

    mydata = await say(bot, ann, "/mydata")
    assert t.get("en", "mydata_diet", items=items) in mydata

    await press(bot, ann, keyboard, "diet:done")
    assert keyboard.text == t.get("en", "diet_saved", items=items)
    assert keyboard.reply_markup is None
    for menu in bot.server.calls_to("setMyCommands"):  # one a language, English the default
        language = menu.params.get("language_code") or "en"
        entry = {"command": "diet", "description": t.get(language, "cmd_diet")}
        assert entry in menu.params["commands"], language


async def test_clear_and_forget_leave_no_diet_behind(
    bot: RunningBot, recording_server: RecordingServer
) -> None:
    t = bot.services.texts
    ann = TgUser(id=8201, language_code="de")
    keyboard = await open_keyboard(bot, ann)
    assert labels(keyboard)["diet:peanuts"] == "Erdnüsse"  # in the user's language
    await press(bot, ann, keyboard, "diet:halal")
    await say(bot, ann, "/diet kein Koriander")
    await press(bot, ann, keyboard, "diet:clear")
    assert await bot.storage.get_diet(ann.id) == Diet()
    assert keyboard.text == t.get("de", "diet_current", items=t.get("de", "diet_nothing"))
    assert not [text for text in labels(keyboard).values() if text.startswith("✓")]

    await press(bot, ann, keyboard, "diet:fish")
    await say(bot, ann, "/diet FORGET-MY-DIET-8201")
    assert (await bot.storage.get_diet(ann.id)).notes == ("FORGET-MY-DIET-8201",)
    mark = bot.server.mark()
    await forget(bot, ann, ann.id)
    await bot.server.wait_for(lambda c: c.method == "editMessageText", after=mark)
    assert await bot.storage.get_user(ann.id) is None
    assert await bot.storage.get_diet(ann.id) == Diet()
    database = bot.services.settings.database_path
    assert files_holding(database.parent, "FORGET-MY-DIET-8201") == []  # -wal and -shm too
    await ask(bot, ann, photo=True)
    assert recording_server.system_messages() == [
        SYSTEM_PROMPT,
        LANGUAGE_RULE.format(language="German"),
    ]


async def test_bad_diet_inputs_get_a_clear_answer_and_change_nothing(bot: RunningBot) -> None:
    t = bot.services.texts
    ann, eve = TgUser(id=8301, language_code="en"), TgUser(id=8302, language_code="en")
    await say(bot, ann, "/diet no nuts")
    kept = Diet(notes=("no nuts",))
    forty = ", ".join(f"no item {i}" for i in range(40))
    too_many = t.get("en", "diet_too_many", limit=MAX_DIET_NOTES)
    too_long = t.get("en", "diet_too_long", limit=MAX_DIET_NOTE_CHARS)
    assert await say(bot, ann, f"/diet {forty}") == too_many
    assert await say(bot, ann, "/diet " + "x, " * 1300) == too_many  # about 4,000 characters
    assert await say(bot, ann, "/diet no " + "x" * MAX_DIET_NOTE_CHARS) == too_long
    ivan = TgUser(id=8303, language_code="ru")
    assert await say(bot, ivan, f"/diet {forty}") == t.get("ru", "diet_too_many", limit=10)
    assert "10 пунктов" in t.get("ru", "diet_too_many", limit=10)
    in_group = {"chat_id": -8300, "chat_type": "supergroup"}
    assert await say(bot, ann, "/diet", **in_group) == t.get("en", "diet_in_private")
    assert await say(bot, ann, "/diet no fish", **in_group) == t.get("en", "diet_in_private")
    assert await bot.storage.get_diet(ann.id) == kept

    # Stale or forged buttons: never another's diet, never on a message that is no keyboard
    keyboard = await open_keyboard(bot, ann)
    expired = t.get("en", "button_expired")
    for data in ("diet:vegan", "diet:clear", "diet:done"):
        assert (await press(bot, eve, keyboard, data)).params["text"] == expired
    for data in ("diet:unicorn", "diet:", "diet:vegan:8301", "diet:" + "x" * 59, "diet:VEGAN"):
        assert (await press(bot, ann, keyboard, data)).params["text"] == expired
    mark = bot.server.mark()
    bot.server.send_text(ann, "/help", **in_group)
    help_reply = await reply_after(bot, -8300, mark)
    [help_message] = [
        m for m in bot.server.messages(-8300) if m.message_id == help_reply.result["message_id"]
    ]
    assert (await press(bot, ann, help_message, "diet:vegan")).params["text"] == expired
    assert await bot.storage.get_diet(ann.id) == kept
    assert await bot.storage.get_user(eve.id) is None
    assert keyboard.edits == 0 and help_message.edits == 0
    assert t.get("en", "error_generic") not in [c.params.get("text") for c in bot.server.calls]


async def test_a_job_recovered_after_a_restart_follows_the_diet(
    bot: RunningBot, recording_server: RecordingServer
) -> None:
    server = bot.server
    ann = TgUser(id=8401, language_code="en")
    kosher = Diet(("kosher",), ("no shellfish",))
    await bot.storage.change_diet(ann.id, lambda _: kosher, default_language="en")
    # accepted before a crash: what the restarted bot finds
    await bot.storage.add_job(
        chat_id=ann.id, message_id=77, user_id=ann.id, chat_type="private",
        question="what here is kosher?", image_file_id=None,
    )  # fmt: skip
    mark = server.mark()
    async with Bot(TOKEN, base_url=server.base_url, base_file_url=server.base_file_url) as client:
        assert await recover_jobs(client, bot.services) == 1
    assert [c for c in server.calls[mark:] if c.method == "sendMessage"]
    assert recording_server.system_messages()[2] == diet_rule(kosher)
    assert await bot.storage.get_unfinished_jobs() == []
