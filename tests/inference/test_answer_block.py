"""The answer's JSON block, read from scripted model outputs (strings written here, named
SCRIPTED_*): what the parser and the stream splitter make of good, broken and hostile ones."""

from __future__ import annotations

import json

import pytest

from inference.answer_block import (
    MAX_BLOCK_CHARS,
    AnswerData,
    BlockSplitter,
    Phrase,
    split_answer,
)
from inference.prompts import BLOCK_RULE, SYSTEM_PROMPT

PORK = {"text": "豚肉抜きでお願いします", "romanization": "Butaniku nuki de onegaishimasu",
        "meaning": "Without pork, please"}  # fmt: skip
PLATFORM = {"text": "3번 승강장이 어디예요?", "romanization": "Sambeon seunggangjang-i eodiyeyo?",
            "meaning": "Where is platform 3?"}  # fmt: skip
SCRIPTED_PROSE = "**Tonkotsu ramen**: pork broth.\n\n- **Gyoza**: dumplings."


def scripted(*phrases: dict, extra: str = "") -> str:
    body = json.dumps({"phrases": list(phrases)}, ensure_ascii=False)
    return f"{SCRIPTED_PROSE}\n\n```json\n{body}\n```{extra}"


def streamed(text: str, size: int) -> str:
    """What the chat shows: the splitter fed `text` in pieces of `size` characters."""
    splitter = BlockSplitter()
    shown = "".join(splitter.feed(text[i : i + size]) for i in range(0, len(text), size))
    return shown + splitter.flush()


def test_the_prompt_asks_for_the_block_in_the_shared_system_prompt() -> None:
    assert BLOCK_RULE in SYSTEM_PROMPT
    assert "```json" in BLOCK_RULE and '"phrases"' in BLOCK_RULE


def test_a_good_block_gives_phrases_and_clean_prose() -> None:
    answer = split_answer(scripted(PORK, PLATFORM))
    assert answer.status == "ok"
    assert answer.prose == SCRIPTED_PROSE
    assert answer.data.phrases == (
        Phrase(PORK["text"], PORK["romanization"], PORK["meaning"]),
        Phrase(PLATFORM["text"], PLATFORM["romanization"], PLATFORM["meaning"]),
    )


def test_stored_text_reads_back_the_same() -> None:
    answer = split_answer(scripted(PORK, extra="\n"))
    again = split_answer(answer.stored_text())
    assert again == answer
    assert answer.stored_text().startswith(SCRIPTED_PROSE + "\n\n```json\n")


def test_no_block_is_the_whole_answer() -> None:
    answer = split_answer(SCRIPTED_PROSE + "\n")
    assert (answer.prose, answer.data, answer.status) == (SCRIPTED_PROSE, AnswerData(), "missing")
    assert answer.stored_text() == SCRIPTED_PROSE


@pytest.mark.parametrize(
    "body",
    [
        '{"phrases": [{"text": "x", "meaning": "y",}]}',  # trailing comma
        "{'phrases': []}",  # single quotes
        '{"phrases": [{"text": "x", "meaning": NaN}]}',  # not strict JSON
        '["phrases"]',  # not an object
        '"just a string"',
        "[" * 5000 + "]" * 5000,  # deep nesting
        "",
    ],
)
def test_a_broken_block_leaves_the_prose(body: str) -> None:
    answer = split_answer(f"{SCRIPTED_PROSE}\n```json\n{body}\n```\n")
    assert answer.prose == SCRIPTED_PROSE
    assert answer.data == AnswerData()
    assert answer.status == "broken"


def test_wrong_types_and_sizes_drop_only_those_items() -> None:
    body = {
        "phrases": [
            "a string",
            {"text": 3, "meaning": "x"},
            {"text": "x"},  # no meaning
            {"text": "あ" * 500, "meaning": "too long to be a phrase"},
            {"text": "Hola", "romanization": "Hola", "meaning": "Hello", "tone": "warm"},
            {"text": "Hola", "romanization": None, "meaning": "Hello"},  # the same again
            PORK,
            PLATFORM,  # a third phrase: two at most
        ],
        "prices": [{"amount": "¥900"}],  # a key this version does not read
    }
    answer = split_answer(f"{SCRIPTED_PROSE}\n```json\n{json.dumps(body)}\n```")
    assert [p.text for p in answer.data.phrases] == ["Hola", PORK["text"]]
    assert answer.data.phrases[0].romanization is None  # Latin script: nothing to add


def test_phrases_not_a_list_is_no_phrases() -> None:
    answer = split_answer('x\n```json\n{"phrases": {"text": "a"}}\n```')
    assert (answer.status, answer.data.phrases) == ("ok", ())


def test_a_huge_block_is_not_read_nor_kept() -> None:
    huge = json.dumps({"phrases": [PORK], "padding": "x" * (2 * MAX_BLOCK_CHARS)})
    splitter = BlockSplitter()
    assert splitter.feed(f"{SCRIPTED_PROSE}\n```json\n{huge}\n```\n") == SCRIPTED_PROSE + "\n"
    assert splitter.blocks == [None]
    assert split_answer(f"{SCRIPTED_PROSE}\n```json\n{huge}\n```\n").status == "broken"


def test_of_several_blocks_the_last_readable_one_counts_and_all_are_hidden() -> None:
    first = json.dumps({"phrases": [PORK]}, ensure_ascii=False)
    text = f"Intro.\n```json\n{first}\n```\nMiddle.\n```JSON\n{{broken\n```\n"
    answer = split_answer(text)
    assert answer.prose == "Intro.\nMiddle."
    assert [p.text for p in answer.data.phrases] == [PORK["text"]]


def test_a_block_cut_by_max_new_tokens_is_hidden() -> None:
    cut = scripted(PORK)[:-40]
    answer = split_answer(cut)
    assert answer.prose == SCRIPTED_PROSE
    assert answer.status == "broken"


def test_a_whole_block_without_its_closing_fence_is_read() -> None:
    answer = split_answer(scripted(PORK)[: -len("```")])
    assert (answer.status, len(answer.data.phrases)) == ("ok", 1)


def test_special_tokens_and_control_characters_are_removed_from_phrases() -> None:
    phrase = {"text": '<|"|>Bitte<turn|> ohne\x00 Schwein<eos>', "meaning": "x\u202e\ny"}
    answer = split_answer(f"p\n```json\n{json.dumps({'phrases': [phrase]})}\n```")
    assert answer.data.phrases == (Phrase("Bitte ohne Schwein", None, "x y"),)


def test_other_code_blocks_and_inline_backticks_stay_in_the_prose() -> None:
    text = "Type `json` here.\n```python\nprint(1)\n```\n    ```json\nindented code\n"
    assert split_answer(text).prose == text.strip()
    assert streamed(text, 1) == text


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64])
def test_the_stream_never_shows_the_block(size: int) -> None:
    text = scripted(PORK, PLATFORM, extra="\n")
    splitter = BlockSplitter()
    shown = ""
    for i in range(0, len(text), size):
        shown += splitter.feed(text[i : i + size])
        assert "`" not in shown and "phrases" not in shown
    shown += splitter.flush()
    assert shown.strip() == split_answer(text).prose


def test_a_held_back_start_of_line_that_is_no_fence_comes_out() -> None:
    assert streamed("Price: 5\n``", 1) == "Price: 5\n``"
    assert streamed("a\n```js\nx\n", 2) == "a\n```js\nx\n"
    assert streamed("a\n``` json is not a fence\n", 3) == "a\n``` json is not a fence\n"


def test_the_tiny_model_noise_takes_the_no_block_path() -> None:
    noise = "ꦏ<unused3> salt \u0000 ``` }{ ```json {"  # a fence only starts a line
    answer = split_answer(noise)
    assert (answer.prose, answer.data, answer.status) == (noise, AnswerData(), "missing")


def test_prices_are_read_as_numbers_with_currency_codes() -> None:
    body = {
        "prices": [
            {"item": "Ramen", "amount": 980, "currency": "JPY"},
            {"item": "Beer", "amount": "1,200", "currency": " jpy "},
            {"item": "Tea", "amount": 9.5, "currency": "EUR", "note": "hot"},
            {"item": "free", "amount": 0, "currency": "EUR"},
            {"item": "bool", "amount": True, "currency": "EUR"},
            {"item": "huge", "amount": 1e300, "currency": "EUR"},
            {"item": "symbol", "amount": 5, "currency": "¥"},
            {"item": "text", "amount": "about 5", "currency": "EUR"},
            {"amount": 3, "currency": "USD"},
            ["not", "a", "price"],
        ]
    }
    answer = split_answer(f"{SCRIPTED_PROSE}\n```json\n{json.dumps(body)}\n```")
    assert [(p.item, p.amount, p.currency) for p in answer.data.prices] == [
        ("Ramen", 980.0, "JPY"),
        ("Beer", 1200.0, "JPY"),
        ("Tea", 9.5, "EUR"),
        ("", 3.0, "USD"),
    ]
    again = split_answer(answer.stored_text())
    assert again.data == answer.data and '"amount": 980,' in answer.stored_text()


def test_the_canonical_block_leaves_out_empty_kinds() -> None:
    answer = split_answer(scripted(PORK))
    assert '"prices"' not in answer.stored_text()
