"""Glue for `travelbot serve`: settings in, inference.openai_server out."""

from __future__ import annotations

import argparse
import asyncio
import sys

from bot.__main__ import create_worker
from bot.logging import configure_logging
from bot.settings import Settings, StartupError
from inference import ImageLimits, ModelNotFound

# characters of prompt text per token of max_seq_len: a Gemma token is ~4 characters of
# prose; 16 leaves room for text that tokenizes sparsely (runs of spaces, repeated marks)
CHARS_PER_TOKEN = 16


def serve_engine(settings: Settings, args: argparse.Namespace) -> int:
    from inference.openai_server import ServerConfig, is_loopback, serve
    from inference.openai_wire import RequestLimits

    secret = settings.serve_api_key.get_secret_value() if settings.serve_api_key else ""
    api_key = secret if secret.strip() else None  # empty or blank: no key at all
    if api_key is None and not is_loopback(args.host) and not args.insecure_no_auth:
        print(
            f"refusing to serve on {args.host!r} without TRAVELBOT_SERVE_API_KEY: anyone who "
            "reaches the port could use the model. Set the key, serve on 127.0.0.1, or pass "
            "--insecure-no-auth.",
            file=sys.stderr,
        )
        return 2
    configure_logging(
        log_format=settings.log_format, level=settings.log_level, secrets=(api_key or "",)
    )
    prompt_chars = CHARS_PER_TOKEN * settings.max_seq_len
    config = ServerConfig(
        model_name=args.served_model_name or settings.openai_model,
        api_key=api_key,
        default_max_tokens=settings.max_new_tokens,
        limits=RequestLimits(
            max_message_chars=prompt_chars // 2,
            max_total_chars=prompt_chars,
            image=ImageLimits(
                max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
            ),
        ),
    )
    try:
        asyncio.run(serve(create_worker(settings), config, host=args.host, port=args.port))
    except (ModelNotFound, StartupError) as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0
