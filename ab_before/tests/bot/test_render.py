from bot.render import MAX_MESSAGE_CHARS, preview, render_messages
from tests.e2e.botapi_server import parse_html


def test_markdown_becomes_safe_html() -> None:
    [message] = render_messages("## Menu\n- **Schnitzel** <pork> & fries\n* `E120`")
    assert message == (
        "<b>Menu</b>\n• <b>Schnitzel</b> &lt;pork&gt; &amp; fries\n• <code>E120</code>"
    )


def test_long_answers_split_within_the_limit_and_stay_valid_html() -> None:
    answer = "\n".join(f"- **Dish {i}** with <sauce> & " + "word " * 60 for i in range(80))
    messages = render_messages(answer, thought="because " * 400)
    assert len(messages) > 2
    for message in messages:
        assert len(message) <= MAX_MESSAGE_CHARS
        parse_html(message)  # raises on broken tags or entities, as Telegram would
    assert messages[0].startswith("<blockquote expandable>💭 because")
    assert "Dish 79" in messages[-1]


def test_a_single_huge_line_is_cut_at_spaces() -> None:
    messages = render_messages("<&> " * 3000)
    assert all(len(m) <= MAX_MESSAGE_CHARS for m in messages)
    assert "".join(messages).count("&lt;&amp;&gt;") == 3000


def test_preview_is_the_last_message_in_progress() -> None:
    assert preview("") == ""
    assert preview("**Ausgang** means exit") == "<b>Ausgang</b> means exit"
