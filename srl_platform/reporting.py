"""Progress reporting from inside a training process, through Dagster Pipes when Dagster launched it.

Only the tiny `dagster-pipes` package is used (never Dagster itself), so this runs unchanged in a
SageMaker container. Outside a Pipes launch every call is a no-op: stdout and the metrics file are
the record.

Where the launcher put the Pipes context and wants the messages is in its bootstrap variables: a
local launch passes files (the default loader and writer); the SageMaker launcher passes an S3
bucket and key (`PipesS3ContextInjector` / `PipesS3MessageReader`), read and written here with
boto3 (present in SageMaker's images). Under torchrun only global rank 0 reports: every rank would
otherwise write the same numbered message chunks and overwrite each other's.
"""

from __future__ import annotations

import os
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

    def checkpoint(self, step: int, name: str) -> None:
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

    def checkpoint(self, step: int, name: str) -> None:
        """A complete checkpoint is in the local checkpoint directory: the launcher checks that it
        reaches durable storage (S3 on SageMaker)."""
        self.context.report_custom_message({"kind": "checkpoint", "step": step, "name": name})


@contextmanager
def open_reporter() -> Iterator[Reporter]:
    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    params = PipesEnvVarParamsLoader()
    if not params.is_dagster_pipes_process() or os.environ.get("RANK", "0") != "0":
        yield Reporter()
        return
    io = {}
    if "bucket" in params.load_context_params():
        import boto3
        from dagster_pipes import PipesS3ContextLoader, PipesS3MessageWriter

        s3 = boto3.client("s3")
        io = {"context_loader": PipesS3ContextLoader(s3), "message_writer": PipesS3MessageWriter(s3)}
    with open_dagster_pipes(**io) as context:
        yield PipesReporter(context)
