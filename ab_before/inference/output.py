"""Split a stream of generated token ids into thought and answer text, incrementally.

Gemma 4 writes its thinking as `<|channel>thought\n ... <channel|>` before the answer;
the answer ends with `<turn|>` (or `<eos>`). Splitting on token ids, not on text,
means nothing the model writes as plain text can open or close the thought block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from inference.types import Delta, Finished

THOUGHT_LABEL = "thought"


@dataclass
class _Channel:
    ids: list[int] = field(default_factory=list)
    raw: str = ""  # text of ids[:read_offset], built incrementally
    prefix_offset: int = 0  # start of the window decoded together with new tokens
    read_offset: int = 0  # ids already turned into `raw`
    emitted: str = ""  # visible text handed out as deltas


class OutputSplitter:
    def __init__(
        self,
        decode: Callable[[list[int]], str],
        *,
        channel_open_id: int,
        channel_close_id: int,
        ignored_ids: set[int],
        byte_ids: frozenset[int] = frozenset(),
    ) -> None:
        self._decode = decode
        self._open_id = channel_open_id
        self._close_id = channel_close_id
        self._ignored = ignored_ids
        self._byte_ids = byte_ids  # byte-fallback tokens: a later byte can change their text
        self._answer = _Channel()
        self._thought = _Channel()
        self._in_thought = False
        self.token_ids: list[int] = []  # every generated token, the stop token included

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    def push(self, token_id: int) -> Delta | None:
        """Take one generated token; return the text it makes visible, if any."""
        self.token_ids.append(token_id)
        if token_id == self._open_id:
            self._in_thought = True
            return None
        if token_id == self._close_id:
            self._in_thought = False
            return None
        if token_id in self._ignored:
            return None
        channel = self._thought if self._in_thought else self._answer
        channel.ids.append(token_id)
        return self._advance(channel, is_thought=self._in_thought)

    def flush(self) -> list[Delta]:
        """At the end: the text held back so far (trailing bytes), as deltas."""
        deltas = []
        for channel, is_thought in ((self._thought, True), (self._answer, False)):
            text = self._text(channel, is_thought=is_thought, final=True)
            if len(text) > len(channel.emitted) and text.startswith(channel.emitted):
                deltas.append(Delta(text[len(channel.emitted) :], is_thought=is_thought))
                channel.emitted = text
        return deltas

    def finish(self, *, num_prompt_tokens: int, reason: str) -> list[Delta | Finished]:
        """The held-back text as deltas, then the Finished event."""
        finished = Finished(
            text=self.answer,
            thought=self.thought,
            num_prompt_tokens=num_prompt_tokens,
            num_output_tokens=self.num_tokens,
            finish_reason=reason,
            token_ids=tuple(self.token_ids),
        )
        return [*self.flush(), finished]

    @property
    def answer(self) -> str:
        return self._text(self._answer, is_thought=False, final=True)

    @property
    def thought(self) -> str:
        return self._text(self._thought, is_thought=True, final=True)

    def _advance(self, channel: _Channel, *, is_thought: bool) -> Delta | None:
        self._read(channel)
        text = self._visible(channel.raw, is_thought=is_thought, final=False)
        if len(text) <= len(channel.emitted) or not text.startswith(channel.emitted):
            return None
        delta = text[len(channel.emitted) :]
        channel.emitted = text
        return Delta(delta, is_thought=is_thought)

    def _read(self, channel: _Channel) -> None:
        """Extend `raw` by decoding only a short window (decoding all ids per token is
        quadratic; at 64 sequences of 1000 tokens it costs more than the GPU step)."""
        ids = channel.ids
        end = len(ids)
        while end > channel.read_offset and ids[end - 1] in self._byte_ids:
            end -= 1  # hold back trailing bytes until the character they form is complete
        if end <= channel.read_offset:
            return
        # Decode the previous piece with the new tokens, so that word joins come out right.
        before = self._decode(ids[channel.prefix_offset : channel.read_offset])
        after = self._decode(ids[channel.prefix_offset : end])
        if len(after) > len(before) and after.startswith(before):
            channel.raw += after[len(before) :]
            channel.prefix_offset, channel.read_offset = channel.read_offset, end

    def _text(self, channel: _Channel, *, is_thought: bool, final: bool) -> str:
        return self._visible(self._decode(channel.ids), is_thought=is_thought, final=final)

    @staticmethod
    def _visible(text: str, *, is_thought: bool, final: bool) -> str:
        if is_thought and not final and THOUGHT_LABEL.startswith(text):
            return ""  # the label may still be arriving
        if is_thought and text.startswith(THOUGHT_LABEL):
            text = text[len(THOUGHT_LABEL) :]
        text = text.lstrip()
        return text.rstrip() if final else text
