"""The bench's prompts as long as Gemma 4's tokenizer would make them, whatever tokenizer
is loaded.

The full-size random model and the tiny checkpoint read with the tiny tokenizer, which
learned the system prompt and so reads it in fewer tokens than Gemma's would; a change of
that tokenizer would silently change the benchmark. So the bench states each prompt's
length for the real tokenizer and makes its prompts that long with the loaded one:

- the estimate: every special token one token, every run of text between them one token
  per CHARS_PER_TOKEN characters (rounded up); a photo's soft tokens are exact (the image
  processor's count). Made for the shared prefix (the system prompt, which the prefix
  cache keeps) and for the rest of the prompt apart, so the cached and the computed part
  each have their real length.
- the fit: the system prompt and the task's text are cut at a word (a tokenizer reading
  them in more tokens) or padded with one-token words (one reading them in fewer) until
  the loaded tokenizer makes each part as long as the estimate. The prompts are still the
  travel assistant's chat, rendered by the checkpoint's chat template.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace

from inference.engine import GemmaEngine
from inference.prompts import Prompt, render_chat, travel_chat
from inference.types import ChatMessage, Request

# Gemma's SentencePiece tokenizer (262k pieces) on English prose: about 4 characters a
# token, most words one piece; the system prompt and the task are English
CHARS_PER_TOKEN = 4
# one-token words to pad with, the first that the loaded tokenizer reads one a token
PADDING_WORDS = (" the", " and", " a", " x", " .")


def estimated_tokens(text: str, special_tokens: frozenset[str]) -> int:
    """Tokens Gemma 4's tokenizer would make of `text` (see the module's docstring)."""
    pattern = "|".join(re.escape(token) for token in sorted(special_tokens, key=len, reverse=True))
    pieces = re.split(f"({pattern})", text)
    return sum(
        1 if piece in special_tokens else math.ceil(len(piece) / CHARS_PER_TOKEN)
        for piece in pieces
        if piece
    )


@dataclass(frozen=True)
class PromptShape:
    """One answer language's fitted texts: the system prompt and the photo's task."""

    system: str
    task: str
    prefix_tokens: int  # the shared prefix's, estimated and fitted
    text_tokens: int  # the whole prompt's text tokens (each photo's placeholder one)

    def request(self, plain: Request) -> Request:
        """`plain` (a photo request, a follow-up or not) as the travel assistant's chat
        with the fitted system prompt and task."""
        messages = travel_chat(plain)
        first, last = replace(messages[0], text=self.system), messages[-1]
        chat = (first, *messages[1:-1], replace(last, text=self.task))
        return replace(plain, chat=chat)


class PromptFitter:
    """Fits the travel assistant's chat for a photo to its estimated lengths (the module's
    docstring) with `engine`'s tokenizer and chat template."""

    def __init__(self, engine: GemmaEngine, photo: bytes) -> None:
        self.engine = engine
        self.photo = photo
        self.padding = self._padding_word()
        self._system: tuple[str, int] | None = None  # the fitted system prompt, its tokens

    def count(self, text: str) -> int:
        return len(self.engine.tokenizer(text, add_special_tokens=False).input_ids)

    def render(self, messages: tuple[ChatMessage, ...]) -> Prompt:
        return render_chat(messages, think=False, render=self.engine.render_chat)

    def shape(self, language: str) -> PromptShape:
        messages = travel_chat(Request(language=language, images=(self.photo,)))
        prompt = self.render(messages)
        special = self.engine.special_tokens
        prefix_target = estimated_tokens(prompt.shared_prefix, special)
        rest_target = estimated_tokens(prompt.text[len(prompt.shared_prefix) :], special)
        if self._system is None:

            def prefix_tokens(text: str) -> int:
                return self.count(self.render((replace(messages[0], text=text),)).shared_prefix)

            system = self.fit(messages[0].text, prefix_tokens, prefix_target)
            self._system = system, prefix_tokens(system)
        system, prefix = self._system
        messages = (replace(messages[0], text=system), *messages[1:])

        def rest_tokens(text: str) -> int:
            return self.count(self.render((*messages[:-1], replace(messages[-1], text=text))).text)

        task = self.fit(messages[-1].text, lambda t: rest_tokens(t) - prefix, rest_target)
        return PromptShape(system, task, prefix, rest_tokens(task))

    def fit(self, text: str, count: Callable[[str], int], target: int) -> str:
        """`text` cut at a word and padded so that `count` of it is `target` (just under
        where no cut lands on it: a tokenizer may join the last word with the padding)."""
        words = text.split(" ")
        keep = len(words)
        if count(text) > target:  # the longest start that fits
            low, high = 0, len(words) - 1
            while low < high:
                middle = (low + high + 1) // 2
                fits = count(" ".join(words[:middle])) <= target
                low, high = (middle, high) if fits else (low, middle - 1)
            keep = low
        tries = [self.pad(" ".join(words[:cut]), count, target)
                 for cut in range(keep, max(-1, keep - 4), -1)]  # fmt: skip
        return next((t for t in tries if count(t) == target), tries[0])

    def pad(self, text: str, count: Callable[[str], int], target: int) -> str:
        """`text` and as many padding words as fit in `target`."""
        low, high = 0, max(0, target - count(text))  # padding words: a token each at least
        while low < high:
            middle = (low + high + 1) // 2
            fits = count(text + self.padding * middle) <= target
            low, high = (middle, high) if fits else (low, middle - 1)
        return text + self.padding * low

    def _padding_word(self) -> str:
        """The first of PADDING_WORDS that adds one token a repetition."""
        base = self.count("Menu")
        for word in PADDING_WORDS:
            if all(self.count("Menu" + word * n) == base + n for n in (1, 2, 7)):
                return word
        return PADDING_WORDS[0]


def length_stats(lengths: list[int]) -> dict:
    return {"min": min(lengths), "median": statistics.median(lengths), "max": max(lengths)}
