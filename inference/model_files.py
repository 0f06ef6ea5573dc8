"""Where the model's files are: a local folder, or a Hugging Face repo id already in the
local cache. Nothing is ever downloaded.

A folder that lacks a file the engine needs is refused here, at start, with the names of
what is missing, instead of deep inside transformers after minutes of loading. No torch
or transformers here: the bot checks its settings with this before the engine thread.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

REPO_ID = "google/gemma-4-26B-A4B-it"


class ModelNotFound(Exception):
    """No usable model where the settings point; the message says what to do."""


HOW_TO_GET_A_MODEL = (
    "Point TRAVELBOT_MODEL_PATH (or --model) at a local folder holding "
    f"{REPO_ID} (config.json, model*.safetensors, tokenizer.json, tokenizer_config.json, "
    "processor_config.json or preprocessor_config.json, chat_template.jinja), "
    f"or set it to the repo id {REPO_ID} once the model is in the local Hugging Face cache "
    f"(`hf download {REPO_ID}`, or `huggingface-cli download` with an older huggingface_hub, "
    "on a machine with network; HF_HUB_CACHE or HF_HOME say where the cache is), "
    "or write the tiny test checkpoint with `travelbot tiny-checkpoint DIR` and use that."
)


def check_model_dir(model: str | os.PathLike | None) -> Path:
    """The folder the model loads from: `model` itself when it is a folder (it wins over a
    repo id spelled the same), else the snapshot of the Hugging Face repo id `model` in the
    local cache. Raises ModelNotFound naming what is missing."""
    if model is None or not str(model).strip():
        raise ModelNotFound(f"No model configured. {HOW_TO_GET_A_MODEL}")
    folder = Path(model).expanduser()
    if folder.is_dir():
        where = f"The model folder {folder}"
    elif _is_repo_id(str(model)):
        folder = _cached_snapshot(str(model))
        where = f"The cached snapshot of {model} ({folder})"
    else:
        raise ModelNotFound(f"No model folder at {folder}. {HOW_TO_GET_A_MODEL}")
    if missing := missing_files(folder):
        raise ModelNotFound(f"{where} lacks {'; '.join(missing)}. {HOW_TO_GET_A_MODEL}")
    return folder


def missing_files(folder: Path) -> list[str]:
    """The files the engine loads that `folder` lacks (the chat template is checked where
    the prompt is built). A dangling link, as an interrupted download leaves, is missing."""
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    missing += _missing_weights(folder)
    missing += [name for name in ("tokenizer.json", "tokenizer_config.json")
                if not (folder / name).is_file()]  # fmt: skip
    if not _has_image_processor_config(folder):
        missing.append(
            "the image processor config (processor_config.json with an image_processor "
            "entry, or preprocessor_config.json)"
        )
    return missing


def hub_cache_dir() -> Path:
    """The Hugging Face cache folder, chosen as huggingface_hub chooses it, but from the
    environment as it is now: huggingface_hub reads it once, when first imported."""
    env = os.environ
    home = env.get("HF_HOME") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface"
    )
    cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return Path(os.path.expandvars(cache)).expanduser()


def _is_repo_id(text: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return "/" in text  # "namespace/name": a bare word is a mistyped folder more likely


def _cached_snapshot(repo_id: str) -> Path:
    """The snapshot folder of `repo_id`'s main revision in the cache, found offline."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = hub_cache_dir()
    try:  # local_files_only: a cache lookup, never a network call
        return Path(snapshot_download(repo_id, cache_dir=cache, local_files_only=True))
    except LocalEntryNotFoundError as exc:  # also a snapshot the cache knows to be incomplete
        raise ModelNotFound(
            f"{repo_id} is not a folder here, and the Hugging Face cache {cache} holds no "
            "complete snapshot of it (nothing is ever downloaded). Download it on a machine "
            f"with network, `HF_HUB_CACHE={cache} hf download {repo_id}` (`huggingface-cli "
            "download` with an older huggingface_hub), and copy that cache here; or point "
            "TRAVELBOT_MODEL_PATH (or --model) at a folder holding the model."
        ) from exc


def _missing_weights(folder: Path) -> list[str]:
    # transformers takes model.safetensors first, else the index and the shards it names
    if (folder / "model.safetensors").is_file():
        return []
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return ["the weights (model.safetensors, or model.safetensors.index.json and its shards)"]
    try:
        shards = set(json.loads(index.read_text())["weight_map"].values())
    except (ValueError, KeyError, TypeError, AttributeError):
        return ["a readable model.safetensors.index.json (its weight_map)"]
    return sorted(shard for shard in shards if not (folder / shard).is_file())


def _has_image_processor_config(folder: Path) -> bool:
    # transformers' image processors read the nested entry of processor_config.json
    # (transformers 5's layout) first, else preprocessor_config.json
    try:
        nested = json.loads((folder / "processor_config.json").read_text()).get("image_processor")
    except (OSError, ValueError, AttributeError):
        nested = None
    return isinstance(nested, dict) or (folder / "preprocessor_config.json").is_file()
