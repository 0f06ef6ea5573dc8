"""Glue for `travelbot serve`: settings in, inference.openai_server out."""

from __future__ import annotations

import argparse
import asyncio
import sys

from bot.__main__ import create_worker
from bot.logging import configure_logging
from bot.settings import Settings
from inference import ImageLimits, ModelNotFound


def serve_engine(settings: Settings, args: argparse.Namespace) -> int:
    from inference.openai_server import ServerConfig, serve

    api_key = settings.serve_api_key.get_secret_value() if settings.serve_api_key else None
    secrets = (api_key or "",)
    configure_logging(log_format=settings.log_format, level=settings.log_level, secrets=secrets)
    config = ServerConfig(
        model_name=args.served_model_name or settings.openai_model,
        api_key=api_key,
        default_max_tokens=settings.max_new_tokens,
        image_limits=ImageLimits(
            max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
        ),
    )
    try:
        asyncio.run(serve(create_worker(settings), config, host=args.host, port=args.port))
    except ModelNotFound as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0
