"""Run every asset check against the current warehouse, without materializing anything.

Dagster 1.13 has no CLI for this: `dagster asset materialize` re-computes assets and fails
only on blocking checks. Here a job selecting only the checks runs in process through the
instance (so the evaluations show in the UI), and every declared check gets an outcome:
passed, failed (with its severity), errored (the check itself raised), or not run.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dagster as dg

CHECKS_JOB = "__churn_asset_checks"


@dataclass
class CheckOutcome:
    asset: str
    check: str
    status: str  # passed | failed | errored | not run
    severity: str  # ERROR | WARN
    description: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def fails_build(self) -> bool:
        return self.status == "errored" or (self.status == "failed" and self.severity == "ERROR")


def _metadata_text(metadata) -> dict[str, str]:
    out = {}
    for key, value in (metadata or {}).items():
        raw = getattr(value, "value", value)
        text = str(raw)
        out[key] = text if len(text) <= 200 else text[:197] + "..."
    return out


def run_all_checks(
    defs: dg.Definitions,
    *,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[CheckOutcome], float]:
    """Execute every asset check in ``defs``; returns the outcomes and the wall time."""
    import dagster as dg

    from churn_assets.cli.runner import (
        PARTITION_RANGE_END,
        PARTITION_RANGE_START,
        _progress_logger,
        check_result_text,
        failure_message,
        get_instance,
    )
    from churn_assets.core.partitions import delivered_months

    graph = defs.resolve_asset_graph()
    declared = sorted(graph.asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name))
    if not declared:
        return [], 0.0
    # Partitioned checks (drift) judge every delivered month: the run covers all of them. With no
    # month delivered yet they have nothing to judge (and a partitioned run needs a month).
    instance = get_instance()
    months = delivered_months(instance)
    runnable = [k for k in declared if months or graph.get_check_spec(k).partitions_def is None]
    tags = {PARTITION_RANGE_START: months[0], PARTITION_RANGE_END: months[-1]} if months else {}
    job_defs = dg.Definitions.merge(
        defs,
        dg.Definitions(jobs=[dg.define_asset_job(CHECKS_JOB, selection=dg.AssetSelection.checks(*runnable))]),
    )
    job = job_defs.resolve_job_def(CHECKS_JOB)
    # Only our own logger: Dagster's default console logger would print DEBUG lines.
    job = job.with_logger_defs({"progress": _progress_logger(progress or (lambda line: None))})
    run_config = {"loggers": {"progress": {}}}
    started = time.monotonic()
    result = job.execute_in_process(
        instance=instance, raise_on_error=False, run_config=run_config, tags=tags
    )
    elapsed = time.monotonic() - started

    evaluations: dict[tuple, list] = {}
    errors_by_step: dict[str, str] = {}
    succeeded: set[str] = set()
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            evaluations.setdefault((evaluation.asset_key, evaluation.check_name), []).append(evaluation)
        elif event.event_type_value == "STEP_FAILURE":
            errors_by_step[event.step_key] = failure_message(event.event_specific_data.error)
        elif event.event_type_value == "STEP_SUCCESS":
            succeeded.add(event.step_key)

    # The step that runs each check: its op's name (one op may run several checks).
    step_of = {check_key: checks_def.node_def.name for checks_def in defs.asset_checks or []
               for check_key in checks_def.check_keys}
    outcomes = []
    for key in declared:
        spec = graph.get_check_spec(key)
        description = spec.description or ""
        found = evaluations.get((key.asset_key, key.name))
        if found:
            outcomes.append(_outcome(key, found, description, check_result_text))
            continue
        step = step_of.get(key)
        if spec.partitions_def is not None and (step in succeeded or not months):
            # It ran and judged nothing, or there is no month to judge.
            outcomes.append(CheckOutcome(
                asset=key.asset_key.to_user_string(), check=key.name, status="passed", severity="ERROR",
                description="no month has been measured yet" if months else "no month has been delivered yet"))
            continue
        # No evaluation: the check's op raised (its step failed) or never ran.
        message = errors_by_step.get(step) or next(
            (msg for name, msg in errors_by_step.items() if key.name in name), None
        )
        outcomes.append(
            CheckOutcome(
                asset=key.asset_key.to_user_string(),
                check=key.name,
                status="errored" if message else "not run",
                severity="ERROR",
                description=message or "the check did not report a result",
            )
        )
    return outcomes, elapsed


def _outcome(key, evaluations: list, description: str, result_text) -> CheckOutcome:
    """One line per check: a partitioned check's months folded into its worst result, naming the
    months that failed (each month is also its own evaluation in the UI)."""
    failed = [e for e in evaluations if not e.passed]
    worst = max(failed, key=lambda e: (e.severity.value == "ERROR", e.partition or "")) if failed else None
    shown = worst or max(evaluations, key=lambda e: e.partition or "")
    text = result_text(shown) if worst else (shown.description or description)
    if len(evaluations) > 1 or shown.partition:
        by_level = {level: ", ".join((e.partition or "")[:7] for e in failed if e.severity.value == level)
                    for level in ("ERROR", "WARN")}
        months = "; ".join(f"{level.lower()}: {names}" for level, names in by_level.items() if names)
        text = (f"{len(failed)} of {len(evaluations)} months failed ({months}); {shown.partition[:7]}: {text}"
                if failed else f"{len(evaluations)} months passed; latest {(shown.partition or '')[:7]}: {text}")
    return CheckOutcome(
        asset=key.asset_key.to_user_string(), check=key.name,
        status="failed" if worst else "passed",
        severity=(worst or shown).severity.value, description=text,
        metadata=_metadata_text(shown.metadata),
    )


def exit_code(outcomes: list[CheckOutcome]) -> int:
    """1 when any error-level check failed or a check could not run; warnings do not fail."""
    return 1 if any(o.fails_build or o.status == "not run" for o in outcomes) else 0


def format_table(outcomes: list[CheckOutcome]) -> str:
    headers = ["asset", "check", "severity", "result", "detail"]
    rows = [
        [o.asset, o.check, o.severity, o.status.upper() if o.status != "passed" else "ok",
         (o.description or "").splitlines()[0][:120] if o.description else ""]
        for o in outcomes
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(headers, widths)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    counts = {s: sum(o.status == s for o in outcomes) for s in ("passed", "failed", "errored", "not run")}
    warned = sum(o.status == "failed" and o.severity == "WARN" for o in outcomes)
    lines.append(
        f"{len(outcomes)} checks: {counts['passed']} passed, {counts['failed'] - warned} failed (error), "
        f"{warned} warned, {counts['errored']} errored, {counts['not run']} not run"
    )
    return "\n".join(lines)


def write_junit(outcomes: list[CheckOutcome], path: Path, elapsed: float = 0.0) -> None:
    """JUnit XML: one testcase per check; error-level failures fail, warnings are reported only."""
    failures = sum(o.status == "failed" and o.severity == "ERROR" for o in outcomes)
    errors = sum(o.status in ("errored", "not run") for o in outcomes)
    root = ET.Element("testsuites")
    suite = ET.SubElement(
        root,
        "testsuite",
        name="churn asset checks",
        tests=str(len(outcomes)),
        failures=str(failures),
        errors=str(errors),
        skipped="0",
        time=f"{elapsed:.3f}",
    )
    for outcome in outcomes:
        case = ET.SubElement(suite, "testcase", classname=outcome.asset, name=outcome.check)
        properties = ET.SubElement(case, "properties")
        ET.SubElement(properties, "property", name="severity", value=outcome.severity)
        ET.SubElement(properties, "property", name="status", value=outcome.status)
        detail = "\n".join(f"{k}: {v}" for k, v in outcome.metadata.items())
        if outcome.status == "failed" and outcome.severity == "ERROR":
            element = ET.SubElement(case, "failure", message=outcome.description or "check failed")
            element.text = detail
        elif outcome.status in ("errored", "not run"):
            element = ET.SubElement(case, "error", message=outcome.description)
        elif outcome.status == "failed":
            out = ET.SubElement(case, "system-out")
            out.text = f"WARNING: {outcome.description}\n{detail}".strip()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tree = ET.ElementTree(root)
    ET.indent(tree)
    tree.write(path, encoding="utf-8", xml_declaration=True)
