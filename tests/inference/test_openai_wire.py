"""The chat-completions format both ways: what the bot sends a server, and the thought
markers of a server that has no Gemma 4 reasoning parser."""

from __future__ import annotations

from inference import GemmaEngine, ImageLimits, Request, Turn, normalize_image
from inference.openai_wire import ThoughtSplitter, chat_payload, read_completion_call
from inference.types import Delta
from tests.conftest import small_photo

LIMITS = ImageLimits(max_bytes=20 * 2**20, max_pixels=40_000_000)


def test_a_server_renders_the_same_prompt_as_the_engine(tiny_engine: GemmaEngine) -> None:
    """The bot sends the travel chat as it is (both system messages, photos before text);
    `travelbot serve` (and any server with the checkpoint's template) renders it as the
    in-process engine does."""
    photo = normalize_image(small_photo("EXIT"))
    history = (Turn("user", "what is this?", (photo,)), Turn("model", "An exit."))
    for request in (
        Request(language="de", images=(photo,), question="Was heißt das?"),
        Request(language="ja", question="and the exit?", history=history, think=True),
    ):
        payload = chat_payload(request, model="gemma")
        assert [m["role"] for m in payload["messages"]][:2] == ["system", "system"]
        assert payload["chat_template_kwargs"] == {"enable_thinking": request.think}
        served = read_completion_call(payload, default_max_tokens=8, image_limits=LIMITS)
        ours, theirs = tiny_engine.build_prompt(request), tiny_engine.build_prompt(served.request)
        assert theirs.text == ours.text
        assert len(theirs.images) == len(ours.images)


def split(pieces: list[str]) -> list[Delta]:
    splitter, deltas = ThoughtSplitter(), []
    for piece in pieces:
        deltas.extend(splitter.feed(piece))
    return deltas + splitter.flush()


def joined(deltas: list[Delta], *, is_thought: bool) -> str:
    return "".join(d.text for d in deltas if d.is_thought == is_thought)


def test_thought_markers_in_the_content_are_split_off() -> None:
    """Scripted server output (a parser test): the markers whole, split across chunks, or
    absent (thinking off: the prompt closed an empty thought, the answer comes at once)."""
    whole = split(["<|channel>thought\nThe sign", " says exit.<channel|>It means", " Exit."])
    assert joined(whole, is_thought=True) == "The sign says exit."
    assert joined(whole, is_thought=False) == "It means Exit."
    torn = split(["<|chan", "nel>thou", "ght", "\nhmm<chan", "nel|>Ans", "wer <3"])
    assert (joined(torn, is_thought=True), joined(torn, is_thought=False)) == ("hmm", "Answer <3")
    plain = split(["Exit ", "this way <", "- here"])
    assert joined(plain, is_thought=False) == "Exit this way <- here"
    assert joined(plain, is_thought=True) == ""
    assert joined(split(["I <3 it <"]), is_thought=False) == "I <3 it <"  # held, then flushed
