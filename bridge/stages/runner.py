"""The one runner: executes a plan (from `bridge.stages.plan.build_plan`) stage by stage, in order.

For each stage it decides whether it can run (turned off, or an artifact it needs is absent: skipped with the
reason), produces its artifacts when the plan says so, derives its tolerance from the policy and the artifacts as
they are then, judges, times it and prints its line. Stages of one session run together. A failure to *produce*
ends the run with a typed error (nothing is there to judge, and `--route auto` may fall back); a failure while
*judging* an artifact that exists is that stage's failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from bridge.errors import BridgeError, ConversionError
from bridge.stages.artifacts import Artifact, Artifacts, Produced
from bridge.stages.context import RunInputs, StageEnv, stage_tolerance
from bridge.stages.plan import SESSIONS, Planned, Selection
from bridge.stages.result import StageResult, Status
from bridge.util.quiet import captured_output
from bridge.util.time_limit import time_limit

T = TypeVar("T")
BUG_HINT = "run with --debug for the traceback; if the model and inputs are fine, please report this as a bridge bug"


@dataclass(frozen=True)
class PlanRun:
    """What running a plan gave: every stage's result in plan order, the artifacts at the end, notes for the report."""

    stages: tuple[StageResult, ...]
    artifacts: Artifacts
    notes: tuple[str, ...] = ()


def run_plan(plan: list[Planned], run: RunInputs, artifacts: Artifacts, *, omit_missing: bool = False) -> PlanRun:
    """Run every stage of `plan` on `artifacts`. With `omit_missing`, a stage whose artifact is absent is left out
    instead of being listed as skipped (assert_parity judges only what the user has)."""
    results: list[StageResult] = []
    notes: list[str] = []
    remaining = list(plan)
    while remaining:
        planned = remaining.pop(0)
        session = planned.stage.session
        if session is not None:
            group = [planned] + [p for p in remaining if p.stage.session == session]
            remaining = [p for p in remaining if p.stage.session != session]
            results += _run_session(session, group, run, artifacts, omit_missing)
            continue
        outcome = _run_one(planned, run, artifacts, omit_missing)
        if outcome is not None:
            result, artifacts, more = outcome
            results.append(result)
            notes += more
    return PlanRun(tuple(results), artifacts, tuple(notes))


def _unavailable(planned: Planned, artifacts: Artifacts) -> str | None:
    """Why `planned` cannot run now (turned off, an artifact absent, nothing to re-check), or None."""
    stage, producer = planned.stage, planned.producer if planned.produce else None
    if planned.selection is Selection.OFF:
        return planned.reason or "turned off"
    if producer is not None:
        return None  # a producer raises its own typed error for what it lacks (and `--route auto` falls back)
    missing = artifacts.missing(stage.judges)
    if missing is not None:
        return missing
    if stage.check is None and stage.session is None:
        needs = planned.producer.needs if planned.producer else ()
        return artifacts.missing(needs) or f"not re-run: {stage.name} only makes what the later stages judge"
    return None


def _run_one(planned: Planned, run: RunInputs, artifacts: Artifacts,
             omit_missing: bool) -> tuple[StageResult, Artifacts, tuple[str, ...]] | None:
    stage = planned.stage
    reason = _unavailable(planned, artifacts)
    if reason is not None:
        if omit_missing and planned.selection is Selection.RUN:
            return None
        return _printed(run, StageResult(stage.name, Status.SKIPPED, reason=reason)), artifacts, ()
    start = time.perf_counter()
    with _section(run, stage.name):
        produced = _produce(planned, run, artifacts)
        current = produced.artifacts if produced is not None else artifacts
        env = _env(planned, run, current)
        result = _judge(stage.check, env) if stage.check is not None else StageResult(stage.name, Status.PASS)
    if produced is not None:
        result.detail = result.detail or produced.detail
        result.extra = {**produced.extra, **result.extra}
    result.seconds = time.perf_counter() - start
    return _printed(run, result), current, produced.notes if produced is not None else ()


def _env(planned: Planned, run: RunInputs, artifacts: Artifacts) -> StageEnv:
    stage = planned.stage
    return StageEnv(stage.name, run, artifacts, stage_tolerance(stage.tolerance, run, artifacts, stage.judges),
                    stage.backend, stage.store, Artifact.LAYERS_MODEL in stage.judges)


def _produce(planned: Planned, run: RunInputs, artifacts: Artifacts) -> Produced | None:
    """The stage's production; any failure is raised as a typed error naming the stage."""
    producer = planned.producer
    if producer is None or not planned.produce:
        return None
    env = _env(planned, run, artifacts)
    return _typed(planned.stage.name, lambda: producer.make(env))


def _typed(stage: str, fn: Callable[[], T]) -> T:
    """`fn()`, with an exception that is not a BridgeError turned into one (chained, for --debug)."""
    try:
        return fn()
    except BridgeError:
        raise
    except Exception as exc:  # a library or bridge bug inside a stage: one typed error, never a raw traceback
        raise ConversionError(f"{type(exc).__name__}: {exc}".strip(), stage=stage, hint=BUG_HINT) from exc


def _judge(check: Callable[[StageEnv], StageResult], env: StageEnv) -> StageResult:
    """The stage's check; an error while judging an existing artifact is this stage's failure."""
    try:
        return _typed(env.name, lambda: check(env))
    except BridgeError as exc:
        return env.failed(str(exc))


def _run_session(session: str, group: list[Planned], run: RunInputs, artifacts: Artifacts,
                 omit_missing: bool) -> list[StageResult]:
    """The stages of one session: the unavailable ones skipped, the others run together by the session."""
    results: dict[str, StageResult] = {}
    envs: list[StageEnv] = []
    for planned in group:
        reason = _unavailable(planned, artifacts)
        if reason is None:
            envs.append(_env(planned, run, artifacts))
        elif not (omit_missing and planned.selection is Selection.RUN):
            results[planned.stage.name] = StageResult(planned.stage.name, Status.SKIPPED, reason=reason)
    if envs:
        with _section(run, session):
            try:
                ran = _typed(session, lambda: SESSIONS[session](envs))
            except BridgeError as exc:
                ran = [env.failed(str(exc)) for env in envs]
        results.update({r.name: r for r in ran})
    return [_printed(run, results[p.stage.name]) for p in group if p.stage.name in results]


@contextmanager
def _section(run: RunInputs, label: str) -> Iterator[Any]:
    """A spinner while the body runs, library output hidden unless verbose (its tail added to a bridge error)."""
    limit = run.options.time_limit
    with run.progress.running(label), time_limit(limit, label, f"stage {label}"):
        with captured_output(run.options.verbose) as captured:
            try:
                yield captured
            except BridgeError as exc:
                if not exc.details:
                    exc.details += [f"log: {line}" for line in captured.tail(8)]
                raise


def _printed(run: RunInputs, result: StageResult) -> StageResult:
    """The stage's line, then its findings (things a user must know even when the stage passed)."""
    run.progress.stage_done(result)
    for finding in result.extra.get("findings") or ():
        run.progress.note(f"    {finding}")
    return result


def findings(results: tuple[StageResult, ...] | list[StageResult]) -> list[str]:
    """Every stage's findings, for the report's notes."""
    return [f"{r.name}: {f}" for r in results for f in r.extra.get("findings") or ()]
