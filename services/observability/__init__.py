"""observability: the platform watching itself (Prometheus, OpenTelemetry). It polls every target's
readiness and /metrics, keeps the samples, computes SLOs with error-budget burn rates, evaluates alert
rules, builds a service map from OTLP traces and sums GenAI metrics from ai's events."""
