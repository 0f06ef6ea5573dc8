"""OutputSplitter driven by scripted token ids (tests the parser, not the model)."""


def test_thought_and_answer_are_separated(tiny_engine) -> None:
    tok = tiny_engine.tokenizer
    scripted = tok.encode(
        "<|channel>thought\nThe sign is German.<channel|>Exit — Ausgang<turn|>",
        add_special_tokens=False,
    )
    splitter = tiny_engine.make_splitter()
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
    splitter = tiny_engine.make_splitter()
    pieces = [d.text for token in scripted if (d := splitter.push(token)) is not None]
    assert all("\ufffd" not in piece for piece in pieces)
    assert "".join(pieces) == text


def test_a_long_stream_equals_the_final_text(tiny_engine) -> None:
    tok = tiny_engine.tokenizer
    text = ("Forelle Müllerin — trout 🐟, 出口は右, Выход " * 60).strip()
    scripted = tok.encode(text, add_special_tokens=False)
    splitter = tiny_engine.make_splitter()
    pieces = [d.text for token in scripted if (d := splitter.push(token)) is not None]
    pieces += [d.text for d in splitter.flush()]
    assert "".join(pieces) == splitter.answer == text
