"""Materialize the graph through the Dagster instance, so runs appear in `churn ui`.

The CLI and the end-to-end tests use this module. Runs execute in process (no process
per step): on a laptop that is the fastest way through the graph, and the instance still
records every run, materialization and check result.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from churn_assets.core.paths import churn_home

if TYPE_CHECKING:
    import dagster as dg

PARTITION_RANGE_START = "dagster/asset_partition_range_start"
# Who runs a CLI run: a run whose process is gone cannot finish and is marked failed.
PROCESS_TAG = "churn/pid"
HOST_TAG = "churn/host"
PARTITION_RANGE_END = "dagster/asset_partition_range_end"

INSTANCE_YAML = """\
# Written by `churn` on first use. Dagster instance for this CHURN_HOME.
telemetry:
  enabled: false
# Every asset that writes the warehouse is in the "warehouse" concurrency pool. The
# warehouse resource already serialises writers with a file lock, so no limit is needed
# for correctness; set one (e.g. `dagster instance concurrency set warehouse 1`) to make
# queued steps visible in the UI instead of waiting on the lock.
"""


def dagster_home() -> Path:
    """``$DAGSTER_HOME``, defaulting to ``$CHURN_HOME/dagster`` (set for child processes too)."""
    home = Path(os.environ.get("DAGSTER_HOME") or churn_home() / "dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(INSTANCE_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def get_instance() -> dg.DagsterInstance:
    import dagster as dg

    dagster_home()
    return dg.DagsterInstance.get()


def failure_message(error) -> str:
    """The user's error in a step failure: the first error in the cause chain that is not one
    of Dagster's wrappers ("Error occurred while executing op ..."), with Dagster's Failure
    description when there is one. Not the innermost: our errors name the table or model and
    keep the library's own error (a page of Spark text, say) as their cause."""
    if error is None:
        return "failed"
    chain = [error]
    while getattr(chain[-1], "cause", None) is not None:
        chain.append(chain[-1].cause)
    if any(e.cls_name in ("DagsterExecutionInterruptedError", "KeyboardInterrupt") for e in chain):
        return "interrupted (SIGINT/SIGTERM); the finished steps are saved, `churn run` continues"
    error = next((e for e in chain if not (e.cls_name or "").startswith("Dagster")), chain[-1])
    text = (error.message or "").strip()
    # "dagster._core.definitions.events.Failure: text" -> "text"; "ValueError: text" stays.
    prefix, _, rest = text.partition(": ")
    if prefix.startswith("dagster.") and rest:
        text = rest
    return " ".join(text.split()) or (error.cls_name or "failed")


def check_result_text(evaluation) -> str:
    """What a check measured against what (its result's description), else its metadata."""
    if evaluation.description:
        return " ".join(evaluation.description.split())
    values = [f"{k}={getattr(v, 'value', v)}" for k, v in (evaluation.metadata or {}).items()][:4]
    return ", ".join(values) or "no result details"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed every run the CLI started on this host whose process is gone (killed, crashed),
    and free the concurrency slots it held, so the next run neither waits on them nor shows a
    run that is STARTED forever. Returns their run ids."""
    import socket

    import dagster as dg

    recovered = []
    host = socket.gethostname()
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED,
                                                                  dg.DagsterRunStatus.STARTING])):
        pid = run.tags.get(PROCESS_TAG)
        if not pid or run.tags.get(HOST_TAG) != host or int(pid) == os.getpid() or _process_alive(int(pid)):
            continue
        instance.report_run_failed(run, message=f"The process running it (pid {pid}) is gone: marked failed by "
                                                "the next `churn` command.")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        recovered.append(run.run_id)
    return recovered


class PoolWait:
    """Says what a run blocked on a concurrency pool waits for, and stops it on SIGINT/SIGTERM.

    Dagster's in-process executor waits for a pool slot in a loop that defers interrupts until a
    step runs (and in 1.13 polls without sleeping), so a blocked CLI run would neither speak nor
    stop. The progress logger tells this watcher which steps are blocked; a thread reports the
    slots' holders at once and every ``repeat_s``, and on an interrupt marks the run canceled,
    frees its claims and exits 130. Exiting is safe there: while a step waits for a slot no step
    of this run is executing (in-process runs one step at a time) and every finished step's write
    was one transaction."""

    def __init__(self, instance: dg.DagsterInstance, run_id: str, emit: Callable[[str], None],
                 *, repeat_s: float = 30.0):
        self.instance, self.run_id, self.emit, self.repeat_s = instance, run_id, emit, repeat_s
        self._blocked: dict[str, str] = {}
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="churn-pool-wait", daemon=True)

    def __enter__(self) -> PoolWait:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._done.set()
        self._thread.join(timeout=2)

    def blocked(self, step: str, pool: str) -> None:
        with self._lock:
            self._blocked[step] = pool

    def started(self, step: str) -> None:
        with self._lock:
            self._blocked.pop(step, None)

    def holders(self, pool: str) -> str:
        info = self.instance.event_log_storage.get_concurrency_info(pool)
        held = [f"run {slot.run_id[:8]} ({slot.step_key})" for slot in info.claimed_slots
                if slot.run_id != self.run_id]
        return (f"the '{pool}' pool's {info.slot_count} slot(s) are held by {', '.join(held) or 'no run yet'}"
                f" (see `dagster instance concurrency get {pool}`)")

    def _watch(self) -> None:
        from dagster._utils.interrupts import check_captured_interrupt

        next_report = 0.0
        while not self._done.wait(0.25):
            with self._lock:
                blocked = dict(self._blocked)
            if not blocked:
                next_report = 0.0
                continue
            step, pool = next(iter(blocked.items()))
            if check_captured_interrupt():
                self._stop(step, pool)
            if time.monotonic() >= next_report:
                verb = "waiting " if next_report == 0.0 else "still waiting"
                try:
                    holders = self.holders(pool)
                except Exception as error:  # a busy instance must not end the watch (and Ctrl-C with it)
                    holders = f"the '{pool}' pool's slots are taken (holders unknown: {error})"
                self.emit(f"{verb} {step}: {holders}; Ctrl-C stops this run")
                next_report = time.monotonic() + self.repeat_s

    def _stop(self, step: str, pool: str) -> None:
        message = (f"Interrupted while {step} waited for a slot in the '{pool}' pool: run {self.run_id[:8]} "
                   "canceled; the steps that finished are saved, nothing of the waiting step was written.")
        try:
            run = self.instance.get_run_by_id(self.run_id)
            if run is not None:
                self.instance.report_run_canceled(run, message=message)
            self.instance.event_log_storage.free_concurrency_slots_for_run(self.run_id)
        except Exception as error:  # still stop: the next `churn run` recovers the dead run
            message += f" (could not record it: {error}; the next `churn run` marks it failed)"
        self.emit(message)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)


def _progress_logger(emit: Callable[[str], None], pool_wait: PoolWait | None = None,
                     step_seconds: dict[str, float] | None = None):
    """A Dagster logger printing one line per finished step (with its checks) and per failure;
    ``step_seconds`` (if given) receives each finished step's duration."""
    import dagster as dg

    class ProgressHandler(logging.Handler):
        def __init__(self):
            super().__init__()
            self.started = time.monotonic()
            self.step_started: dict[str, float] = {}
            self.checks_passed: dict[str, int] = {}

        def emit(self, record: logging.LogRecord) -> None:
            event = getattr(record, "dagster_meta", {}).get("dagster_event")
            if event is None:
                return
            now = time.monotonic()
            stamp = f"[{now - self.started:6.1f}s]"
            kind = event.event_type_value
            step = event.step_key or ""
            if kind == "STEP_START":
                self.step_started[step] = now
                if pool_wait:
                    pool_wait.started(step)
            elif kind == "ENGINE_EVENT" and pool_wait and "pool" in (event.event_specific_data.metadata or {}):
                # Dagster's "Step blocked by limit for pool ..." (repeated only every 300 s).
                pool_wait.blocked(step, event.event_specific_data.metadata["pool"].value)
            elif kind == "STEP_SUCCESS":
                took = now - self.step_started.get(step, now)
                if step_seconds is not None:
                    step_seconds[step] = took
                passed = self.checks_passed.pop(step, 0)
                checks = f", {passed} checks passed" if passed else ""
                emit(f"{stamp} done    {step} ({took:.1f}s{checks})")
            elif kind == "STEP_FAILURE":
                emit(f"{stamp} FAILED  {step}: {failure_message(event.event_specific_data.error)}")
            elif kind == "ASSET_CHECK_EVALUATION":
                data = event.event_specific_data
                if data.passed:
                    self.checks_passed[step] = self.checks_passed.get(step, 0) + 1
                else:
                    emit(
                        f"{stamp} check   {data.asset_key.to_user_string()}:{data.check_name} "
                        f"FAILED ({data.severity.value.lower()}): {check_result_text(data)}"
                    )

    @dg.logger(description="One line per step and failed check, for the terminal.")
    def progress(_init_context):
        logger = logging.Logger("churn_progress", level=logging.DEBUG)
        logger.addHandler(ProgressHandler())
        return logger

    return progress


def _named_job(defs: dg.Definitions) -> dg.JobDefinition:
    """The code location's full_refresh job (so the UI shows what ran), or the implicit asset
    job of definitions without it (tests' small graphs)."""
    from churn_assets.automation.jobs import FULL_REFRESH_JOB

    if any(getattr(job, "name", None) == FULL_REFRESH_JOB for job in defs.jobs or []):
        return defs.resolve_job_def(FULL_REFRESH_JOB)
    return defs.resolve_implicit_global_asset_job_def()


def materialize(
    defs: dg.Definitions,
    *,
    selection: Sequence[dg.AssetKey] | None = None,
    months: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
    raise_on_error: bool = True,
    tags: dict[str, str] | None = None,
    step_seconds: dict[str, float] | None = None,
) -> dg.ExecuteInProcessResult:
    """One run over ``selection`` (default: every asset) for the partition range of ``months``;
    ``step_seconds`` (if given) receives each finished step's duration.

    Partitioned assets have a single-run backfill policy, so the whole range is one step
    per asset; unpartitioned assets run once, in graph order.
    """
    import socket

    from dagster._core.utils import make_new_run_id

    from churn_assets.core.partitions import register_months

    emit = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    instance = get_instance()
    if months:
        register_months(instance, months)
    for run_id in recover_dead_runs(instance):
        emit(f"Run {run_id} died with its process; marked failed and its slots freed.")
    job = _named_job(defs)
    run_tags = {**(tags or {}), PROCESS_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
    if months:
        ordered = sorted(months)
        run_tags[PARTITION_RANGE_START] = ordered[0]
        run_tags[PARTITION_RANGE_END] = ordered[-1]
    run_id = make_new_run_id()
    with PoolWait(instance, run_id, emit) as pool_wait:
        # Only the progress logger is configured, so the console logger (kept for the job's
        # default config) stays silent.
        job = job.with_logger_defs({**job.loggers, "progress": _progress_logger(emit, pool_wait, step_seconds)})
        return job.execute_in_process(
            instance=instance,
            run_id=run_id,
            asset_selection=list(selection) if selection else None,
            tags=run_tags,
            raise_on_error=raise_on_error,
            run_config={"loggers": {"progress": {}}},
        )


def step_layers(defs: dg.Definitions) -> dict[str, str]:
    """Step key -> the layer (the ``layer`` tag) of the assets it materializes or checks."""
    layer_of_key: dict = {}
    steps: dict[str, str] = {}
    for assets_def in defs.assets or []:
        for spec in getattr(assets_def, "specs", []):
            layer_of_key[spec.key] = spec.tags.get("layer")
            if getattr(assets_def, "is_executable", False) and layer_of_key[spec.key]:
                steps.setdefault(assets_def.node_def.name, layer_of_key[spec.key])
    for checks_def in defs.asset_checks or []:
        keys = [spec.asset_key for spec in checks_def.check_specs]
        layer = next((layer_of_key[key] for key in keys if layer_of_key.get(key)), None)
        if layer:
            steps[checks_def.node_def.name] = layer
    return steps


def stage_lines(defs: dg.Definitions, step_seconds: dict[str, float], run_seconds: float,
                before: Sequence[tuple[str, float]] = ()) -> list[str]:
    """Seconds per layer of one run (its steps and their checks, in graph order), what the run
    spent outside steps (Dagster's own work: the plan, events, the instance), and ``before``:
    stages the command ran ahead of the run (the demo's data generation)."""
    layers = step_layers(defs)
    totals: dict[str, list] = {}
    for step, seconds in step_seconds.items():
        entry = totals.setdefault(layers.get(step, "other"), [0, 0.0])
        entry[0] += 1
        entry[1] += seconds
    rows = [(name, "", seconds) for name, seconds in before]
    rows += [(layer, f"{steps} steps", seconds) for layer, (steps, seconds) in totals.items()]
    rows.append(("outside steps", "load, Dagster", max(run_seconds - sum(step_seconds.values()), 0.0)))
    total = sum(seconds for _, _, seconds in rows)
    lines = ["Time per stage:"]
    lines += [f"  {name:<16} {what:>13} {seconds:7.1f}s  {seconds / total:4.0%}" for name, what, seconds in rows]
    lines.append(f"  {'total':<16} {'':>13} {total:7.1f}s")
    return lines
