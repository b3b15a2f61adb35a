"""What `srl serve` records about the traffic it answers: serving logs and metrics.

- **Serving logs**: one row per answered request, in the collector's format
  (`srl_platform.collector_rows`): prompt (the last user message), completion, model (the served
  name: the tier), adapter_version ("v3" for an adapter `served_adapters` deployed, read from its
  `srl_adapter.json`; the weights' fingerprint otherwise), latency_ms, prompt_tokens,
  completion_tokens, request_id, timestamp, and the request's task_family and reference_answer when
  it sent them; a routed request adds `escalated` and `attempts` (the tiers tried), which the drift
  sensor reads. Rows are buffered and written as whole new files (`{date}/serve-{time}-{pid}-{n}.jsonl`)
  every `FLUSH_S` seconds, every `FLUSH_ROWS` rows and at shutdown, so `serving_logs_sensor` never
  sees a half-written file.
- **Metrics** (`srl_platform.monitoring`): ServingRequests, ServingErrors, ServingLatency and
  ServingTokens per tier for every request (a routed request counts once per tier it tried, since each
  attempt costs), and RouterDecisions, RouterEscalations and RouterExpectedCost per routed request.

A write that fails (the store or CloudWatch unreachable) is reported on stderr and retried at the
next flush; serving never waits for it or fails because of it.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Mapping
from datetime import datetime, timezone

from srl_platform.monitoring import MetricsSink, record_router_decision, record_serving_request
from srl_platform.storage import ArtifactStoreClient

FLUSH_S = 30.0
FLUSH_ROWS = 1000
MAX_PENDING_ROWS = 100_000
"""Rows kept while the log store is unreachable; the oldest are dropped (and counted) past this."""
UNKNOWN_TIER = "unknown"
"""The `tier` dimension of a failed request that named no served model."""


class ServingTelemetry:
    """Buffers serving-log rows and metrics from the server's request threads and writes them."""

    def __init__(self, logs: ArtifactStoreClient | None = None, sink: MetricsSink | None = None,
                 flush_s: float = FLUSH_S, flush_rows: int = FLUSH_ROWS) -> None:
        self.logs, self.sink, self.flush_s, self.flush_rows = logs, sink, flush_s, flush_rows
        self._rows: list[dict] = []
        self._files = 0
        self.dropped = 0
        self._lock = threading.Lock()  # guards _rows and the sink's pending datapoints
        self._flushing = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.logs is not None or self.sink is not None

    def answered(self, row: Mapping, tiers_tried: Mapping[str, tuple[float, int]], decision=None) -> None:
        """A request answered: its serving-log row, each tier's (latency_ms, tokens), the router's
        decision for a routed request."""
        with self._lock:
            if self.logs is not None:
                self._rows.append(dict(row))
                if len(self._rows) > MAX_PENDING_ROWS:
                    self.dropped += len(self._rows) - MAX_PENDING_ROWS
                    del self._rows[: len(self._rows) - MAX_PENDING_ROWS]
            if self.sink is not None:
                for tier, (latency_ms, tokens) in tiers_tried.items():
                    record_serving_request(self.sink, tier, latency_ms, tokens, error=False)
                if decision is not None:
                    record_router_decision(self.sink, decision)
            full = len(self._rows) >= self.flush_rows
        if full:
            threading.Thread(target=self.flush, daemon=True).start()

    def failed(self, tier: str, latency_ms: float) -> None:
        """A request answered with an error status."""
        if self.sink is not None:
            with self._lock:
                record_serving_request(self.sink, tier, latency_ms, 0, error=True)

    def flush(self) -> None:
        """Write the buffered rows as one new log file and send the pending metrics."""
        with self._flushing:
            with self._lock:
                rows, self._rows = self._rows, []
            if rows:
                now = datetime.now(timezone.utc)
                self._files += 1
                key = f"{now:%Y-%m-%d}/serve-{now:%H%M%S%f}-{os.getpid()}-{self._files:06d}.jsonl"
                body = "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)
                try:
                    self.logs.put_bytes(key, body.encode())
                except Exception as error:  # kept for the next flush
                    _warn(f"writing {len(rows)} serving-log rows to {self.logs.uri(key)} failed: {error}")
                    with self._lock:
                        self._rows[:0] = rows
            if self.sink is not None:
                with self._lock:
                    try:
                        self.sink.flush()
                    except Exception as error:  # the sink keeps its pending datapoints
                        _warn(f"sending serving metrics failed: {type(error).__name__}: {error}")

    def start(self) -> None:
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="serving-telemetry", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()

    def close(self) -> None:
        """Stop the timer and write what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.flush()
        if self.dropped:
            _warn(f"{self.dropped} serving-log rows were dropped while the log store was unreachable")


def log_row(prompt: str, answer: Mapping, adapter_version: str, latency_ms: float, body: Mapping) -> dict:
    """The serving-log row of one answered chat completion (`answer`, the API's answer body)."""
    usage = answer["usage"]
    row = {"prompt": prompt, "completion": answer["choices"][0]["message"]["content"], "model": answer["model"],
           "adapter_version": adapter_version, "latency_ms": round(latency_ms, 3),
           "prompt_tokens": usage["prompt_tokens"], "completion_tokens": usage["completion_tokens"],
           "request_id": answer["id"],
           "timestamp": datetime.fromtimestamp(answer["created"], timezone.utc).isoformat()}
    for field in ("task_family", "reference_answer"):
        if isinstance(body.get(field), str):
            row[field] = body[field]
    return row


def _warn(message: str) -> None:
    print(f"srl serve: warning: {message}", file=sys.stderr, flush=True)
