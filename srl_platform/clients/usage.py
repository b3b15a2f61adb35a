"""Per-call accounting of model use: tokens, cost, latency, retries and failures by role and model."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass

from srl_platform.clients.base import Completion, ModelClientError


@dataclass
class _Tally:
    calls: int = 0
    failed_calls: int = 0
    retries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0

    def as_dict(self) -> dict:
        row = asdict(self)
        succeeded = self.calls - self.failed_calls
        row["mean_latency_s"] = self.latency_s / succeeded if succeeded else 0.0
        return row


class UsageLedger:
    """Thread-safe accounting shared by every client of a run.

    `role` says what the model was used for ("teacher", "judge", "policy", ...), so a report can tell
    a teacher's spend from a judge's. `calls` counts successful and failed calls; a failure adds its
    retries but no tokens, cost or latency (it was not billed, and its latency is not a model's).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._total = _Tally()
        self._by_role: dict[str, _Tally] = {}
        self._by_model: dict[str, _Tally] = {}

    def _tallies(self, role: str, model: str) -> tuple[_Tally, ...]:
        return (self._total, self._by_role.setdefault(role, _Tally()),
                self._by_model.setdefault(model, _Tally()))

    def record(self, role: str, completion: Completion) -> None:
        with self._lock:
            for tally in self._tallies(role, completion.model):
                tally.calls += 1
                tally.retries += completion.attempts - 1
                tally.input_tokens += completion.input_tokens
                tally.output_tokens += completion.output_tokens
                tally.cost_usd += completion.cost_usd
                tally.latency_s += completion.latency_s

    def record_failure(self, role: str, model: str, error: ModelClientError) -> None:
        with self._lock:
            for tally in self._tallies(role, model):
                tally.calls += 1
                tally.failed_calls += 1
                tally.retries += max(error.attempts - 1, 0)  # 0 attempts: rejected before any call

    def summary(self) -> dict:
        """{"total": {...}, "by_role": {role: {...}}, "by_model": {model: {...}}}, JSON-serialisable;
        each row has calls, failed_calls, retries, input_tokens, output_tokens, cost_usd, latency_s
        (sum) and mean_latency_s (over successful calls)."""
        with self._lock:
            return {
                "total": self._total.as_dict(),
                "by_role": {role: t.as_dict() for role, t in sorted(self._by_role.items())},
                "by_model": {model: t.as_dict() for model, t in sorted(self._by_model.items())},
            }
