"""The regions parser on scripted model outputs (written here, as a model might answer):
boxes outside the photo, negative, swapped, zero-area, NaN or strings, huge lists, missing
translations, prose around the block, noise. Nothing raises; what cannot be used is left out."""

from __future__ import annotations

import json

import pytest

from inference import MAX_REGIONS, read_regions, regions_chat
from inference.prompts import TASK_REGIONS
from inference.regions import read_box


def scripted_reply(regions: object, *, prose: str = "") -> str:
    """A scripted model reply: optional prose, then the block."""
    body = json.dumps({"regions": regions}, ensure_ascii=False)
    return f"{prose}```json\n{body}\n```"


def test_a_well_formed_reply_is_read_in_order() -> None:
    reply = scripted_reply(
        [
            {"box_2d": [100, 50, 200, 600], "text": "出口", "translation": "Exit"},
            {"box_2d": [300, 50, 380, 400], "text": "東口", "translation": "East exit"},
        ]
    )
    result = read_regions(reply)
    assert result.status == "ok"
    assert [(r.box, r.text, r.translation) for r in result.regions] == [
        ((100, 50, 200, 600), "出口", "Exit"),
        ((300, 50, 380, 400), "東口", "East exit"),
    ]


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        ([-50, -10, 200, 300], (0, 0, 200, 300)),  # negative: clamped
        ([900, 100, 1500, 2000], (900, 100, 1000, 1000)),  # outside the photo: clamped
        ([400, 600, 100, 200], (100, 200, 400, 600)),  # swapped corners: put in order
        (["120", " 30 ", "240.4", "90"], (120, 30, 240, 90)),  # numbers as strings
        ([10.6, 20.2, 30.5, 40.9], (11, 20, 30, 41)),  # fractions: rounded
        ([100, 100, 100, 400], None),  # zero height
        ([1200, 100, 1300, 400], None),  # wholly below the photo: no area once clamped
        ([float("nan"), 0, 10, 10], None),
        ([float("inf"), 0, 10, 10], None),
        (["top", 0, 10, 10], None),
        ([True, 0, 10, 10], None),
        ([0, 0, 10], None),
        ([[0], 0, 10, 10], None),
        ("0, 0, 10, 10", None),
        (None, None),
    ],
)
def test_boxes_are_fixed_or_dropped(box: object, expected: object) -> None:
    assert read_box(box) == expected


def test_regions_without_a_usable_box_or_translation_are_left_out() -> None:
    reply = scripted_reply(
        [
            {"box_2d": [0, 0, 0, 0], "text": "a", "translation": "zero area"},
            {"box_2d": [10, 10, 50, 50], "text": "b"},  # no translation
            {"box_2d": [10, 10, 50, 50], "text": "c", "translation": "   "},
            {"box_2d": [10, 10, 50, 50], "text": "d", "translation": 42},
            "not an object",
            {"box_2d": [10, 10, 50, 50], "translation": "kept, without its original"},
        ]
    )
    result = read_regions(reply)
    assert [r.translation for r in result.regions] == ["kept, without its original"]
    assert result.regions[0].text == ""


def test_a_huge_list_is_cut_and_duplicates_dropped() -> None:
    same = {"box_2d": [1, 1, 9, 9], "text": "x", "translation": "y"}
    many = [same, same] + [
        {"box_2d": [i % 900, 0, i % 900 + 20, 500], "text": f"t{i}", "translation": f"u{i}"}
        for i in range(500)
    ]
    reply = "```json\n" + json.dumps({"regions": many}) + "\n```"
    result = read_regions(reply)  # longer than the block limit: not read at all
    assert result.status == "broken" and result.regions == ()
    fitting = scripted_reply(many[:120])
    result = read_regions(fitting)
    assert result.status == "ok"
    assert len(result.regions) == MAX_REGIONS
    assert result.regions[0].translation == "y" and result.regions[1].translation == "u0"


def test_special_tokens_and_control_characters_are_taken_out_of_the_text() -> None:
    reply = scripted_reply(
        [{"box_2d": [1, 1, 90, 90], "text": "A\x00B", "translation": "<turn|>Exit\u202e\n"}]
    )
    (region,) = read_regions(reply).regions
    assert region.translation == "Exit"
    assert region.text == "A B"


@pytest.mark.parametrize(
    "reply",
    [
        # the list alone, as Gemini writes boxes when asked for them
        '```json\n[{"box_2d": [1, 2, 30, 40], "text": "a", "translation": "b"}]\n```',
        # no fence at all
        '{"regions": [{"box_2d": [1, 2, 30, 40], "text": "a", "translation": "b"}]}',
        # prose before, a broken block, then a good one: the last good block counts
        "Here you are:\n```json\n{broken\n```\n"
        '```json\n{"regions": [{"box_2d": [1, 2, 30, 40], "text": "a", "translation": "b"}]}\n```',
        # cut by max_new_tokens after the list closed
        '```json\n{"regions": [{"box_2d": [1, 2, 30, 40], "text": "a", "translation": "b"}]}',
    ],
)
def test_other_shapes_of_a_usable_reply_are_read(reply: str) -> None:
    result = read_regions(reply)
    assert result.status == "ok"
    assert [(r.box, r.translation) for r in result.regions] == [((1, 2, 30, 40), "b")]


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        ("", "missing"),
        ("The sign says EXIT.", "missing"),
        ("<unused12> ▁ zz \x00 }{ ", "missing"),  # noise like the tiny model's
        ('```json\n{"regions": []}\n```', "broken"),
        ('```json\n{"regions": "none"}\n```', "broken"),
        ("```json\n{'regions': [1]}\n```", "broken"),
        ('```json\n{"regions": [{"box_2d": [NaN, 0, 1, 1], "translation": "x"}]}\n```', "broken"),
        ("```json\n" + "[" * 5000 + "\n```", "broken"),
        ('```json\n{"regions": [{"box_2d": [1, 2, 30, 40], "text": "a", "transl', "broken"),
    ],
)
def test_an_unusable_reply_has_no_regions_and_does_not_raise(reply: str, status: str) -> None:
    result = read_regions(reply)
    assert result.regions == ()
    assert result.status == status


def test_the_regions_chat_asks_for_googles_box_convention_in_the_users_language() -> None:
    chat = regions_chat("ja", b"photo", max_regions=MAX_REGIONS)
    assert [m.role for m in chat] == ["system", "user"]
    assert chat[1].images == (b"photo",)
    task = chat[1].text
    assert "[ymin, xmin, ymax, xmax]" in task and "0-1000" in task
    assert "in Japanese" in task and f"At most {MAX_REGIONS} regions" in task
    assert task == TASK_REGIONS.format(language="Japanese", max_regions=MAX_REGIONS)
