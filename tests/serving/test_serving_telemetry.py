"""What `srl serve` records, through the real pipeline: the embedded server (real process, real SmolLM2,
two real LoRAs) with `--router`, `--serving-logs` and `--metrics` answers direct and routed requests;
its serving logs are read back by the real collector (no row quarantined, the adapter version from
`srl_adapter.json`, the router's flags in `extra`) and its metrics by `read_metrics` (per tier, errors
included). The router table is rewritten while the server runs, and the next request uses it.

The table is synthetic (`tests/test_router.py`'s tiers: gold solves the easy arithmetic problems, is
the cheapest per request and is routed to at the default target); a cascade on a problem no 4-token
answer can solve escalates from gold to silver, and keeps the best tier's answer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from serving_support import post, random_lora

from srl_platform.collector import collect, list_log_files, read_collected
from srl_platform.monitoring import read_metrics
from srl_platform.router import RouterSettings
from srl_platform.router_table import TierEvaluation, build_table
from srl_platform.serving_process import embedded_server
from srl_platform.serving_server import ADAPTER_INFO
from srl_platform.storage import LocalArtifactStore
from srl_platform.tasks.arithmetic import generate_traces

TRACES = generate_traces(60, seed=3)
SKILL = {"bronze": 5, "silver": 4, "gold": 2}


def router_json(path: Path, **settings) -> Path:
    evaluations = []
    for tier, skill in SKILL.items():
        results = [{"id": t["id"], "correct": t["meta"]["num_ops"] <= skill} for t in TRACES]
        correct = sum(r["correct"] for r in results)
        evaluations.append(TierEvaluation(tier, {
            "accuracy": correct / len(results), "correct": correct, "problems": len(results),
            "mean_step_reward": 0.3, "solve_tokens_per_second": 80.0, "mean_solve_tokens": 150.0,
            "results": results}, f"test {tier}", True))
    table = build_table(evaluations, TRACES)
    path.write_text(json.dumps({"settings": RouterSettings(**settings).as_dict(), "table": table.as_dict()}))
    return path


def ask(url: str, model: str, question: str, **fields) -> tuple[int, dict]:
    return post(url, "/v1/chat/completions", {"model": model, "max_tokens": 4, "temperature": 0,
                                             "messages": [{"role": "user", "content": question}], **fields})


@pytest.fixture(scope="module")
def served(base_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("telemetry")
    gold = random_lora(base_model_dir, root / "gold", seed=1)
    (gold / ADAPTER_INFO).write_text(json.dumps({"tier": "gold", "version": "v7", "data_version": "abc"}))
    silver = random_lora(base_model_dir, root / "silver", seed=2)  # no srl_adapter.json: the fingerprint
    router = router_json(root / "router.json")
    logs, metrics = root / "serving_logs", root / "artifacts"
    answers = {}
    with embedded_server(base_model_dir, {"gold": gold, "silver": silver},
                         extra_args=["--router", str(router), "--serving-logs", str(logs),
                                     "--metrics", str(metrics)]) as server:
        url = server.url
        answers["direct"] = ask(url, "gold", "What is 2 + 3?", task_family="arithmetic", reference_answer="5")
        answers["routed"] = ask(url, "router", "What is 4 + 4?", task_family="arithmetic", difficulty=2)
        answers["no_family"] = ask(url, "router", "What is 1 + 1?")
        answers["unknown_model"] = ask(url, "platinum", "What is 6 + 1?")
        answers["silver"] = ask(url, "silver", "What is 7 + 1?")
        router_json(router, cascade=True)  # router_settings refreshed while the server runs
        answers["cascade_no_reference"] = ask(url, "router", "What is 8 + 1?", task_family="arithmetic")
        answers["cascade"] = ask(url, "router", "What is 123 * 456 - 789 + 1011 * 12?",
                                 task_family="arithmetic", difficulty=4, reference_answer="67434")
    return {"answers": answers, "logs": logs, "metrics": LocalArtifactStore(metrics), "root": root}


def test_routed_requests_are_answered_by_the_tier_the_router_chose_and_explained(served):
    status, routed = served["answers"]["routed"]
    assert status == 200 and routed["model"] == "gold"
    decision = routed["srl_router"]
    assert decision["tier"] == "gold" and decision["mode"] == "route" and decision["difficulty"] == "2"
    assert {c["tier"] for c in decision["candidates"]} == {"gold", "silver"}  # bronze is not served here
    assert all(c["cleared"] for c in decision["candidates"]) and decision["cost"] > 0

    status, cascade = served["answers"]["cascade"]
    assert status == 200, cascade
    decision = cascade["srl_router"]
    assert decision["mode"] == "cascade" and [a["tier"] for a in decision["attempts"]] == ["gold", "silver"]
    assert decision["escalated"] and not any(a["passed"] for a in decision["attempts"])
    assert cascade["model"] == decision["tier"] == "silver"  # none verified: the best expected quality


def test_bad_routed_requests_name_the_field(served):
    status, body = served["answers"]["no_family"]
    assert status == 400 and body["error"]["param"] == "task_family" and "arithmetic" in body["error"]["message"]
    status, body = served["answers"]["cascade_no_reference"]  # only the reloaded table cascades
    assert status == 400 and body["error"]["param"] == "reference_answer"
    assert "cascades" in body["error"]["message"]
    status, body = served["answers"]["unknown_model"]
    assert status == 404 and body["error"]["param"] == "model"


def test_serving_logs_are_collected_without_a_rejected_row(served, tmp_path):
    files = list_log_files(served["logs"])
    assert files and all(f.name.endswith(".jsonl") for f in files)
    stats = collect(files, tmp_path / "state.sqlite", tmp_path / "collected")
    assert sum(f.quarantined for f in stats.files) == 0
    rows = {row["prompt"]: row for row in read_collected(tmp_path / "collected")}
    assert set(rows) == {"What is 2 + 3?", "What is 4 + 4?", "What is 7 + 1?",
                         "What is 123 * 456 - 789 + 1011 * 12?"}  # answered requests only

    direct = rows["What is 2 + 3?"]
    _, answer = served["answers"]["direct"]
    assert direct["model"] == "gold" and direct["adapter_version"] == "v7"
    assert direct["completion"] == answer["choices"][0]["message"]["content"]
    assert (direct["prompt_tokens"], direct["completion_tokens"]) == (answer["usage"]["prompt_tokens"],
                                                                      answer["usage"]["completion_tokens"])
    assert direct["task_family"] == "arithmetic" and direct["reference_answer"] == "5"
    assert direct["request_id"] == answer["id"] and direct["latency_ms"] > 0 and direct["extra"] == {}

    _, silver = served["answers"]["silver"]
    assert rows["What is 7 + 1?"]["adapter_version"] == silver["system_fingerprint"]
    assert rows["What is 4 + 4?"]["extra"] == {"escalated": False, "attempts": ["gold"]}
    cascade = rows["What is 123 * 456 - 789 + 1011 * 12?"]
    assert cascade["model"] == "silver" and cascade["extra"] == {"escalated": True, "attempts": ["gold", "silver"]}


def test_serving_and_router_metrics_arrive_per_tier(served):
    store = served["metrics"]

    def total(name: str, tier: str) -> float:
        return sum(r["value"] for r in read_metrics(store, name) if r["dimensions"] == {"tier": tier})

    # gold: the direct request, the routed one, the cascade's first attempt; silver: direct + escalation
    assert (total("ServingRequests", "gold"), total("ServingRequests", "silver")) == (3, 2)
    assert total("ServingErrors", "gold") == 0
    # failed: no task_family and the cascade without a reference (model "router"), and "platinum"
    assert total("ServingErrors", "router") == 2 and total("ServingErrors", "unknown") == 1
    assert total("RouterDecisions", "gold") == 1 and total("RouterDecisions", "silver") == 1
    assert total("RouterEscalations", "silver") == 1 and total("RouterEscalations", "gold") == 0
    assert all(r["value"] > 0 for r in read_metrics(store, "ServingLatency"))
