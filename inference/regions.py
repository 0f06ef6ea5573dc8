"""Where the text of a photo is, and its translation: the reply to the regions task
(inference/prompts.py, TASK_REGIONS), read defensively.

The model is asked for one strict block, in the answer block's fence (answer_block.py):

    ```json
    {"regions": [{"box_2d": [ymin, xmin, ymax, xmax], "text": "...", "translation": "..."}]}
    ```

`box_2d` is Google's detection convention for Gemini and Gemma: [y_min, x_min, y_max, x_max]
with the top left corner as origin, each value normalised to 0-1000 for every image
(Vertex AI, "Bounding box detection": https://docs.cloud.google.com/vertex-ai/generative-ai/
docs/bounding-box-detection; Gemma 4 is documented to output such boxes natively in a
1000x1000 space, and Google's answer on google/gemma-3-4b-it discussion #38 points Gemma users
to the Gemini format). docs/overlay.md has the references.

Nothing the model writes makes this raise: a box outside the photo is clamped into it,
swapped corners are put in order, numbers written as strings are read, and a box that is
not four finite numbers, or has no area, is dropped with its region; so is a region without
a translation. A bare JSON list (what Gemini writes when asked for boxes) is read as the
regions, and a reply without a fence is tried as JSON as a whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from inference.answer_block import BlockSplitter, clean_text, load_block, unique_items

BOX_SCALE = 1000  # box_2d values are 0..1000 of the photo's height (y) and width (x)
MAX_REGIONS = 40  # drawn at most; a longer list is cut, not refused
MAX_ITEMS_READ = 200  # items looked at before giving up on a list of junk
MAX_REGIONS_BLOCK_CHARS = 24_000  # 40 regions of ~300 characters, with room
MAX_REGION_TEXT_CHARS = 300
MIN_BOX_SIDE = 1  # in 0..1000 units: a thinner box has no area to draw in

RegionsStatus = Literal["ok", "missing", "broken"]


@dataclass(frozen=True)
class Region:
    """A piece of text in the photo: its box, as Gemma writes it (ymin, xmin, ymax, xmax,
    0..1000, in order), what it says and its translation."""

    box: tuple[int, int, int, int]
    text: str
    translation: str


@dataclass(frozen=True)
class RegionsReply:
    regions: tuple[Region, ...]
    status: RegionsStatus  # "missing": nothing JSON; "broken": JSON without a usable region


def read_regions(reply: str) -> RegionsReply:
    """The regions of a reply to the regions task; never raises."""
    splitter = BlockSplitter(max_block_chars=MAX_REGIONS_BLOCK_CHARS)
    splitter.feed(reply)
    splitter.flush()
    bodies: list[str | None] = list(reversed(splitter.blocks))
    bare = reply.strip()
    if bare[:1] in ("{", "["):
        bodies.append(bare)
    if not bodies:
        return RegionsReply((), "missing")
    for body in bodies:
        regions = _regions(load_block(body, MAX_REGIONS_BLOCK_CHARS))
        if regions:
            return RegionsReply(regions, "ok")
    return RegionsReply((), "broken")


def _regions(value: Any) -> tuple[Region, ...]:
    if isinstance(value, dict):
        value = value.get("regions")
    return unique_items(value, _region, MAX_REGIONS, MAX_ITEMS_READ)


def _region(item: Any) -> Region | None:
    if not isinstance(item, dict):
        return None
    box = read_box(item.get("box_2d"))
    translation = clean_text(item.get("translation"), MAX_REGION_TEXT_CHARS)
    if box is None or not translation:
        return None
    text = clean_text(item.get("text"), MAX_REGION_TEXT_CHARS) or ""
    return Region(box, text, translation)


def read_box(value: Any) -> tuple[int, int, int, int] | None:
    """[ymin, xmin, ymax, xmax] clamped to 0..1000 and put in order; None when it is not four
    finite numbers or has no area."""
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    numbers = [_number(v) for v in value]
    if any(n is None for n in numbers):
        return None
    y0, x0, y1, x1 = (round(min(max(n, 0.0), BOX_SCALE)) for n in numbers)  # type: ignore[type-var]
    y0, y1 = sorted((y0, y1))
    x0, x1 = sorted((x0, x1))
    if y1 - y0 < MIN_BOX_SIDE or x1 - x0 < MIN_BOX_SIDE:
        return None
    return (y0, x0, y1, x1)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip()[:20])
        except ValueError:
            return None
    if not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None
