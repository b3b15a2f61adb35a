"""Progress reporting from inside a training process, through Dagster Pipes when Dagster launched it.

Only the tiny `dagster-pipes` package is used (never Dagster itself), so this runs unchanged in a
SageMaker container. Outside a Pipes launch every call is a no-op: stdout and the metrics file are
the record.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class Reporter:
    """No-op reporter for runs that Dagster did not launch."""

    def log(self, message: str) -> None:
        pass

    def metrics(self, row: dict) -> None:
        pass

    def summary(self, summary: dict) -> None:
        pass


class PipesReporter(Reporter):
    """Streams logs, per-step metrics and the final summary to the Dagster run."""

    def __init__(self, context) -> None:
        self.context = context

    def log(self, message: str) -> None:
        self.context.log.info(message)

    def metrics(self, row: dict) -> None:
        self.context.report_custom_message({"kind": "metrics", **row})

    def summary(self, summary: dict) -> None:
        self.context.report_custom_message({"kind": "summary", **summary})


@contextmanager
def open_reporter() -> Iterator[Reporter]:
    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    if not PipesEnvVarParamsLoader().is_dagster_pipes_process():
        yield Reporter()
        return
    with open_dagster_pipes() as context:
        yield PipesReporter(context)
