"""OutputSplitter driven by scripted token ids (tests the parser, not the model)."""

from inference.output import OutputSplitter


def make_splitter(tokenizer) -> OutputSplitter:
    ids = tokenizer.convert_tokens_to_ids
    channel = (ids("<|channel>"), ids("<channel|>"))
    return OutputSplitter(
        lambda token_ids: tokenizer.decode(token_ids, skip_special_tokens=True),
        channel_open_id=channel[0],
        channel_close_id=channel[1],
        ignored_ids=set(tokenizer.all_special_ids) - set(channel),
    )


def test_thought_and_answer_are_separated(tiny_engine) -> None:
    tok = tiny_engine.tokenizer
    scripted = tok.encode(
        "<|channel>thought\nThe sign is German.<channel|>Exit — Ausgang<turn|>",
        add_special_tokens=False,
    )
    splitter = make_splitter(tok)
    deltas = [d for token in scripted if (d := splitter.push(token)) is not None]
    assert splitter.thought == "The sign is German."
    assert splitter.answer == "Exit — Ausgang"
    assert "".join(d.text for d in deltas if d.is_thought) == "The sign is German."
    assert "".join(d.text for d in deltas if not d.is_thought) == "Exit — Ausgang"
    assert splitter.num_tokens == len(scripted)


def test_multibyte_characters_are_never_split(tiny_engine) -> None:
    tok = tiny_engine.tokenizer
    text = "出口は右 🚪 ok"
    scripted = tok.encode(text, add_special_tokens=False)
    splitter = make_splitter(tok)
    pieces = [d.text for token in scripted if (d := splitter.push(token)) is not None]
    assert all("\ufffd" not in piece for piece in pieces)
    assert "".join(pieces) == text
