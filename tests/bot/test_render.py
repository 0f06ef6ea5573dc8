import re

from bot.render import MAX_MESSAGE_LENGTH, preview, render_messages
from tests.e2e.botapi_server import parse_html
from tests.model_markdown import MENU


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def plain(message: str) -> str:
    """What Telegram shows: the text after HTML parsing (raises on HTML Telegram refuses)."""
    return parse_html(message)[0]


RAW_MARKDOWN = re.compile(r"\*\*|~~|\]\(|^\s*>|^#|```|^\* ", re.MULTILINE)


def test_markdown_becomes_safe_html() -> None:
    [message] = render_messages("## Menu\n- **Schnitzel** <pork> & fries\n* `E120`")
    assert message == (
        "<u><b>Menu</b></u>\n• <b>Schnitzel</b> &lt;pork&gt; &amp; fries\n• <code>E120</code>"
    )


def test_every_construct_of_a_menu_answer_becomes_telegram_html() -> None:
    messages = render_messages(MENU)
    assert len(messages) > 1
    text = "\n".join(messages)
    assert "<i>important</i>" in text and "<i>Egg noodles</i>" in text
    assert '<a href="https://www.bahn.de/fahrplan?a=1&amp;b=2">DB timetable</a>' in text
    assert "<s>€14.50</s>" in text and "<code>ohne Speck</code>" in text
    assert "<b>59. Käsespätzle 59 🧀 (チーズ麺 59)</b>" in text  # no bold in bold
    assert "• <i>Egg noodles</i> with melted cheese &amp; fried onions; &lt;vegetarian&gt;" in text
    assert "<blockquote>Service is included.\nTip 5–10 % if you liked it.</blockquote>" in text
    assert "<pre>Schnitzel   19,90 €\nSpätzle     12,90 €</pre>" in text
    for message in messages:  # nothing reaches the user as Markdown characters
        assert not RAW_MARKDOWN.search(plain(message)), plain(message)


def test_splits_count_utf16_units_of_the_parsed_text_and_keep_tags_whole() -> None:
    messages = render_messages(MENU)
    for message in messages:
        assert 0 < utf16_len(plain(message)) <= MAX_MESSAGE_LENGTH
    whole = plain(render_messages(MENU, limit=10**6)[0])
    assert "".join(plain(m) for m in messages).split() == whole.split()  # nothing lost
    # emoji are two UTF-16 units each: 3,000 characters, 4,500 units, so two messages
    emoji = render_messages("**Tipp:** " + "😋 " * 1500)
    assert len(emoji) == 2
    assert all(utf16_len(plain(m)) <= MAX_MESSAGE_LENGTH for m in emoji)
    assert emoji[0].startswith("<b>Tipp:</b> 😋")
    # a code block longer than a message is cut between lines, each part a whole <pre>
    code = render_messages("```\n" + "Schnitzel 19,90 €\n" * 400 + "```")
    assert len(code) == 2
    assert all(m.startswith("<pre>") and m.endswith("</pre>") for m in code)


def test_a_long_escaped_thought_is_collapsed_and_split_without_empty_messages() -> None:
    thought = "Is <E120> & <E904> vegan? " * 200  # each < > & is one character after parsing
    messages = render_messages("**Nein.** E120 ist Karmin.", thought=thought)
    assert all(plain(m).strip() for m in messages)
    assert all(utf16_len(plain(m)) <= MAX_MESSAGE_LENGTH for m in messages)
    assert messages[0].startswith("<blockquote expandable>💭 Is &lt;E120&gt; &amp; &lt;E904&gt;")
    assert messages[0].endswith("…</blockquote>\n<b>Nein.</b> E120 ist Karmin.")
    # a thought longer than one message stays collapsed in each message it reaches
    parts = render_messages("", thought="*Hmm,* " + "Gedanke 💭 " * 700, limit=1000)
    assert len(parts) > 1
    for part in parts:
        assert part.startswith("<blockquote expandable>") and part.endswith("</blockquote>")
        assert [e["type"] for e in parse_html(part)[1]].count("expandable_blockquote") == 1


def test_a_single_huge_line_is_cut_at_spaces() -> None:
    messages = render_messages("<&> " * 3000)
    assert all(utf16_len(plain(m)) <= MAX_MESSAGE_LENGTH for m in messages)
    assert "".join(messages).count("&lt;&amp;&gt;") == 3000
    assert all(plain(m).rstrip().endswith("<&>") for m in messages)


def test_links_the_chat_cannot_open_and_nested_quotes_stay_text() -> None:
    [message] = render_messages("[tap](javascript:alert(1)) [bahn](bahn.de)\n\n> a\n>> b")
    assert message == "tap bahn\n\n<blockquote>a\nb</blockquote>"


def test_preview_is_valid_html_for_every_prefix_of_a_streamed_answer() -> None:
    assert preview("") == ""
    assert preview("**Ausgang** means exit") == "<b>Ausgang</b> means exit"
    answer = MENU[:1500]
    for end in range(1, len(answer) + 1):
        shown = preview(answer[:end])
        if shown:
            plain(shown)  # raises on HTML Telegram would refuse
    assert "<i>important</i>" in preview(answer)
