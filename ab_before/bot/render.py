"""Turn the model's light Markdown into Telegram HTML messages of at most 4096 characters."""

from __future__ import annotations

import html
import re

MAX_MESSAGE_CHARS = 4096
MAX_THOUGHT_CHARS = 1500

_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_CODE = re.compile(r"`([^`\n]+)`")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*)$")
_BULLET = re.compile(r"^(\s*)[*-]\s+")


def render_line(line: str) -> str:
    """One line of Markdown as Telegram HTML: escaped, with bold, code, headings, bullets."""
    heading = _HEADING.match(line)
    if heading:
        return f"<b>{_inline(heading.group(1).strip('# '))}</b>"
    bullet = _BULLET.match(line)
    if bullet:
        return f"{bullet.group(1)}• {_inline(line[bullet.end() :])}"
    return _inline(line)


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    text = _CODE.sub(r"<code>\1</code>", text)
    return _BOLD.sub(r"<b>\1</b>", text)


def render_thought(thought: str) -> str:
    if len(thought) > MAX_THOUGHT_CHARS:
        thought = thought[:MAX_THOUGHT_CHARS].rstrip() + " …"
    return f"<blockquote expandable>💭 {html.escape(thought, quote=False)}</blockquote>"


def render_messages(answer: str, *, thought: str = "", limit: int = MAX_MESSAGE_CHARS) -> list[str]:
    """The answer (and a collapsed thought) as one or more HTML messages within `limit`."""
    blocks = [render_thought(thought)] if thought.strip() else []
    for line in answer.strip().splitlines():
        blocks.extend(_fit_line(line, limit))
    messages: list[str] = []
    current = ""
    for block in blocks:
        candidate = f"{current}\n{block}" if current else block
        if len(candidate) <= limit:
            current = candidate
        else:
            messages.append(current)
            current = block
    if current.strip():
        messages.append(current)
    return messages


def _fit_line(line: str, limit: int) -> list[str]:
    """Render a line, cutting the source at spaces when the result would not fit."""
    rendered = render_line(line)
    if len(rendered) <= limit:
        return [rendered]
    pieces: list[str] = []
    rest = line
    while rest:
        size = min(len(rest), limit // 2)  # escaping can at most ~double a piece
        while len(render_line(rest[:size])) > limit:
            size //= 2
        cut = rest.rfind(" ", size // 2, size) if size < len(rest) else size
        cut = cut if cut > 0 else size
        pieces.append(render_line(rest[:cut]))
        rest = rest[cut:].lstrip()
    return pieces


def preview(answer: str, *, limit: int = MAX_MESSAGE_CHARS) -> str:
    """What to show while the answer streams: the last message it will end up in."""
    messages = render_messages(answer, limit=limit)
    return messages[-1] if messages else ""
