"""Prometheus metrics of the stream workers (served on INTENTFLOW_METRICS_PORT when set)."""

from prometheus_client import Counter, Histogram

EVENTS = Counter("intentflow_events_total", "messages handled per stage and outcome", ["stage", "outcome"])
DLQ = Counter("intentflow_dlq_total", "messages sent to the dead-letter topic", ["source", "kind"])
EMITTED = Counter("intentflow_emitted_total", "messages published per destination", ["topic"])
BATCHES = Counter("intentflow_batches_total", "generation batches published", ["priority"])
BATCH_SIZE = Histogram("intentflow_batch_size", "requests per generation batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
STAGE_SECONDS = Histogram("intentflow_stage_batch_seconds", "time to process one micro-batch of a stage", ["stage"],
                          buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5))
FEATURE_ROWS = Counter("intentflow_feature_rows_total", "feature rows pushed per view and store", ["view", "store"])
PUSH_SECONDS = Histogram("intentflow_feature_push_seconds", "time of one batched push", ["store"],
                         buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30))
PUSH_RETRIES = Counter("intentflow_feature_push_retries_total", "failed pushes retried (store down or failing)", ["store"])
FRESHNESS = Histogram("intentflow_freshness_seconds", "feature freshness: pushed online - event time of the edge that caused it",
                      buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 900, 3600, 86400))
