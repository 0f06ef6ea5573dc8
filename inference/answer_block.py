"""The machine-readable part of an answer: one fenced block of strict JSON after the prose.

The prompt (inference/prompts.py, BLOCK_RULE) asks the model to end every answer with

    ```json
    {"phrases": [{"text": "...", "romanization": "..." or null, "meaning": "..."}],
     "prices": [{"item": "...", "amount": 980, "currency": "JPY"}]}
    ```

Gemma has no JSON mode of its own (Google's Gemma docs: the framework reads the structure
the prompt asked for out of the text), so the block is prompted text, read defensively here.
It lives in inference/ beside the prompt that defines it, with no telegram in it: the bot,
`travelbot ask` and any other client read the same contract the same way.

One state machine (`BlockSplitter`) decides what is prose, both while the answer streams
and over the finished text, so what the chat showed while streaming and what is stored
never disagree. Every ```json fence at the start of a line opens a block, hidden from the
prose up to its closing ``` (or to the end, when max_new_tokens cut it); the data is read
from the last block that parses. The schema is open: keys it does not know are ignored, so
later features (prices, regions) add keys without breaking older answers.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

T = TypeVar("T")

FENCE_OPEN = "```json"
FENCE_CLOSE = "```"
MAX_BLOCK_CHARS = 8_000  # a longer block is not read (nor kept in memory while streaming)
MAX_PHRASES = 2
MAX_PHRASE_CHARS = 160
MAX_NOTE_CHARS = 240  # romanization and meaning
MAX_PRICES = 30
MAX_ITEM_CHARS = 80
MAX_AMOUNT = 1e12  # larger is no price
_CURRENCY_CODE = re.compile(r"[A-Z]{3}")  # ISO 4217
_INDENT = 3  # CommonMark: a fence may be indented up to three spaces
# Text that must never reach the chat or a later prompt from inside the block: Gemma 4's
# special tokens as a server that does not skip them would send them (`<|"|>`, `<turn|>`).
_SPECIAL_TOKEN = re.compile(r"<\|[^<>|]{0,20}\|?>|<[^<>|]{0,20}\|>|</?(?:bos|eos|pad|unk|mask)>")


@dataclass(frozen=True)
class Phrase:
    """A phrase for the traveller to say or show, in the local language."""

    text: str
    romanization: str | None  # how to read it in Latin letters; None for a Latin script
    meaning: str  # in the traveller's language


@dataclass(frozen=True)
class Price:
    """A price read from the photo, as written there: the bot converts it, never the model."""

    item: str  # what it is for, in the traveller's language ("" where the model said none)
    amount: float
    currency: str  # ISO 4217 code, as the model read the symbol ("¥" in Japan: JPY)


@dataclass(frozen=True)
class AnswerData:
    phrases: tuple[Phrase, ...] = ()
    prices: tuple[Price, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.phrases or self.prices)

    def counts(self) -> dict[str, int]:
        """How many of each kind, for logs (the values are the user's, never logged)."""
        return {"num_phrases": len(self.phrases), "num_prices": len(self.prices)}

    def to_block(self) -> str:
        """The canonical block: what is stored and what the model sees in its history."""
        phrases = [
            {"text": p.text, "romanization": p.romanization, "meaning": p.meaning}
            for p in self.phrases
        ]
        prices = [
            {"item": p.item, "amount": _number(p.amount), "currency": p.currency}
            for p in self.prices
        ]
        kinds = {"phrases": phrases, "prices": prices}
        body = json.dumps({k: v for k, v in kinds.items() if v}, ensure_ascii=False)
        return f"{FENCE_OPEN}\n{body}\n{FENCE_CLOSE}"


BlockStatus = Literal["ok", "missing", "broken"]


@dataclass(frozen=True)
class SplitAnswer:
    prose: str  # the answer without any block, stripped
    data: AnswerData
    status: BlockStatus  # "missing": no block; "broken": a block nothing could be read from

    def stored_text(self) -> str:
        """The prose with the canonical block after it (only the prose without data)."""
        if not self.data:
            return self.prose
        return f"{self.prose}\n\n{self.data.to_block()}" if self.prose else self.data.to_block()


def split_answer(text: str) -> SplitAnswer:
    """The prose and the data of a finished answer. Never raises: whatever the block is,
    the prose comes back, and the data is empty when it cannot be read."""
    splitter = BlockSplitter()
    prose = splitter.feed(text) + splitter.flush()
    if not splitter.blocks:
        return SplitAnswer(prose.strip(), AnswerData(), "missing")
    for body in reversed(splitter.blocks):
        data = parse_block(body)
        if data is not None:
            return SplitAnswer(prose.strip(), data, "ok")
    return SplitAnswer(prose.strip(), AnswerData(), "broken")


def parse_block(body: str | None) -> AnswerData | None:
    """The data of one block's body; None when it is not a JSON object (too long, broken,
    another type). Values of the wrong type or size are left out, not the whole block."""
    value = load_block(body)
    if not isinstance(value, dict):
        return None
    return AnswerData(phrases=_phrases(value.get("phrases")), prices=_prices(value.get("prices")))


def load_block(body: str | None, max_chars: int = MAX_BLOCK_CHARS) -> Any:
    """A block's strict JSON value; None when too long or not strict JSON."""
    if body is None or len(body) > max_chars:
        return None
    try:
        return json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not strict JSON")


def unique_items(
    value: Any, read: Callable[[Any], T | None], limit: int, look_at: int | None = None
) -> tuple[T, ...]:
    """The first `limit` distinct items that `read` makes of a JSON list (None: skipped),
    among its first `look_at`; () for anything but a list."""
    if not isinstance(value, list):
        return ()
    items: list[T] = []
    for item in value[:look_at]:
        made = read(item)
        if made is not None and made not in items:
            items.append(made)
            if len(items) == limit:
                break
    return tuple(items)


def _phrases(value: Any) -> tuple[Phrase, ...]:
    return unique_items(value, _phrase, MAX_PHRASES)


def _phrase(item: Any) -> Phrase | None:
    if not isinstance(item, dict):
        return None
    text = clean_text(item.get("text"), MAX_PHRASE_CHARS)
    meaning = clean_text(item.get("meaning"), MAX_NOTE_CHARS)
    if not text or meaning is None:
        return None
    romanization = clean_text(item.get("romanization"), MAX_NOTE_CHARS) or None
    if romanization is not None and romanization.casefold() == text.casefold():
        romanization = None  # a Latin script: nothing to add
    return Phrase(text, romanization, meaning)


def _prices(value: Any) -> tuple[Price, ...]:
    if not isinstance(value, list):
        return ()
    prices = [price for price in map(_price, value[: MAX_PRICES * 4]) if price is not None]
    return tuple(prices[:MAX_PRICES])


def _price(item: Any) -> Price | None:
    if not isinstance(item, dict):
        return None
    amount, currency = item.get("amount"), item.get("currency")
    if isinstance(amount, str):  # "1,200" or "9.50": a number written as text
        amount = _parse_amount(amount)
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        return None
    if not (math.isfinite(amount) and 0 < amount < MAX_AMOUNT):
        return None
    if not isinstance(currency, str) or not _CURRENCY_CODE.fullmatch(currency.strip().upper()):
        return None
    label = clean_text(item.get("item"), MAX_ITEM_CHARS) or ""
    return Price(label, float(amount), currency.strip().upper())


def _parse_amount(text: str) -> float | None:
    digits = text.strip().replace(" ", "").replace(",", "")
    try:
        return float(digits) if re.fullmatch(r"[0-9]+(\.[0-9]+)?", digits) else None
    except ValueError:
        return None


def _number(amount: float) -> int | float:
    return int(amount) if amount.is_integer() else amount


def clean_text(value: Any, limit: int) -> str | None:
    """A one-line string without special tokens or control characters; None when `value`
    is no string, or too long to be a phrase (cut, it would mean something else)."""
    if not isinstance(value, str):
        return None
    value = _SPECIAL_TOKEN.sub("", value)
    value = "".join(c if unicodedata.category(c)[0] != "C" or c == "\u200d" else " " for c in value)
    value = " ".join(value.split())
    return value if len(value) <= limit else None


class BlockSplitter:
    """Prose out of a streamed answer, blocks held apart. `feed` returns the prose that is
    certain; the start of a line that may still become a fence is held back until it is
    known, so a block never flashes in the chat. `flush` ends the stream."""

    def __init__(self, max_block_chars: int = MAX_BLOCK_CHARS) -> None:
        self._max_block_chars = max_block_chars
        self._line = ""  # the current line, held back (prose that may become a fence, or block)
        self._at_line_start = True
        self._block: list[str] | None = None  # lines of the open block
        self._block_chars = 0
        self._skip_fence_line = False  # the rest of the "```json" line is no JSON
        self.blocks: list[str | None] = []  # bodies, in order (None: too long to keep)

    def feed(self, text: str) -> str:
        return "".join(self._take(piece) for piece in re.split(r"(?<=\n)", text) if piece)

    def flush(self) -> str:
        """At the end: an unclosed block (cut by max_new_tokens) is read as it is, and a
        held-back line that never became a fence is prose after all."""
        line, self._line = self._line, ""
        if self._block is not None:
            if not self._skip_fence_line and line.strip() != FENCE_CLOSE:
                self._add_to_block(line)
            self._close_block()
            return ""
        return line

    def _take(self, piece: str) -> str:
        """`piece`: text within one line, ending with its line break if it has one."""
        if self._block is not None:
            self._take_in_block(piece)
            return ""
        if not self._at_line_start:
            self._at_line_start = piece.endswith("\n")
            return piece
        line = self._line + piece
        self._line = ""
        head = line.lstrip(" ")
        if len(line) - len(head) <= _INDENT:
            if head[: len(FENCE_OPEN)].lower() == FENCE_OPEN:
                self._block, self._block_chars = [], 0
                self._skip_fence_line = not line.endswith("\n")
                return ""
            if not line.endswith("\n") and FENCE_OPEN.startswith(head.lower()):
                self._line = line  # may still become a fence
                return ""
        self._at_line_start = line.endswith("\n")
        return line

    def _take_in_block(self, piece: str) -> None:
        if self._skip_fence_line:
            self._skip_fence_line = not piece.endswith("\n")
            return
        line = self._line + piece
        if not line.endswith("\n"):
            self._line = line[: self._max_block_chars + 1]  # a longer one is dropped anyway
            return
        self._line = ""
        if line.strip() == FENCE_CLOSE:
            self._close_block()
            self._at_line_start = True
        else:
            self._add_to_block(line)

    def _add_to_block(self, line: str) -> None:
        self._block_chars += len(line)
        if self._block is not None and self._block_chars <= self._max_block_chars:
            self._block.append(line)

    def _close_block(self) -> None:
        body = "".join(self._block or ())
        self.blocks.append(body if self._block_chars <= self._max_block_chars else None)
        self._block, self._block_chars, self._skip_fence_line = None, 0, False
