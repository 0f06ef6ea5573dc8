"""The worker's state as Prometheus gauges, read at scrape time: the bot's /metrics and
`travelbot serve`'s /metrics report the same ones under their own prefixes."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily

from inference.types import InferenceService


def worker_gauges(worker: InferenceService, prefix: str) -> Iterator[GaugeMetricFamily]:
    yield GaugeMetricFamily(
        f"{prefix}_queue_depth", "Requests waiting to start.", value=worker.queue_depth
    )
    yield GaugeMetricFamily(
        f"{prefix}_requests_running",
        "Requests inside the engine (prefilling or decoding).",
        value=worker.num_running,
    )
    yield GaugeMetricFamily(
        f"{prefix}_worker_alive", "1 while the engine thread runs.", value=worker.is_alive
    )
    memory = worker.device_memory_bytes()
    if memory is not None:  # absent, not 0, where there is no GPU
        yield GaugeMetricFamily(
            f"{prefix}_gpu_memory_bytes",
            "GPU memory held by the in-process engine (torch's caching allocator).",
            value=memory,
        )
