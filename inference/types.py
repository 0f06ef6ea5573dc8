"""Plain data crossing the boundary between the bot and the inference worker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from inference.images import ImageLimits


@dataclass(frozen=True)
class Sampling:
    """Gemma 4's recommended sampling; temperature 0 means greedy."""

    temperature: float = 1.0
    top_p: float = 0.95
    top_k: int = 64

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ValueError(f"invalid sampling parameters: {self}")

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class Turn:
    """One earlier message of the conversation. `images`: the photos of a user turn (the
    pages of an album), in order."""

    role: Literal["user", "model"]
    text: str
    images: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        _check_images(self.images)


def _check_images(images: tuple[bytes, ...]) -> None:
    if not isinstance(images, tuple):  # one photo's bytes would pass as their own "images"
        raise TypeError(f"images must be a tuple of photos, not {type(images).__name__}")


@dataclass(frozen=True)
class ChatMessage:
    """One message of a chat given as is (OpenAI clients): no templates are added to it."""

    role: Literal["system", "user", "model"]
    text: str
    images: tuple[bytes, ...] = ()  # shown before the text, in order


# What a traveller may ask the answers to watch for: ways of eating, then the EU's 14
# allergens (Regulation 1169/2011, Annex II). The codes are stored and sent in buttons.
DIET_WAYS = ("vegetarian", "vegan", "pescatarian", "halal", "kosher", "no_pork", "no_alcohol")
DIET_ALLERGENS = (
    "gluten", "crustaceans", "eggs", "fish", "peanuts", "soy", "milk",
    "tree_nuts", "celery", "mustard", "sesame", "sulphites", "lupin", "molluscs",
)  # fmt: skip
DIET_CODES = DIET_WAYS + DIET_ALLERGENS
MAX_DIET_NOTES = 10  # the traveller's own items ("no coriander")
MAX_DIET_NOTE_CHARS = 80


@dataclass(frozen=True)
class Diet:
    """What the traveller does not eat: codes of DIET_CODES (in that order) and up to
    MAX_DIET_NOTES items in their own words, which are untrusted text."""

    codes: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = set(self.codes) - set(DIET_CODES)
        if unknown:
            raise ValueError(f"unknown diet codes: {sorted(unknown)}")
        if len(self.notes) > MAX_DIET_NOTES:
            raise ValueError(f"at most {MAX_DIET_NOTES} diet notes")
        if any(len(note) > MAX_DIET_NOTE_CHARS for note in self.notes):
            raise ValueError(f"a diet note is longer than {MAX_DIET_NOTE_CHARS} characters")
        object.__setattr__(self, "codes", tuple(c for c in DIET_CODES if c in self.codes))

    def __bool__(self) -> bool:
        return bool(self.codes or self.notes)


@dataclass(frozen=True)
class Request:
    """One question to the model: photos (one, or an album's pages) and/or a text, in a
    conversation.

    With `chat` set the prompt is exactly that chat (language, question, image and
    history are unused): the OpenAI-compatible server passes its clients' messages so.
    """

    language: str  # answer language: a code of inference.languages ("de", "nl", "zh-Hant")
    question: str | None = None  # the caption or follow-up text; None: explain the photo
    images: tuple[bytes, ...] = ()  # the photos of this turn, already validated, in order
    # the text of the chat message the question replies to (a group member's photo caption,
    # the bot's earlier answer): read as material, like the question
    quoted: str | None = None
    history: tuple[Turn, ...] = ()
    think: bool = False
    max_new_tokens: int = 1024
    # benchmarks: the batching engine generates max_new_tokens whatever the model says
    ignore_stop: bool = False
    sampling: Sampling = Sampling()
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    chat: tuple[ChatMessage, ...] = ()
    # whose data the request carries, an opaque key (the bot: the user's log pseudonym);
    # what the engine keeps of it is dropped by `InferenceService.forget(owner)`.
    # "": nobody in particular
    owner: str = ""
    # others whose photos it carries (a group member's photo that another asks about):
    # `forget` of theirs drops what the engine keeps of those photos too
    photo_owners: tuple[str, ...] = ()
    diet: Diet = Diet()  # the traveller's diet: menu answers mark each dish for it

    def __post_init__(self) -> None:
        _check_images(self.images)
        if self.chat:
            if self.chat[-1].role != "user":
                raise ValueError("a chat must end with a user message")
        elif not self.images and not (self.question and self.question.strip()):
            raise ValueError("a request needs a photo or a question")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be positive")


# Events streamed back for one request, in this order:
# Queued (once), Started (once), Delta (any number), Finished (once).
@dataclass(frozen=True)
class Queued:
    position: int  # 1: next to run


@dataclass(frozen=True)
class Started:
    pass


@dataclass(frozen=True)
class Delta:
    text: str
    is_thought: bool = False


@dataclass(frozen=True)
class Finished:
    text: str
    thought: str
    num_prompt_tokens: int
    num_output_tokens: int
    finish_reason: Literal["stop", "length", "cancelled"]
    token_ids: tuple[int, ...] = ()  # every generated token, the stop token included


Event = Queued | Started | Delta | Finished


class InferenceError(Exception):
    """Base of the errors a request can end with; `kind` names it for the user message."""

    kind = "engine_error"


class QueueFull(InferenceError):
    kind = "queue_full"


class ImageRejected(InferenceError):
    """The photo cannot be used; `reason` is one of images.REJECT_REASONS."""

    kind = "image_rejected"

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail

    def __reduce__(self):  # raised in a preparing process, with its reason
        return type(self), (self.reason, self.detail)


class WorkerStopped(InferenceError):
    kind = "worker_stopped"


class InferenceService(Protocol):
    """What the bot uses of a worker: the local `Worker` and `RemoteWorker` both are one."""

    @property
    def queue_depth(self) -> int: ...

    @property
    def num_running(self) -> int: ...

    @property
    def is_alive(self) -> bool: ...

    def device_memory_bytes(self) -> int | None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def normalize_image(self, data: bytes, limits: ImageLimits) -> bytes:
        """inference.images.normalize_image off the event loop; raises ImageRejected."""

    def submit(self, request: Request) -> AsyncIterator[Event]: ...

    async def forget(self, owner: str) -> None:
        """Return once no cache of the engine holds anything of requests of `owner`."""
