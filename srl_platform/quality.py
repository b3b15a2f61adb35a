"""Quality reports and the promotion gate: a distilled student against its teacher.

Both are evaluated on the same held-out problems the student never trained on (`srl_platform.evaluate`,
greedy, bf16, same batch): accuracy, mean step reward, format violations, output length and generated
tokens per second. The gate compares one metric as a student/teacher ratio with the tier's
`min_quality_ratio`:

- the metric is accuracy, unless the teacher solved fewer than `min_teacher_correct` problems: a
  ratio over a zero accuracy says nothing, so the gate then uses the mean step reward (dense, never
  zero on a trained model) and says so in the report. On the embedded default (SmolLM2-135M, which
  solves almost nothing) that is the usual case.
- the previous approved version's numbers stand beside the candidate's, for the regression warning.

Pure functions of the evaluation reports: no I/O but the chart's PNG bytes.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from typing import Literal

GateMetric = Literal["accuracy", "mean_step_reward"]
COMPARED = (
    ("accuracy", "accuracy", "higher"),
    ("mean_step_reward", "mean step reward", "higher"),
    ("format_violation_rate", "format-violation rate", "lower"),
    ("mean_solve_tokens", "mean output tokens", "—"),
    ("solve_tokens_per_second", "tokens/s (batch, bf16)", "higher"),
)


@dataclass(frozen=True)
class QualityGate:
    """How a distilled student is judged against its teacher."""

    metric: GateMetric = "accuracy"
    """What the student/teacher ratio is taken of."""
    fallback_metric: GateMetric = "mean_step_reward"
    """Used instead when the teacher solved fewer than `min_teacher_correct` held-out problems."""
    min_teacher_correct: int = 1
    regression_tolerance: float = 0.0
    """`no_regression_vs_approved` warns when the candidate's gate metric is below the approved
    version's by more than this."""

    def as_dict(self) -> dict:
        return asdict(self)


def build_report(tier: str, teacher_tier: str, student: dict, teacher: dict, min_ratio: float,
                 gate: QualityGate = QualityGate(), approved: dict | None = None) -> dict:
    """The quality report: both evaluations, the gate's verdict, the approved version's numbers.
    `approved` is the previous approved version's report (None when there is none)."""
    metric, why = gate.metric, f"{gate.metric} ratio"
    if gate.metric == "accuracy" and teacher["correct"] < gate.min_teacher_correct:
        metric = gate.fallback_metric
        why = (f"the teacher solved {teacher['correct']} of {teacher['problems']} held-out problems "
               f"(< {gate.min_teacher_correct}): an accuracy ratio would say nothing, so the gate "
               f"compares {metric}")
    ratio = _ratio(student[metric], teacher[metric])
    passed = ratio is not None and ratio >= min_ratio
    previous = approved["student"] if approved else None
    regression = None
    if previous is not None:
        regression = {
            "metric": metric, "candidate": student[metric], "approved": previous[metric],
            "approved_version": approved.get("version"),
            "regressed": student[metric] < previous[metric] - gate.regression_tolerance,
        }
    return {
        "tier": tier,
        "teacher_tier": teacher_tier,
        "student": student,
        "teacher": teacher,
        "approved": previous,
        "approved_version": approved.get("version") if approved else None,
        "accuracy_ratio": _ratio(student["accuracy"], teacher["accuracy"]),
        "step_reward_ratio": _ratio(student["mean_step_reward"], teacher["mean_step_reward"]),
        "speed_ratio": _ratio(student["solve_tokens_per_second"], teacher["solve_tokens_per_second"]),
        # The gate's settings first: its `metric` is the configured one, the one used may be the fallback.
        "gate": {**gate.as_dict(), "metric": metric, "why": why, "ratio": ratio, "min_ratio": min_ratio,
                 "passed": passed},
        "regression": regression,
    }


def gate_reason(report: dict) -> str:
    """One sentence saying why the student passed or failed the gate."""
    gate = report["gate"]
    ratio = "undefined (teacher scored 0)" if gate["ratio"] is None else f"{gate['ratio']:.3f}"
    verdict = "passes" if gate["passed"] else "fails"
    return (f"{report['tier']} student {verdict} the gate: {gate['metric']} student/teacher ratio {ratio} "
            f"vs min {gate['min_ratio']:.3f} ({report['student'][gate['metric']]:.4f} vs "
            f"{report['teacher'][gate['metric']]:.4f} for {report['teacher_tier']})")


def comparison_table(report: dict) -> str:
    """Markdown: each metric for student, teacher, their ratio and the approved version."""
    student, teacher, approved = report["student"], report["teacher"], report["approved"]
    head = f"| metric | {report['tier']} (student) | {report['teacher_tier']} (teacher) | ratio | approved |"
    lines = [head, "|---|---:|---:|---:|---:|"]
    for name, label, _ in COMPARED:
        ratio = _ratio(student[name], teacher[name])
        marker = " (gate)" if name == report["gate"]["metric"] else ""
        lines.append(f"| {label}{marker} | {_fmt(student[name])} | {_fmt(teacher[name])} | "
                     f"{_fmt(ratio)} | {_fmt(approved[name]) if approved else '–'} |")
    return "\n".join(lines)


def chart_png(report: dict) -> bytes:
    """Grouped bars of the quality metrics (student, teacher, approved) and tokens/s, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    quality = [("accuracy", "accuracy"), ("mean_step_reward", "step reward"),
               ("format_violation_rate", "format viol.")]
    series = [(f"{report['tier']} (student)", report["student"]),
              (f"{report['teacher_tier']} (teacher)", report["teacher"])]
    if report["approved"]:
        series.append((f"approved v{report['approved_version']}", report["approved"]))
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3), gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series):
        xs = [j + i * width for j in range(len(quality))]
        left.bar(xs, [_num(values[name]) for name, _ in quality], width, label=label)
        right.bar([i], [_num(values["solve_tokens_per_second"])], 0.6, label=label)
    left.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(quality))],
                    [label for _, label in quality])
    left.set_title(f"{report['tier']} vs {report['teacher_tier']}: gate {report['gate']['metric']} "
                   f"{'passed' if report['gate']['passed'] else 'failed'}", fontsize=9)
    left.legend(fontsize=7)
    right.set_xticks([])
    right.set_title("tokens/s", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


def _ratio(student: float, teacher: float) -> float | None:
    # A teacher at 0 (or below: a step reward under the strict format rule) gives no ratio.
    if teacher is None or student is None or _nan(teacher) or _nan(student) or teacher <= 0:
        return None
    return float(student) / float(teacher)


def _nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _num(value) -> float:
    return 0.0 if value is None or _nan(value) else float(value)


def _fmt(value) -> str:
    if value is None or _nan(value):
        return "–"
    return f"{value:.4f}"
