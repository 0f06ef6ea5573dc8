"""The batching engine: many requests share each decode step of one model.

scheduler (which sequences run) → model_runner (prefill, decode) → sampler → streaming.
Import `inference.runtime.batch_engine` only where torch may load.
"""

from inference.runtime.config import RuntimeConfig

__all__ = ["RuntimeConfig"]
