"""Prometheus metrics: answer latencies, tokens and errors, plus the worker's state per scrape."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from inference import InferenceService, worker_gauges

disable_created_metrics()  # no *_created series: they double the output and nobody reads them

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FIRST_TOKEN_BUCKETS_S = (0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60)
ANSWER_BUCKETS_S = (0.5, 1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300)
# InferenceError kinds (inference/types.py, bot/answering.py), exported at 0 from the start
ERROR_KINDS = ("queue_full", "worker_stopped", "engine_error", "timeout")


class Metrics:
    """One registry per bot (not prometheus_client's global one), so tests can run many bots."""

    def __init__(self, worker: InferenceService) -> None:
        self.registry = CollectorRegistry()
        self.first_token_seconds = Histogram(
            "travelbot_first_token_seconds",
            "Time from taking a job to the first answer text streamed to the chat.",
            buckets=FIRST_TOKEN_BUCKETS_S,
            registry=self.registry,
        )
        self.answer_seconds = Histogram(
            "travelbot_answer_seconds",
            "Time from taking a job to the delivered answer.",
            buckets=ANSWER_BUCKETS_S,
            registry=self.registry,
        )
        self.answers = Counter("travelbot_answers", "Answers delivered.", registry=self.registry)
        self.output_tokens = Counter(
            "travelbot_output_tokens",
            "Tokens generated for delivered answers (rate() gives tokens/s).",
            registry=self.registry,
        )
        self.errors = Counter(
            "travelbot_errors",
            "Requests that failed, by kind (queue_full, timeout, engine_error, ...).",
            ["kind"],
            registry=self.registry,
        )
        for kind in ERROR_KINDS:
            self.errors.labels(kind=kind)
        self.registry.register(WorkerCollector(worker))

    def record_answer(
        self, *, latency_s: float, first_token_s: float | None, num_output_tokens: int
    ) -> None:
        self.answers.inc()
        self.answer_seconds.observe(latency_s)
        if first_token_s is not None:
            self.first_token_seconds.observe(first_token_s)
        self.output_tokens.inc(num_output_tokens)

    def record_failure(self, kind: str) -> None:
        self.errors.labels(kind=kind).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class WorkerCollector(Collector):
    """Gauges read from the worker at scrape time."""

    def __init__(self, worker: InferenceService) -> None:
        self.worker = worker

    def describe(self) -> list:
        return []  # the registry need not call collect() at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from worker_gauges(self.worker, "travelbot")
