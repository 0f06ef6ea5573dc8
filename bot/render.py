"""Turn the model's Markdown into Telegram HTML messages that Telegram accepts.

telegramify-markdown parses the Markdown (CommonMark and GFM, by pulldown-cmark) into plain
text and entities. The split works on that plain text because Telegram's limit counts the
UTF-16 code units of the text after entity parsing, not the HTML; each message's entities are
then written as HTML again, so a message closes every tag it opens and none is cut in half.
"""

from __future__ import annotations

import html
import itertools
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from urllib.parse import urlsplit

from telegramify_markdown import MessageEntity, RenderConfig, convert

MAX_MESSAGE_LENGTH = 4096  # UTF-16 code units of the text after entity parsing
MAX_THOUGHT_CHARS = 1500
THOUGHT_MARK = "💭 "

_CONFIG = RenderConfig.isolated()  # not the library's global one, which any caller may change
_CONFIG.markdown_symbol.unordered_list_item = "•"
for _level in range(1, 7):  # headings are bold (H1, H2 also underlined), without emoji
    setattr(_CONFIG.markdown_symbol, f"heading_level_{_level}", "")

# CommonMark reads `<pork>` or `<Enter>` as an inline HTML tag and drops it, but the model's
# `<` is always text: it is swapped for a private-use character of the same UTF-16 length
# before parsing and put back after, so offsets stay right.
_LT_STANDIN = "\ue000"

_TAGS = {
    "bold": "b",
    "italic": "i",
    "underline": "u",
    "strikethrough": "s",
    "spoiler": "tg-spoiler",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "expandable_blockquote": "blockquote expandable",
}
_QUOTES = {"blockquote", "expandable_blockquote"}


@dataclass(frozen=True)
class _Span:
    """An entity over text[start:end], in Python string indices."""

    start: int
    end: int
    entity: MessageEntity


def render_messages(
    answer: str, *, thought: str = "", limit: int = MAX_MESSAGE_LENGTH
) -> list[str]:
    """The answer, after its thought shown collapsed, as HTML messages of at most `limit`
    UTF-16 code units of text each."""
    text, spans = _parse(answer.strip())
    if thought.strip():
        if len(thought) > MAX_THOUGHT_CHARS:
            thought = thought[:MAX_THOUGHT_CHARS].rstrip() + " …"
        thought_text, thought_spans = _parse(THOUGHT_MARK + thought.strip())
        # the whole thought is one collapsed quote (the quotes in it are then left out)
        quote = MessageEntity("expandable_blockquote", 0, 0)  # offsets unused: spans hold them
        thought_spans = [_Span(0, len(thought_text), quote), *thought_spans]
        shift = len(thought_text) + 1
        spans = thought_spans + [_Span(s.start + shift, s.end + shift, s.entity) for s in spans]
        text = f"{thought_text}\n{text}" if text else thought_text
    return [_to_html(chunk, chunk_spans) for chunk, chunk_spans in _split(text, spans, limit)]


def preview(answer: str, *, limit: int = MAX_MESSAGE_LENGTH) -> str:
    """What to show while the answer streams: the last message it will end up in."""
    messages = render_messages(answer, limit=limit)
    return messages[-1] if messages else ""


def _parse(markdown: str) -> tuple[str, list[_Span]]:
    text, entities = convert(markdown.replace("<", _LT_STANDIN), latex_escape=False, config=_CONFIG)
    text = text.replace(_LT_STANDIN, "<")
    offsets = _utf16_offsets(text)
    text = text.rstrip()  # list items end in a line break
    spans = [
        _Span(
            bisect_left(offsets, e.offset),
            min(bisect_left(offsets, e.offset + e.length), len(text)),
            e,
        )
        for e in entities
    ]
    # outer entities first where two start together, so that they nest as the parser made them
    return text, sorted((s for s in spans if s.start < s.end), key=lambda s: (s.start, -s.end))


def _utf16_offsets(text: str) -> list[int]:
    """The UTF-16 offset of each character of `text`, and of its end."""
    return list(itertools.accumulate((2 if ord(c) > 0xFFFF else 1 for c in text), initial=0))


def _split(text: str, spans: list[_Span], limit: int) -> list[tuple[str, list[_Span]]]:
    """Cut the text into pieces of at most `limit` UTF-16 code units, after a line break or
    else a space in the second half of a piece where there is one; entities are clipped to
    each piece. Pieces of only whitespace are left out: Telegram refuses empty messages."""
    units = _utf16_offsets(text)
    pieces = []
    start = 0
    while start < len(text):
        # the furthest end that fits (one character at least, or a 2-unit emoji and a limit
        # of 1 would never move on)
        end = max(bisect_right(units, units[start] + limit) - 1, start + 1)
        if end < len(text):
            end = _break_before(text, start, end)
        if text[start:end].strip():
            clipped = [
                _Span(max(s.start, start) - start, min(s.end, end) - start, s.entity)
                for s in spans
                if s.start < end and s.end > start
            ]
            pieces.append((text[start:end], clipped))
        start = end
    return pieces


def _break_before(text: str, start: int, end: int) -> int:
    """Where a piece from `start` that may reach `end` ends: after its last line break, else
    its last space, if in its second half (not to leave a short piece); else at `end`."""
    for separator in ("\n", " "):
        at = text.rfind(separator, start + (end - start) // 2, end)
        if at >= 0:
            return at + 1
    return end


def _to_html(text: str, spans: list[_Span]) -> str:
    """Text with its entities as Telegram HTML. Spans are sorted outer first; one that would
    reach past the span it starts in is cut there, so tags always nest."""
    out: list[str] = []
    open_spans: list[tuple[int, str, str]] = []  # (end, closing tag, kind)
    position = 0

    def write_until(index: int) -> None:
        nonlocal position
        out.append(html.escape(text[position:index], quote=False))
        position = index

    for span in [*spans, None]:
        start = len(text) if span is None else span.start
        while open_spans and open_spans[-1][0] <= start:
            end, closing, _ = open_spans.pop()
            write_until(end)
            out.append(closing)
        if span is None:
            break
        end = min(span.end, open_spans[-1][0]) if open_spans else span.end
        kind = "quote" if span.entity.type in _QUOTES else span.entity.type
        tags = _tags(span.entity)
        # bold in bold adds nothing, and Telegram cannot nest quotes
        if tags is None or end <= start or any(kind == k for *_, k in open_spans):
            continue
        write_until(start)
        out.append(tags[0])
        open_spans.append((end, tags[1], kind))
    write_until(len(text))
    return "".join(out)


def _tags(entity: MessageEntity) -> tuple[str, str] | None:
    """The opening and closing HTML tags of an entity; None for one not shown as such."""
    if entity.type == "text_link":
        # only web links: a relative or javascript: link cannot be opened from a chat
        if urlsplit(entity.url or "").scheme not in ("http", "https"):
            return None
        return f'<a href="{html.escape(entity.url or "")}">', "</a>"
    if entity.type == "pre" and entity.language:
        language = html.escape(entity.language)
        return f'<pre><code class="language-{language}">', "</code></pre>"
    name = _TAGS.get(entity.type)
    if name is None:  # custom emoji: bots may not send them
        return None
    return f"<{name}>", f"</{name.split()[0]}>"
