"""GenAI metrics (OpenTelemetry semantic conventions for generative AI, Prometheus names)."""

from __future__ import annotations

from prometheus_client import Histogram

LABELS = ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "gen_ai_response_model"]

TOKENS = Histogram(
    "gen_ai_client_token_usage",
    "Tokens used per request, by type (input, output)",
    [*LABELS, "gen_ai_token_type"],
    buckets=(1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864),
)
DURATION = Histogram(
    "gen_ai_client_operation_duration_seconds",
    "Duration of a model call, to its last byte",
    [*LABELS, "error_type"],
    buckets=(0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92),
)
TTFT = Histogram(
    "gen_ai_server_time_to_first_token_seconds",
    "Time from the request to the first token streamed back",
    LABELS,
    buckets=(0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0),
)
