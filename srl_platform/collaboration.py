"""Three models writing new expert traces together: a proposer, a solver and a verifier.

1. The **proposer** writes new problems of a task family by varying an example. Each proposal is
   aimed at a target (one value per weakness dimension, drawn from the weakness profile) and
   varies the example closest to that target, so generation concentrates where the latest
   evaluation failed.
2. The **solver** (the strongest model available: the bronze tier, or an API model) writes a
   step-by-step solution, `solver_attempts` samples per problem, after one worked example in the
   numbered step format (the proposal's closest example).
3. The **verifier** accepts an attempt only if it reads as numbered steps and passes the family's
   programmatic verifier against the proposer's reference (answer or tests); an optional **judge**
   model scores step quality and can veto low scores.

Only verified trajectories become traces; everything else is returned as a reject with its stage,
reason and every attempt's text, so nothing is lost. Each trace records the models that produced
it (`meta.lineage`), down to the row.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from dataclasses import dataclass, field, replace

from srl_platform import prompts
from srl_platform.clients import Completion, GenerationParams, ModelClient, ModelClientError, UsageLedger
from srl_platform.steps import StepParseError, parse_steps
from srl_platform.tasks import TaskFamily
from srl_platform.traces import assign_split, normalize_question
from srl_platform.weakness import WeaknessProfile, plan_targets


@dataclass(frozen=True)
class CollaborationConfig:
    """How many problems to propose and how the three roles generate."""

    proposals: int = 16
    """Problems the proposer is asked for (each becomes at most one trace)."""
    focus: float = 0.75
    """Share of the proposal targets steered by the weakness profile; 0 spreads them uniformly."""
    shots: int = 1
    """Examples shown to the proposer per proposal, chosen to match its target; the first is the
    one it varies, the others are context."""
    pool: int = 24
    """Family examples the shots are drawn from (at most what the family has: 24 for `code`)."""
    solver_attempts: int = 2
    """Solutions sampled per problem (all in one batch); the first that verifies is kept."""
    judge_min_score: float | None = None
    """With a judge model: reject verified solutions it scores below this (1-10); None: record only."""
    proposer_params: GenerationParams = GenerationParams(max_tokens=128, temperature=0.6)
    solver_params: GenerationParams = GenerationParams(max_tokens=256, temperature=0.7)
    judge_params: GenerationParams = GenerationParams(max_tokens=16, temperature=0.0)
    seed: int = 0
    """Seeds the targets, the shots and the models' sampling: a run is reproducible."""


@dataclass
class CollaborationResult:
    traces: list[dict]
    rejects: list[dict]
    stats: dict
    usage: dict = field(default_factory=dict)


_ANSWER_SENTENCE = re.compile(r"the answer is:?\s*\$?([-\d.,/]+)", re.IGNORECASE)


def parse_proposal(text: str, label: str) -> tuple[str, str] | None:
    """(problem, reference) from a proposer reply `Problem: … {label}: …`, else None.

    `Question:` is read as `Problem:`; with neither, the paragraph just before the `{label}:` line
    is the problem. An `Answer` is its first line, and a math reply that only ends its problem with
    "The answer is N." gives N. `Tests` are every line after the label, code fences removed.
    """
    flags = re.DOTALL | re.IGNORECASE | re.MULTILINE
    reference_line = rf"^\s*\**{label}\**\s*:\s*\**\s*(.+)"
    match = re.search(r"\**(?:Problem|Question)\**\s*:\s*\**\s*(.+?)\s*" + reference_line, text, flags)
    if match is not None:
        question, reference = match.group(1), match.group(2)
    elif (match := re.search(reference_line, text, flags)) is not None:
        question, reference = _paragraph_before(text, match.start()), match.group(1)
    elif label == "Answer" and (match := _ANSWER_SENTENCE.search(text)) is not None:
        question, reference = _paragraph_before(text, match.start()), match.group(1)
    else:
        return None
    question, reference = question.strip(), reference.strip()
    if label == "Answer":
        reference = reference.splitlines()[0].strip().rstrip(".,")
    else:
        reference = "\n".join(line for line in reference.splitlines()
                              if not line.strip().startswith("```")).strip()
    return (question, reference) if question and reference else None


def _paragraph_before(text: str, end: int) -> str:
    return re.split(r"\n\s*\n", text[:end].strip())[-1]


_SCORE = re.compile(r"score\s*[:=]?\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def parse_score(text: str) -> float | None:
    """The judge's `Score: N` (1-10), else None."""
    match = _SCORE.search(text)
    score = float(match.group(1)) if match else None
    return score if score is not None and 1 <= score <= 10 else None


def _problem_id(family: str, question: str) -> str:
    return f"{family}-gen-{hashlib.sha256(normalize_question(question).encode()).hexdigest()[:16]}"


def _shots(pool: list[dict], pool_dims: list[dict], target: dict, k: int, rng: random.Random) -> list[dict]:
    """`k` examples, those matching the target on the most dimensions first (ties in random order)."""
    order = rng.sample(range(len(pool)), len(pool))
    order.sort(key=lambda i: -sum(pool_dims[i].get(d) == v for d, v in target.items()))
    return [pool[i] for i in order[:k]]


def _record(ledger: UsageLedger, role: str, client: ModelClient, reply: Completion | ModelClientError) -> None:
    if isinstance(reply, ModelClientError):
        ledger.record_failure(role, client.model_id, reply)
    else:
        ledger.record(role, reply)


def _first_verified(family: TaskFamily, reference: str, replies: list[Completion | ModelClientError]
                    ) -> tuple[str | None, list[dict]]:
    """(the first attempt's canonical solution that verifies, or None; the failed attempts before it)."""
    tried = []
    for attempt, reply in enumerate(replies):
        if isinstance(reply, ModelClientError):
            tried.append({"attempt": attempt, "reason": "client_error", "detail": str(reply)})
            continue
        try:
            solution = family.parse_solution(reply.text)
            verdict = family.verify(solution, reference)
        except StepParseError as error:
            tried.append({"attempt": attempt, "reason": "step_format", "detail": str(error), "text": reply.text})
            continue
        except ValueError as error:  # the proposer's reference itself is unusable (tests that don't parse)
            tried.append({"attempt": attempt, "reason": "bad_reference", "detail": str(error), "text": reply.text})
            break
        if verdict.ok:
            return solution, tried
        tried.append({"attempt": attempt, "reason": verdict.reason, "detail": verdict.detail, "text": reply.text})
    return None, tried


@dataclass
class Proposals:
    """What the proposer was asked and said: one target, its shots and the reply per proposal."""

    pool: list[dict]
    targets: list[dict[str, str]]
    shots: list[list[dict]]
    replies: list[Completion | ModelClientError]

    def written(self, family: TaskFamily) -> dict[str, dict[str, int]]:
        """The proposer's output distribution: each reply's text read with `family.classify`."""
        counts: dict[str, Counter] = {d: Counter() for d in family.dimensions}
        for reply in self.replies:
            if not isinstance(reply, ModelClientError):
                for dimension, value in family.classify(reply.text).items():
                    counts[dimension][value] += 1
        return {d: dict(sorted(c.items())) for d, c in counts.items() if c}


def propose(family: TaskFamily, proposer: ModelClient, profile: WeaknessProfile,
            config: CollaborationConfig) -> Proposals:
    """Ask the proposer for `config.proposals` problems, each aimed at a target drawn from the
    profile and shown the examples closest to it."""
    rng = random.Random(config.seed)
    pool = family.examples(config.pool, config.seed)
    pool_dims = [family.dims(trace) for trace in pool]
    values = {d: sorted({dims[d] for dims in pool_dims if d in dims}) for d in family.dimensions}
    targets = plan_targets(profile, values, config.proposals, config.focus, rng)
    shots = [_shots(pool, pool_dims, target, config.shots, rng) for target in targets]
    requests = [prompts.proposal_messages(family.description, [(t["question"], t["answer"]) for t in s],
                                          family.reference_label) for s in shots]
    replies = proposer.complete_batch(requests, replace(config.proposer_params, seed=config.seed))
    return Proposals(pool, targets, shots, replies)


def collaborate(family: TaskFamily, proposer: ModelClient, solver: ModelClient, *,
                judge: ModelClient | None = None, profile: WeaknessProfile = WeaknessProfile(),
                config: CollaborationConfig = CollaborationConfig(), run: str = "",
                log=lambda message: None) -> CollaborationResult:
    """Propose, solve and verify `config.proposals` problems of `family`; see the module docstring."""
    ledger = UsageLedger()
    lineage = {"proposer": proposer.model_id, "solver": solver.model_id,
               "judge": judge.model_id if judge else None,
               "verifier": f"srl_platform.tasks:{family.name}.verify",
               "weakness_profile": profile.source or None, "run": run or None}
    rejects: list[dict] = []

    def reject(stage: str, reason: str, detail: str, **fields) -> None:
        rejects.append({"stage": stage, "reason": reason, "detail": detail, **fields,
                        "lineage": lineage})

    log(f"{family.name}: proposing {config.proposals} problems with {proposer.model_id}")
    proposals = propose(family, proposer, profile, config)
    pool, targets, shots, replies = proposals.pool, proposals.targets, proposals.shots, proposals.replies
    known = {normalize_question(trace["question"]) for trace in pool}
    problems = []
    for target, examples, reply in zip(targets, shots, replies):
        _record(ledger, "proposer", proposer, reply)
        base = {"target": target, "examples": [t["id"] for t in examples]}
        if isinstance(reply, ModelClientError):
            reject("propose", "client_error", str(reply), **base)
            continue
        parsed = parse_proposal(reply.text, family.reference_label)
        if parsed is None:
            reject("propose", "proposal_unparseable",
                   f"no 'Problem: …' followed by '{family.reference_label}: …'",
                   proposal_text=reply.text, **base)
            continue
        question, reference = parsed
        key = normalize_question(question)
        if key in known:
            reject("propose", "duplicate_problem", "same problem as an example or an earlier proposal",
                   question=question, reference=reference, proposal_text=reply.text, **base)
            continue
        known.add(key)
        problems.append({"id": _problem_id(family.name, question), "question": question,
                         "reference": reference, "worked_example": examples[0] if examples else None,
                         **base})

    attempts = config.solver_attempts
    log(f"{family.name}: {len(problems)} new problems; solving each {attempts}x with {solver.model_id}")
    solutions = solver.complete_batch(
        [family.solve_messages(p["question"], p["worked_example"]) for p in problems for _ in range(attempts)],
        replace(config.solver_params, seed=config.seed))
    for reply in solutions:  # every attempt was generated (in one batch), so every one is paid for
        _record(ledger, "solver", solver, reply)
    verified = []
    for index, problem in enumerate(problems):
        replies = solutions[index * attempts : (index + 1) * attempts]
        solution, tried = _first_verified(family, problem["reference"], replies)
        if solution is not None:
            verified.append({**problem, "solution": solution, "attempt": len(tried)})
        else:
            reject("verify", tried[-1]["reason"], tried[-1]["detail"], attempts=tried,
                   **{k: problem[k] for k in ("id", "question", "reference", "target", "examples")})

    scores: list[float | None] = [None] * len(verified)
    if judge is not None and verified:
        log(f"{family.name}: judging {len(verified)} verified solutions with {judge.model_id}")
        judged = judge.complete_batch([prompts.judge_messages(v["question"], v["solution"])
                                       for v in verified], config.judge_params)
        for i, reply in enumerate(judged):
            _record(ledger, "judge", judge, reply)
            scores[i] = None if isinstance(reply, ModelClientError) else parse_score(reply.text)

    traces = []
    for problem, score in zip(verified, scores):
        if judge is not None and config.judge_min_score is not None and (
                score is None or score < config.judge_min_score):
            reason = "judge_unparseable" if score is None else "judge_low_score"
            reject("judge", reason, f"judge score {score} (minimum {config.judge_min_score})",
                   judge_score=score, solution=problem["solution"],
                   **{k: problem[k] for k in ("id", "question", "reference", "target", "examples")})
            continue
        traces.append({
            "id": problem["id"],
            "question": problem["question"],
            "solution": problem["solution"],
            "answer": problem["reference"],
            "source": f"generated:{family.name}:collaboration",
            "split": assign_split(problem["question"]),
            "meta": {"family": family.name, **family.classify(problem["question"]),
                     "num_steps": len(parse_steps(problem["solution"])),
                     "target": problem["target"], "judge_score": score,
                     "lineage": {**lineage, "examples": problem["examples"],
                                 "solver_attempt": problem["attempt"]}},
        })

    reasons = Counter(r["reason"] for r in rejects)
    stats = {
        "proposals": len(targets),
        "new_problems": len(problems),
        "verified": len(verified),
        "accepted": len(traces),
        "rejected": len(rejects),
        "reasons": dict(sorted(reasons.items())),
        "targets": {d: dict(sorted(Counter(t.get(d) for t in targets).items())) for d in family.dimensions},
        "proposed": proposals.written(family),
    }
    log(f"{family.name}: {len(traces)} accepted of {len(targets)} proposals; rejected {dict(reasons)}")
    return CollaborationResult(traces, rejects, stats, ledger.summary())
