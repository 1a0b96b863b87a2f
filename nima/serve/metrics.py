"""The server's Prometheus metrics (prometheus-client), in a registry of their own per server.

``GET /metrics`` serves them in the Prometheus text format: requests by status, tokens in and out,
the queue's depth and the running batch's size now, the batch size of each decode step, time to
first token, time between tokens, whole-request time, and rows dropped because their client left.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """Every metric the server keeps; see the module docstring."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("nima_requests", "Requests answered, by HTTP status.", ["status"], registry=r)
        self.prompt_tokens = Counter("nima_prompt_tokens", "Prompt (or source) tokens of requests.", registry=r)
        self.generated_tokens = Counter("nima_generated_tokens", "Tokens generated.", registry=r)
        self.queue_depth = Gauge("nima_queue_depth", "Requests waiting to join the batch.", registry=r)
        self.running_rows = Gauge("nima_running_rows", "Rows in the running decode batch.", registry=r)
        self.batch_size = Histogram(
            "nima_step_batch_size", "Rows decoded by each step.", buckets=BATCH_BUCKETS, registry=r
        )
        self.time_to_first_token = Histogram(
            "nima_time_to_first_token_seconds", "From request to its first token.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.inter_token_latency = Histogram(
            "nima_inter_token_latency_seconds", "Between a row's tokens.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.request_duration = Histogram(
            "nima_request_duration_seconds", "From request to its last byte.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.cancelled_rows = Counter("nima_cancelled_rows", "Rows dropped because their client left.", registry=r)

    def text(self) -> bytes:
        """Everything, in the Prometheus text exposition format."""
        return generate_latest(self.registry)
