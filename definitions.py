"""The one `Definitions` object: assets, checks, resources and the nightly schedule.

Embedded default: artefacts under `$SRL_ARTIFACT_ROOT` (default `.state/artifacts` in the repo),
training as a local subprocess through Dagster Pipes, work files under `$SRL_WORK_ROOT` (default
`.state/work`). Set `SRL_ARTIFACT_ROOT=s3://bucket/prefix` to keep artefacts in S3 instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import Definitions, load_asset_checks_from_modules, load_assets_from_modules

from assets import data, evaluation, training
from resources.storage import ArtifactStore
from resources.training import LocalTrainingBackend
from sensors.schedules import nightly_cascade, nightly_cascade_job

STATE = Path(__file__).resolve().parent / ".state"

defs = Definitions(
    assets=load_assets_from_modules([data, training, evaluation]),
    asset_checks=load_asset_checks_from_modules([data, training, evaluation]),
    jobs=[nightly_cascade_job],
    schedules=[nightly_cascade],
    resources={
        "store": ArtifactStore(root=os.environ.get("SRL_ARTIFACT_ROOT", str(STATE / "artifacts"))),
        "training_backend": LocalTrainingBackend(
            work_root=os.environ.get("SRL_WORK_ROOT", str(STATE / "work"))),
    },
)
