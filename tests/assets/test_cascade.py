"""The distillation cascade through `dagster.materialize` on a temp instance: teacher traces,
distilled adapters (the local training backend, a real `srl train --stage distill` subprocess),
quality reports, registration behind the gate and the serving manifest.

The teacher (bronze) is SmolLM2 with a fresh LoRA (so SmolLM2 itself); a student on the same base
keeps its quality and is approved, while the tiny random model as a zero-step student falls below the
gate: rejected, and the manifest keeps serving the approved version with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dagster import materialize

from assets.distillation import current_distilled, distilled_adapter, teacher_traces
from assets.promotion import quality_report, registered_model, serving_manifest
from resources.registry import ModelRegistryResource
from resources.monitoring import MonitoringResource
from resources.storage import ArtifactStore
from resources.training import LocalTrainingBackend
from srl_platform.monitoring import read_metrics
from srl_platform.registry import LocalModelRegistry
from srl_platform.storage import LocalArtifactStore, put_dir
from srl_platform.tiers import adapter_key

ASSETS = [teacher_traces, distilled_adapter, quality_report, registered_model, serving_manifest]
EVAL = {"max_problems": 3, "max_step_instances": 4, "solve_max_new_tokens": 24, "step_max_new_tokens": 16}


def fresh_lora(base_dir: Path, out: Path, r: int = 4) -> Path:
    """A LoRA adapter as peft initialises it (B = 0: the base model's outputs exactly)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=r, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def cascade(tmp_path_factory, base_model_dir, seeded_store_root):
    """A store with the datasets and a bronze adapter, a work root, an instance, resources."""
    from dagster import DagsterInstance

    root = seeded_store_root
    store = LocalArtifactStore(root)
    put_dir(store, adapter_key("bronze", "rlvr"), fresh_lora(base_model_dir, tmp_path_factory.mktemp("bronze")))
    instance = DagsterInstance.local_temp(str(tmp_path_factory.mktemp("dagster-home")))
    resources = {"store": ArtifactStore(root=str(root)), "registry": ModelRegistryResource(),
                 "monitoring": MonitoringResource(),
                 "training_backend": LocalTrainingBackend(work_root=str(tmp_path_factory.mktemp("work")))}
    yield {"root": root, "store": store, "instance": instance, "resources": resources}
    instance.dispose()


def run(cascade, asset, tier, config=None, **kwargs):
    run_config = {"ops": {asset.key.to_user_string(): {"config": config}}} if config else None
    return materialize(ASSETS, selection=[asset], partition_key=tier, instance=cascade["instance"],
                       resources=cascade["resources"], run_config=run_config, **kwargs)


def meta(result, asset) -> dict:
    (event,) = result.asset_materializations_for_node(asset.key.to_user_string())
    return {key: value.value for key, value in event.metadata.items()}


def check(result, name: str):
    (evaluation,) = [e.asset_check_evaluation_data for e in result.all_events
                     if e.event_type_value == "ASSET_CHECK_EVALUATION"
                     and e.asset_check_evaluation_data.check_name == name]
    return evaluation


def distil_and_judge(cascade, student_base: str, tiny_model_dir: Path):
    distilled = run(cascade, distilled_adapter, "silver",
                    {"base_model": student_base, "max_steps": 0, "max_completion_length": 8})
    assert distilled.success
    report = run(cascade, quality_report, "silver", {**EVAL, "base_model": student_base})
    assert report.success
    registered = run(cascade, registered_model, "silver", raise_on_error=False)
    return meta(distilled, distilled_adapter), meta(report, quality_report), registered


def test_a_student_below_the_gate_is_rejected_and_the_manifest_keeps_the_approved_version(
        cascade, base_model_dir, tiny_model_dir):
    traces = run(cascade, teacher_traces, "silver", {"max_prompts": 4, "max_new_tokens": 24})
    assert traces.success
    traced = meta(traces, teacher_traces)
    assert traced["prompts"] == 4 and traced["teacher_tier"] == "bronze"
    rows = [json.loads(line) for line in cascade["store"].get_bytes("datasets/teacher_traces/silver.jsonl").splitlines()]
    assert len(rows) == 4 and all(r["teacher_adapter_version"] == traced["teacher_adapter_version"] for r in rows)
    assert all(isinstance(r["verified"], bool) and r["completion"] for r in rows)

    # A student on the teacher's own base keeps its quality: approved as v1.
    adapter, report, registered = distil_and_judge(cascade, str(base_model_dir), tiny_model_dir)
    assert adapter["method"] == "on_policy" and adapter["teacher_adapter_version"] == traced["teacher_adapter_version"]
    assert adapter["global_step"] == 0
    assert report["gate_passed"] is True, report["gate"]
    assert registered.success
    assert check(registered, "retains_teacher_quality").passed
    assert meta(registered, registered_model)["status"] == "Approved"
    first = current_distilled(cascade["store"], "silver")

    # The tiny random model as a zero-step student: far below the gate.
    adapter, report, registered = distil_and_judge(cascade, str(tiny_model_dir), tiny_model_dir)
    assert report["gate_passed"] is False and report["gate_ratio"] < 0.9, report["gate"]
    assert "fails the gate" in report["gate"]
    assert report["approved_version"] == "1"  # the approved version's numbers stand beside it
    assert not registered.success  # the blocking check fails the run
    gate = check(registered, "retains_teacher_quality")
    assert not gate.passed and gate.blocking
    assert gate.metadata["ratio"].value == pytest.approx(report["gate_ratio"])
    assert meta(registered, registered_model)["status"] == "Rejected"
    regression = check(registered, "no_regression_vs_approved")
    assert not regression.passed and regression.severity.value == "WARN"
    assert regression.metadata["approved_version"].value == 1

    # The distillation and quality figures reached the metrics sink, per tier and asset.
    recorded = {(r["name"], r["dimensions"]["asset"]) for r in read_metrics(cascade["store"])
                if r["dimensions"]["tier"] == "silver"}
    assert {("DistillationSteps", "distilled_adapter"), ("TrainingCostEstimate", "distilled_adapter"),
            ("QualityAccuracy", "quality_report"), ("EvalTokensPerSecond", "quality_report")} <= recorded

    registry = LocalModelRegistry.in_store(cascade["store"])
    v1, v2 = registry.versions("silver")
    assert (v1.status, v2.status) == ("Approved", "Rejected")
    assert v1.adapter_uri == first["uri"] and "fails the gate" in v2.decision_reason
    assert cascade["store"].exists(first["key"] + "/adapter_model.safetensors")  # v1 stays servable

    manifest = materialize(ASSETS, selection=[serving_manifest], instance=cascade["instance"],
                           resources=cascade["resources"])
    assert manifest.success
    written = json.loads(cascade["store"].get_bytes("serving/manifest.json"))["tiers"]
    silver = written["silver"]
    assert (silver["serving_version"], silver["newest_version"], silver["stale"]) == (1, 2, True)
    assert silver["adapter_uri"] == v1.adapter_uri
    assert "v2 was rejected" in silver["reason"] and "serving the last approved v1" in silver["reason"]
    assert written["gold"]["serving_version"] is None and "no version registered" in written["gold"]["reason"]
    assert meta(manifest, serving_manifest)["stale_tiers"] == "silver"


def test_gold_learns_from_silver_and_refuses_stale_traces(cascade, base_model_dir, tiny_model_dir):
    """Gold's teacher is silver's newest distilled adapter (the tiny student rejected above)."""
    traces = run(cascade, teacher_traces, "gold", {"max_prompts": 2, "max_new_tokens": 8,
                                                    "teacher_base_model": str(tiny_model_dir)})
    assert traces.success
    silver = current_distilled(cascade["store"], "silver")
    assert meta(traces, teacher_traces)["teacher_adapter_version"] == silver["version"]

    distilled = run(cascade, distilled_adapter, "gold",
                    {"base_model": str(tiny_model_dir), "teacher_base_model": str(tiny_model_dir),
                     "max_steps": 2, "prompts_per_step": 1, "max_completion_length": 8})
    assert distilled.success
    gold = meta(distilled, distilled_adapter)
    assert gold["global_step"] == 2 and gold["teacher_tier"] == "silver"
    assert gold["teacher_adapter_version"] == silver["version"]

    # Silver changes under gold's traces: gold's next distillation refuses them.
    run(cascade, distilled_adapter, "silver", {"base_model": str(tiny_model_dir), "max_steps": 1,
                                               "prompts_per_step": 1, "max_completion_length": 8})
    stale = run(cascade, distilled_adapter, "gold",
                {"base_model": str(tiny_model_dir), "teacher_base_model": str(tiny_model_dir),
                 "max_steps": 2, "prompts_per_step": 1, "max_completion_length": 8}, raise_on_error=False)
    assert not stale.success
    failure = [e for e in stale.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "materialize teacher_traces[gold] again" in failure.step_failure_data.error.message
