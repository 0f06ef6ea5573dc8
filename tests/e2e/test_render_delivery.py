"""Rendered answers as Telegram takes them: the real PTB client sends a streamed model-style
answer (drafts, then the final messages) to the local Bot API server, which parses the HTML
and counts the length as Telegram does."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from telegram import Bot

from bot.render import render_messages
from bot.streaming import AnswerStream
from tests.e2e.botapi_server import TOKEN, BotApiServer, TgUser
from tests.model_markdown import MENU, THOUGHT

ANN = TgUser(id=4242, first_name="Ann")
RAW_MARKDOWN = re.compile(r"\*\*|~~|\]\(|```|^\s*>|^#", re.MULTILINE)


@pytest.fixture
async def server() -> AsyncIterator[BotApiServer]:
    async with BotApiServer() as srv:
        yield srv


async def test_a_streamed_menu_answer_reaches_the_chat_as_telegram_html(
    server: BotApiServer,
) -> None:
    async with Bot(TOKEN, base_url=server.base_url) as bot:
        stream = AnswerStream(bot, ANN.id, reply_to=1, is_private=True, interval_s=0.0)
        await stream.start("Reading your photo…")
        mark = server.mark()
        for token in re.findall(r"\S+\s*", MENU[:2500]):  # previews of a partial answer
            await stream.append(token)
        await stream.finish(render_messages(MENU, thought=THOUGHT))
    drafts = [c for c in server.calls[mark:] if c.method == "sendMessageDraft"]
    assert len(drafts) > 300 and all(c.result is True for c in drafts)  # none refused
    sent = [c for c in server.calls[mark:] if c.method == "sendMessage"]
    assert len(sent) == 3 and all(isinstance(c.result, dict) and "text" in c.result for c in sent)
    for call in sent:
        assert not RAW_MARKDOWN.search(call.result["text"]), call.result["text"]
    kinds = {e["type"] for c in sent for e in c.result.get("entities", [])}
    assert kinds >= {"expandable_blockquote", "blockquote", "bold", "italic", "strikethrough"}
    assert kinds >= {"text_link", "code", "pre"}
    first = sent[0].result["text"]
    thought = first[: first.index("…") + 1]  # 💭, the thought cut at its limit and …
    assert first.startswith("💭 The user sent a photo")
    assert sent[0].result["entities"][0] == {
        "type": "expandable_blockquote",
        "offset": 0,
        "length": len(thought.encode("utf-16-le")) // 2,  # Telegram's offsets count UTF-16
    }
