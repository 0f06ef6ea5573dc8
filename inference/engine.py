"""The in-process Gemma 4 engine: load a local checkpoint and generate one request at a time.

torch and transformers are imported here and nowhere the bot reaches at start-up.
Continuous batching replaces `generate()` in a later step; the interface stays:
`generate(request, emit, is_cancelled) -> Finished`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from inference.images import decode_image, photo_key
from inference.model_files import HOW_TO_GET_A_MODEL, ModelNotFound, check_model_dir
from inference.output import OutputSplitter
from inference.prompts import IMAGE_PLACEHOLDER, Prompt, build_prompt
from inference.types import Event, Finished, Request

log = structlog.get_logger()

SUPPORTED_SOFT_TOKENS = (70, 140, 280, 560, 1120)
# The photos of one prompt (an album's pages, at most 10) share this many photos' worth of
# the configured soft-token budget: more photos get the largest smaller supported budget
# that keeps their total within it (280 a photo: 10 pages get 140 each, 1,400 tokens, so
# that the default 4,096-position sequence still holds ~700 of text and a 1,024-token
# answer). Down to 70 a photo, the smallest budget.
PHOTOS_AT_FULL_BUDGET = 5
MIN_SHARED_PREFIX_TOKENS = 32  # shorter shared prefixes are not worth a cache entry


@dataclass(frozen=True)
class EngineConfig:
    model_path: Path | str  # a folder, or a Hugging Face repo id in the local cache
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1"
    dtype: str = "auto"  # "auto" (bf16 on GPU, float32 on CPU), "bfloat16", "float32"
    image_soft_tokens: int | None = None  # None: the checkpoint's processor default
    experts_implementation: str | None = None  # "eager", "batched_mm", "grouped_mm"

    def __post_init__(self) -> None:
        if self.image_soft_tokens not in (None, *SUPPORTED_SOFT_TOKENS):
            raise ValueError(f"image_soft_tokens must be one of {SUPPORTED_SOFT_TOKENS}")


class GemmaEngine:
    def __init__(
        self, model, tokenizer, image_processor, *, image_soft_tokens=None, dtype=None
    ) -> None:
        """An engine over an already loaded model (see `load` for a checkpoint directory).
        Without one (None) it only prepares inputs, on the CPU, pixels in `dtype`
        (prep_processes)."""
        import torch

        from inference.photo_features import check_processor

        self.model = model.eval() if model is not None else None
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.device = model.device if model is not None else torch.device("cpu")
        self.dtype = model.dtype if model is not None else dtype
        self.image_soft_tokens = image_soft_tokens or image_processor.max_soft_tokens
        check_processor(image_processor)
        if not tokenizer.chat_template:
            raise ModelNotFound(
                f"The checkpoint's tokenizer has no chat template (chat_template.jinja, or "
                f"chat_template in tokenizer_config.json): the prompt must come from the "
                f"checkpoint's own template. {HOW_TO_GET_A_MODEL}"
            )
        tok = tokenizer
        ids = tok.convert_tokens_to_ids
        self.stop_ids = [ids("<turn|>"), tok.eos_token_id]
        self._channel_ids = (ids("<|channel>"), ids("<channel|>"))
        self._ignored_ids = set(tok.all_special_ids) - set(self._channel_ids)
        self._byte_ids = frozenset(
            index
            for token, index in tok.get_vocab().items()
            if len(token) == 6 and token.startswith("<0x") and token.endswith(">")
        )
        # Every token the tokenizer reads as itself wherever it stands in a text: the
        # prompt's message texts (travellers' words in them) are cleared of them.
        self.special_tokens = frozenset(tok.get_added_vocab()) | set(tok.all_special_tokens)
        # Tokens that only the processor may place: never generate them.
        self._suppressed_ids = sorted(
            {ids(t) for t in (tok.image_token, tok.boi_token, tok.eoi_token, "<|audio|>",
                              "<|video|>", tok.bos_token, tok.pad_token)} - {tok.unk_token_id}
        )  # fmt: skip
        self._torch = torch
        # a shared prefix's text → its token ids (the same few texts again and again)
        self._prefix_ids = functools.lru_cache(maxsize=64)(self._token_ids)

    @classmethod
    def load(cls, config: EngineConfig) -> GemmaEngine:
        """Load model, tokenizer and image processor offline, from a local folder or a
        Hugging Face repo id's snapshot in the local cache (model_files.check_model_dir).
        Logs `model_loading`, `model_weights_progress` at each tenth of the weights,
        `model_weights_loaded` and `model_loaded`: the full-size model takes minutes."""
        path = check_model_dir(config.model_path)
        started = time.monotonic()
        # first, before transformers' import (seconds): the sign of life of a long load
        log.info(
            "model_loading",
            path=str(path),
            weights_gb=round(sum(f.stat().st_size for f in path.glob("*.safetensors")) / 1e9, 2),
        )
        from transformers import (
            AutoTokenizer,
            Gemma4ForConditionalGeneration,
            Gemma4ImageProcessorPil,
        )
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a terminal's bar; the events here say as much
        device = _pick_device(config.device)
        dtype = _pick_dtype(config.dtype, device)
        previous_hook = hf_logging.set_tqdm_hook(_weights_progress_events)
        try:
            model = Gemma4ForConditionalGeneration.from_pretrained(
                path, dtype=dtype, device_map=device, local_files_only=True
            )
        finally:
            hf_logging.set_tqdm_hook(previous_hook)
        log.info("model_weights_loaded", seconds=round(time.monotonic() - started, 2))
        if config.experts_implementation:
            model.set_experts_implementation(config.experts_implementation)
        engine = cls(
            model,
            AutoTokenizer.from_pretrained(path, local_files_only=True),
            Gemma4ImageProcessorPil.from_pretrained(path, local_files_only=True),
            image_soft_tokens=config.image_soft_tokens,
        )
        log.info(
            "model_loaded",  # with its tokenizer and image processor
            path=str(path),
            device=str(device),
            dtype=str(dtype),
            seconds=round(time.monotonic() - started, 2),
        )
        return engine

    def generate(
        self,
        request: Request,
        emit: Callable[[Event], None],
        is_cancelled: Callable[[], bool],
    ) -> Finished:
        """Run one request, calling `emit` with each Delta; return the Finished event."""
        inputs = self.prepare_inputs(request)
        num_prompt_tokens = int(inputs["input_ids"].shape[1])
        splitter = self.make_splitter()

        def on_token(token_id: int) -> None:
            if (delta := splitter.push(token_id)) is not None:
                emit(delta)

        sampling = request.sampling
        sample_kwargs = (
            {"do_sample": False}
            if sampling.is_greedy
            else {
                "do_sample": True,
                "temperature": sampling.temperature,
                "top_p": sampling.top_p,
                "top_k": sampling.top_k,
            }
        )
        with self._torch.inference_mode():
            self.model.generate(
                **inputs,
                max_new_tokens=request.max_new_tokens,
                **self.generation_kwargs,
                streamer=_TokenStreamer(on_token),
                stopping_criteria=[_CancelCriteria(is_cancelled, self._torch)],
                **sample_kwargs,
            )
        generated = splitter.token_ids
        if is_cancelled():
            reason = "cancelled"
        elif generated and generated[-1] in self.stop_ids:
            reason = "stop"
        else:
            reason = "length"
        *deltas, finished = splitter.finish(num_prompt_tokens=num_prompt_tokens, reason=reason)
        for delta in deltas:
            emit(delta)
        return finished

    def make_splitter(self) -> OutputSplitter:
        return OutputSplitter(
            lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True),
            channel_open_id=self._channel_ids[0],
            channel_close_id=self._channel_ids[1],
            ignored_ids=self._ignored_ids,
            byte_ids=self._byte_ids,
        )

    @property
    def generation_kwargs(self) -> dict:
        """Stop and suppression settings every generate() call here uses."""
        return {
            "eos_token_id": self.stop_ids,
            "pad_token_id": self.tokenizer.pad_token_id,
            "suppress_tokens": self._suppressed_ids,
        }

    def prepare_inputs(self, request: Request, *, on_device: bool = True) -> dict:
        """Token ids and image tensors for `request` (CPU work, safe to run in any thread);
        on the model's device unless `on_device` is False."""
        return self._inputs(self.build_prompt(request), on_device=on_device)

    def prepare_with_prefix(self, request: Request) -> tuple[dict, tuple[int, ...]]:
        """Inputs on the CPU (with `photo_keys`, one per photo, and `photo_owners`, the
        request's owner and those of its photos: photo_cache), and the token ids the prompt
        shares with other travellers' prompts (its start; () when too short to be worth
        caching)."""
        prompt = self.build_prompt(request)
        inputs = self._inputs(prompt, on_device=False)
        if prompt.images:
            soft_tokens = self.soft_tokens_per_photo(len(prompt.images))
            inputs["photo_keys"] = [photo_key(image, soft_tokens) for image in prompt.images]
            # whose they are, for the photo cache
            inputs["photo_owners"] = (request.owner, *request.photo_owners)
        if not prompt.shared_prefix:
            return inputs, ()
        expected = self._prefix_ids(prompt.shared_prefix)
        ids = inputs["input_ids"][0, : len(expected)].tolist()
        # the prompt's own tokens decide: a merge across the border only shortens it
        pairs = enumerate(zip(ids, expected, strict=False))
        common = next((i for i, (a, b) in pairs if a != b), len(ids))
        if common < MIN_SHARED_PREFIX_TOKENS or common >= inputs["input_ids"].shape[1]:
            return inputs, ()
        return inputs, tuple(ids[:common])

    def shared_prefix_tokens(self) -> int:
        """How many tokens every traveller's prompt shares (the system prompt in the chat
        template), thinking on or off."""
        asked = (Request(language="en", question="?", think=think) for think in (False, True))
        prompts = (self.build_prompt(request) for request in asked)
        return max(len(self._prefix_ids(prompt.shared_prefix)) for prompt in prompts)

    def soft_tokens_per_photo(self, num_photos: int) -> int:
        """Each photo's soft-token budget in a prompt with `num_photos` photos (see
        PHOTOS_AT_FULL_BUDGET)."""
        total = PHOTOS_AT_FULL_BUDGET * self.image_soft_tokens
        fitting = [
            budget
            for budget in SUPPORTED_SOFT_TOKENS
            if budget <= self.image_soft_tokens and budget * num_photos <= total
        ]
        return max(fitting, default=min(self.image_soft_tokens, *SUPPORTED_SOFT_TOKENS))

    def build_prompt(self, request: Request) -> Prompt:
        """The request's prompt in the checkpoint's chat template, no special token of this
        tokenizer left in its texts."""
        return build_prompt(request, self.render_chat, self.special_tokens)

    def render_chat(self, messages: list[dict], *, think: bool, add_generation_prompt: bool) -> str:
        """The checkpoint's chat template over `messages` (prompts.ChatRenderer)."""
        return self.tokenizer.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            enable_thinking=think,
        )

    def _token_ids(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer(text, add_special_tokens=False).input_ids)

    def photo_features(self, images: tuple[bytes, ...]) -> dict:
        """The image processor's output for a prompt's normalized photos (its values, made
        with torch: inference.photo_features)."""
        from inference.photo_features import photo_features

        soft_tokens = self.soft_tokens_per_photo(len(images))
        photos = [decode_image(image) for image in images]
        return photo_features(photos, self.image_processor, soft_tokens)

    def _inputs(self, prompt: Prompt, *, on_device: bool) -> dict:
        text = prompt.text
        tensors: dict = {}
        if prompt.images:
            features = self.photo_features(prompt.images)
            pieces = text.split(IMAGE_PLACEHOLDER)
            expanded = [pieces[0]]
            for count, piece in zip(features["num_soft_tokens_per_image"], pieces[1:], strict=True):
                tok = self.tokenizer
                expanded.append(f"{tok.boi_token}{tok.image_token * int(count)}{tok.eoi_token}")
                expanded.append(piece)
            text = "".join(expanded)
            tensors["pixel_values"] = features["pixel_values"].to(self.dtype)
            tensors["image_position_ids"] = features["image_position_ids"]
        encoded = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")
        input_ids = encoded["input_ids"]
        tensors["input_ids"] = input_ids
        tensors["attention_mask"] = encoded["attention_mask"]
        if prompt.images:  # 1 marks image soft tokens (bidirectional attention within an image)
            tensors["mm_token_type_ids"] = (input_ids == self.tokenizer.image_token_id).long()
        if on_device:
            tensors = {key: value.to(self.device) for key, value in tensors.items()}
        return tensors


class _TokenStreamer:
    """generate() streamer: skips the prompt, hands each new token id to a callback."""

    def __init__(self, on_token: Callable[[int], None]) -> None:
        self._on_token = on_token
        self._seen_prompt = False

    def put(self, value) -> None:
        if not self._seen_prompt:
            self._seen_prompt = True
            return
        for token_id in value.reshape(-1).tolist():
            self._on_token(int(token_id))

    def end(self) -> None:
        pass


class _CancelCriteria:
    def __init__(self, is_cancelled: Callable[[], bool], torch) -> None:
        self._is_cancelled = is_cancelled
        self._torch = torch

    def __call__(self, input_ids, scores, **kwargs):
        done = self._is_cancelled()
        return self._torch.full((input_ids.shape[0],), done, dtype=self._torch.bool)


def _weights_progress_events(factory, args: tuple, kwargs: dict):
    """A transformers tqdm hook: its "Loading weights" bar (one step per weight of every
    shard) becomes a `model_weights_progress` event at each tenth; other bars stay as
    they are (disabled)."""
    if kwargs.get("desc") == "Loading weights" and args:
        return _logged_tenths(list(args[0]))
    return factory(*args, **kwargs)


def _logged_tenths(items: list):
    """`items`, logging the share handed out so far at each tenth."""
    started = time.monotonic()
    logged = 0
    for done, item in enumerate(items, start=1):
        yield item  # resumed once transformers has loaded it
        if (tenth := done * 10 // len(items)) > logged:
            logged = tenth
            log.info(
                "model_weights_progress",
                percent=tenth * 10,
                weights=done,
                of=len(items),
                seconds=round(time.monotonic() - started, 1),
            )


def _pick_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _pick_dtype(dtype: str, device):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}[dtype]


def create_engine(config: EngineConfig, runtime=None):
    """The engine the worker drives: continuous batching, or generate() one at a time
    when `runtime` is None."""
    started = time.monotonic()
    base = GemmaEngine.load(config)
    if runtime is None:
        from inference.worker import SequentialEngine

        engine = SequentialEngine(base)
    else:
        from inference.runtime.batch_engine import BatchEngine

        on_gpu = base.device.type == "cuda"
        log.info(
            "batch_engine_starting",
            # the compile and CUDA graph capture on a GPU (engine_setup_seconds in the
            # bench JSONs of docs/benchmarks); warm compile caches shorten it
            expected="one to two minutes for the full-size model" if on_gpu else None,
        )
        engine = BatchEngine(base, runtime)
    log.info("model_ready", seconds=round(time.monotonic() - started, 2))
    return engine
