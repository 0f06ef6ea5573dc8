"""The bench's requests: photos of signs and menus with the explain-the-photo task, and
follow-ups whose conversations fill the context."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import replace

from inference.engine import GemmaEngine
from inference.images import normalize_image
from inference.types import Request, Sampling, Turn
from tools.samples import draw_menu, draw_sign

LANGUAGES = ("de", "en", "fr", "ja", "es", "ko", "it", "zh")


def sample_photo(index: int, *, seed: int = 0) -> bytes:
    """A sign (even `index`) or a menu, 1024x768, drawn from `seed + index`, normalized as
    the bot does."""
    draw = draw_sign if index % 2 == 0 else draw_menu
    buffer = io.BytesIO()
    draw(1024, 768, seed=seed + index).save(buffer, format="PNG")
    return normalize_image(buffer.getvalue())


def photo_request(index: int, photo: bytes, new_tokens: int, **fields) -> Request:
    """The explain-the-photo request the bot sends for `photo`, in the index'th language,
    asking for `new_tokens` whatever the model says."""
    return Request(
        language=LANGUAGES[index % len(LANGUAGES)],
        images=(photo,),
        max_new_tokens=new_tokens,
        ignore_stop=True,
        sampling=Sampling(temperature=0.0),
        **fields,
    )


def make_requests(count: int, new_tokens: int, *, seed: int = 0) -> list[Request]:
    """`count` photo requests (sample_photo, photo_request)."""
    return [photo_request(i, sample_photo(i, seed=seed), new_tokens) for i in range(count)]


FILLER = (
    "{n}. Grilled fish with lemon and herbs, served with potatoes: no pork, no gluten; ask "
    "for the sauce apart if you avoid dairy. "
)


def long_context_requests(
    engine: GemmaEngine,
    requests: list[Request],
    context_tokens: int,
    fitted: Callable[[Request], Request] = lambda request: request,
) -> list[Request]:
    """Each request as the follow-up of a conversation that fills `context_tokens` with its
    answer: an earlier photo, three long answers and two questions before this turn's
    photo (the bot keeps six earlier turns), its prompt as `fitted` makes it. The answers'
    length is found with request 0."""

    def follow_up(request: Request, earlier: Request, units: int) -> Request:
        third = [FILLER.format(n=n) for n in range(units)]
        answers = ["".join(third[i::3]) for i in range(3)]
        history = (
            Turn("user", "What does this say?", earlier.images),
            Turn("model", answers[0]),
            Turn("user", "Which of these has no pork?"),
            Turn("model", answers[1]),
            Turn("user", "And which are vegetarian?"),
            Turn("model", answers[2]),
        )
        return fitted(replace(request, history=history))

    def tokens(units: int) -> int:
        request = follow_up(requests[0], requests[-1], units)
        return int(engine.prepare_inputs(request, on_device=False)["input_ids"].shape[1])

    target = context_tokens - requests[0].max_new_tokens - 16  # room for the languages
    base = tokens(0)
    per_unit = (tokens(8) - base) / 8
    units = max(0, int((target - base) / per_unit))
    while units and tokens(units) > target:
        units -= 1
    count = len(requests)
    return [follow_up(r, requests[(i + 1) % count], units) for i, r in enumerate(requests)]
