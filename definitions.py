"""The one `Definitions` object: assets, checks, resources, the nightly schedule and the sensors.

Embedded default: artefacts under `$SRL_ARTIFACT_ROOT` (default `.state/artifacts` in the repo),
training as a local subprocess through Dagster Pipes, work files under `$SRL_WORK_ROOT` (default
`.state/work`). Set `SRL_ARTIFACT_ROOT=s3://bucket/prefix` to keep artefacts in S3 instead.
Trace generation uses SmolLM2 in every role unless `SRL_PROPOSER`, `SRL_SOLVER` or `SRL_JUDGE` name
another client spec (`openai:…`, `bedrock:…`, `tier:…`); serving logs are collected from
`$SRL_SERVING_LOGS` (default `.state/serving_logs`).
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import Definitions, EnvVar, load_asset_checks_from_modules, load_assets_from_modules

from assets import (collection, data, distillation, drift, evaluation, generation, monitoring, promotion,
                    routing, serving, training)
from resources.models import CollaborationModels
from resources.monitoring import MonitoringResource
from resources.registry import ModelRegistryResource
from resources.storage import ArtifactStore
from resources.sagemaker import SageMakerTrainingBackend
from resources.serving import ServingResource
from resources.training import LocalTrainingBackend
from sensors.schedules import (
    distillation_job,
    nightly_cascade,
    nightly_cascade_job,
    nightly_cascade_sensor,
    nightly_generation,
    serving_job,
    trace_generation_job,
)
from sensors.drift import serving_drift_sensor, weakness_profile_job
from sensors.serving import serving_deploy_sensor
from sensors.serving_logs import serving_logs_sensor
from sensors.spot import spot_interruption_sensor

STATE = Path(__file__).resolve().parent / ".state"


def _training_backend():
    """Local subprocesses (the embedded default), or SageMaker when SRL_TRAINING_BACKEND=sagemaker
    (then SRL_SAGEMAKER_ROLE, SRL_SAGEMAKER_IMAGE and SRL_SAGEMAKER_S3 say where it trains)."""
    if os.environ.get("SRL_TRAINING_BACKEND") == "sagemaker":
        return SageMakerTrainingBackend(role=EnvVar("SRL_SAGEMAKER_ROLE"),
                                        training_image=EnvVar("SRL_SAGEMAKER_IMAGE"),
                                        s3_prefix=EnvVar("SRL_SAGEMAKER_S3"),
                                        work_root=str(STATE / "sagemaker"))
    return LocalTrainingBackend(work_root=os.environ.get("SRL_WORK_ROOT", str(STATE / "work")))


defs = Definitions(
    assets=load_assets_from_modules([data, generation, collection, training, evaluation, distillation,
                                     promotion, drift, routing, serving, monitoring]),
    asset_checks=load_asset_checks_from_modules([data, training, evaluation, drift]),
    jobs=[nightly_cascade_job, distillation_job, serving_job, trace_generation_job, weakness_profile_job],
    schedules=[nightly_cascade, nightly_generation],
    sensors=[serving_logs_sensor, spot_interruption_sensor, nightly_cascade_sensor, serving_drift_sensor,
             serving_deploy_sensor],
    resources={
        "store": ArtifactStore(root=os.environ.get("SRL_ARTIFACT_ROOT", str(STATE / "artifacts"))),
        "training_backend": _training_backend(),
        # SRL_REGISTRY=sagemaker: SageMaker Model Registry (model package groups srl-<tier>).
        "registry": ModelRegistryResource(backend=os.environ.get("SRL_REGISTRY", "local")),
        # SRL_METRICS=cloudwatch: metrics, dashboards, alarms and the budget in CloudWatch / AWS Budgets.
        "monitoring": MonitoringResource(backend=os.environ.get("SRL_METRICS", "local"),
                                         notify_email=os.environ.get("SRL_ALERT_EMAIL")),
        # SRL_SERVING_KIND=vllm SRL_SERVING_URL=http://host:8000 for a vLLM server started with --enable-lora.
        "serving": ServingResource(kind=os.environ.get("SRL_SERVING_KIND", "embedded"),
                                   url=os.environ.get("SRL_SERVING_URL", "http://127.0.0.1:8000"),
                                   max_lora_rank=int(os.environ.get("SRL_SERVING_MAX_LORA_RANK", "16")),
                                   adapter_dir=str(STATE / "serving" / "adapters")),
        "models": CollaborationModels(**{role: os.environ[f"SRL_{role.upper()}"]
                                         for role in ("proposer", "solver", "judge")
                                         if os.environ.get(f"SRL_{role.upper()}")}),
    },
)
