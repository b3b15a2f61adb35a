"""`serving_drift_sensor`: a served tier whose pass rate halves gets one failed check evaluation, one
retrain request and one weakness-profile update; stable traffic gets none of them."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import AssetCheckEvaluation, DagsterInstance, build_sensor_context, materialize

from assets.drift import baseline_key, serving_weakness_profile
from assets.generation import SERVING_PROFILE_KEY, _weakness_profile
from resources.storage import ArtifactStore
from sensors.drift import serving_drift_sensor
from srl_platform import drift
from srl_platform.serving import MANIFEST_KEY
from srl_platform.storage import LocalArtifactStore
from srl_platform.tasks import get_family

QUESTIONS = {  # one story per template the arithmetic family reads from a prompt
    "shopping": "Ana bought 3 packs of pens at a price of 4 dollars each. How much did she pay?",
    "travel": "A car drove 3 trips of 4 kilometres each. How far did it drive?",
}


def _rows(n: int, passing: float, start: int, template_failing: str | None = None) -> list[dict]:
    """`n` served rows of gold v1 (answer 12); the first `passing` share answer right. With
    `template_failing`, the wrong answers are all on that template's questions."""
    rows = []
    right = round(n * passing)
    for i in range(n):
        ok = i < right
        template = (template_failing if not ok and template_failing else
                    ("shopping", "travel")[i % 2])
        rows.append({
            "prompt": QUESTIONS[template], "completion": f"3 * 4 = 12. The answer is {12 if ok else 13}.",
            "model": "gold", "adapter_version": "v1", "completion_tokens": 12,
            "timestamp": f"2026-12-02T10:{(start + i) // 60:02d}:{(start + i) % 60:02d}Z",
            "task_family": "arithmetic", "reference_answer": "12", "extra": None,
            "source_file": "serving.jsonl", "line": start + i + 1, "row_digest": f"{start + i:064x}",
        })
    return rows


def _store(tmp_path, rows) -> LocalArtifactStore:
    store = LocalArtifactStore(tmp_path)
    manifest = {"tiers": {"gold": {"tier": "gold", "serving_version": 1},
                          "silver": {"tier": "silver", "serving_version": None}}}
    store.put_bytes(MANIFEST_KEY, json.dumps(manifest).encode())
    _write_part(store, "a", rows)
    return store


def _write_part(store, name, rows):
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    store.put_bytes(f"collected/parts/{name}.parquet", buffer.getvalue())


def _tick(instance, root, cursor=None):
    with build_sensor_context(instance=instance, cursor=cursor,
                              resources={"store": ArtifactStore(root=str(root))}) as context:
        result = serving_drift_sensor(context)
    return result


def test_pass_rate_halving_gives_one_check_one_retrain_one_profile_update(tmp_path):
    root = tmp_path / "artifacts"
    store = _store(root, _rows(50, 0.8, 0) + _rows(50, 0.4, 50, template_failing="travel"))
    with DagsterInstance.ephemeral() as instance:
        result = _tick(instance, root)
        checks = [e for e in result.asset_events if isinstance(e, AssetCheckEvaluation)]
        assert len(checks) == 1
        [check] = checks
        assert (check.check_name, check.passed, check.partition) == ("no_serving_drift", False, "gold")
        assert check.metadata["drifted"].value == "pass_rate"
        assert "pass_rate 0.8 → 0.4" in check.description
        jobs = sorted((r.job_name, r.partition_key) for r in result.run_requests)
        assert jobs == [("distillation_job", "gold"), ("weakness_profile_job", None)]
        # The baseline is frozen: later traffic never moves it.
        assert json.loads(store.get_bytes(baseline_key("gold", 1)))["pass_rate"] == pytest.approx(0.8)

        # The same window again: nothing new to say.
        again = _tick(instance, root, cursor=result.cursor)
        assert not again.run_requests and not again.asset_events
        assert "no new traffic" in again.skip_reason.skip_message

        # The weakness-profile run the sensor asked for: travel stories are where gold now fails.
        [weakness] = [r for r in result.run_requests if r.job_name == "weakness_profile_job"]
        run = materialize([serving_weakness_profile], instance=instance,
                          resources={"store": ArtifactStore(root=str(root))},
                          run_config=weakness.run_config)
        assert run.success
    saved = json.loads(store.get_bytes(SERVING_PROFILE_KEY))
    rates = saved["weakness_profile"]["error_rates"]["template"]
    assert rates["travel"] > 0.5 and rates["shopping"] == 0.0
    # ...and the proposer now aims with it.
    profile = _weakness_profile(store, None, get_family("arithmetic"), lambda msg: None)
    weights = profile.weights("template", ["shopping", "travel"], focus=1.0)
    assert weights["travel"] == 1.0


def test_stable_traffic_produces_nothing(tmp_path):
    root = tmp_path / "artifacts"
    store = _store(root, _rows(50, 0.8, 0) + _rows(50, 0.76, 50))
    with DagsterInstance.ephemeral() as instance:
        result = _tick(instance, root)
    assert not result.run_requests and not result.asset_events
    assert "gold v1: no drift" in result.skip_reason.skip_message
    assert not store.exists(SERVING_PROFILE_KEY)


def test_no_comparison_before_the_baseline_is_complete(tmp_path):
    root = tmp_path / "artifacts"
    _store(root, _rows(30, 0.8, 0))
    with DagsterInstance.ephemeral() as instance:
        result = _tick(instance, root)
    assert not result.run_requests
    assert "gold: no served traffic beyond its baseline yet" in result.skip_reason.skip_message


def test_detect_judges_each_metric_only_with_enough_rows():
    settings = drift.DriftSettings(min_rows=20)
    base = drift.window_stats(_rows(50, 0.8, 0))
    few = drift.window_stats(_rows(10, 0.0, 50))
    result = drift.detect(base, few, settings)
    assert result["drifted"] == [] and not result["metrics"]["pass_rate"]["judged"]
    refusing = [dict(r, completion="I'm sorry, I can't help with that.") for r in _rows(30, 1.0, 50)]
    result = drift.detect(base, drift.window_stats(refusing), settings)
    assert "refusal_rate" in result["drifted"] and "pass_rate" in result["drifted"]
    with pytest.raises(ValueError, match=r"DriftSettings.pass_rate_drop=nan"):
        drift.DriftSettings(pass_rate_drop=float("nan"))
