"""Inference for the travel bot: requests in, streamed answers out. No telegram here.

The bot uses only what is exported here; torch and transformers load lazily
inside the engine thread.
"""

from inference.answer_block import (
    AnswerData,
    BlockSplitter,
    Phrase,
    Price,
    SplitAnswer,
    split_answer,
)
from inference.engine import (
    EngineConfig,
    GemmaEngine,
    ModelNotFound,
    check_model_dir,
    create_engine,
)
from inference.gauges import worker_gauges
from inference.images import ImageLimits, normalize_image
from inference.languages import LANGUAGES, language_name, match_language, native_name
from inference.prompts import regions_chat
from inference.regions import MAX_REGIONS, Region, RegionsReply, read_regions
from inference.remote import RemoteConfig, RemoteWorker
from inference.runtime.config import RuntimeConfig
from inference.types import (
    DIET_ALLERGENS,
    DIET_CODES,
    DIET_WAYS,
    MAX_DIET_NOTE_CHARS,
    MAX_DIET_NOTES,
    ChatMessage,
    Delta,
    Diet,
    Event,
    Finished,
    ImageRejected,
    InferenceError,
    InferenceService,
    Queued,
    QueueFull,
    Request,
    Sampling,
    Started,
    Turn,
    WorkerStopped,
)
from inference.worker import Worker

__all__ = [
    "DIET_ALLERGENS",
    "DIET_CODES",
    "DIET_WAYS",
    "LANGUAGES",
    "MAX_DIET_NOTES",
    "MAX_DIET_NOTE_CHARS",
    "MAX_REGIONS",
    "AnswerData",
    "BlockSplitter",
    "ChatMessage",
    "Delta",
    "Diet",
    "EngineConfig",
    "Event",
    "Finished",
    "GemmaEngine",
    "ImageLimits",
    "ImageRejected",
    "InferenceError",
    "InferenceService",
    "ModelNotFound",
    "Phrase",
    "Price",
    "QueueFull",
    "Queued",
    "Region",
    "RegionsReply",
    "RemoteConfig",
    "RemoteWorker",
    "Request",
    "RuntimeConfig",
    "Sampling",
    "SplitAnswer",
    "Started",
    "Turn",
    "Worker",
    "WorkerStopped",
    "check_model_dir",
    "create_engine",
    "language_name",
    "match_language",
    "native_name",
    "normalize_image",
    "read_regions",
    "regions_chat",
    "split_answer",
    "worker_gauges",
]
