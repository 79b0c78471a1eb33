"""The one monthly partitions definition every layer shares, and how months join it.

The partitions are the months that were delivered, no more: a dynamic partitions definition
whose keys (``YYYY-MM-01``) are added when a month is delivered (`churn run`, `churn demo`,
`churn ingest`, the landing sensor) rather than a calendar from a fixed start to today, which
showed every month without data as missing and let the schedule score months nobody delivered.
Months are kept in calendar order, because Dagster orders dynamic partitions as added and a
single-run backfill is a range of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import date
from pathlib import Path

import dagster as dg

from churn_assets.core.project import active_project, month_key  # noqa: F401 (month_key lives with the project's first month)

MONTHS_PARTITION = "months"
_MONTH_KEY = re.compile(r"\d{4}-(0[1-9]|1[0-2])-01")

# The earliest month a delivery may describe: the active project's first month (churn.yaml's
# project.first_month; 2023-01 for the built-in one), or CHURN_FIRST_MONTH=YYYY-MM-01.
FIRST_MONTH = active_project().first_month

monthly_partitions = dg.DynamicPartitionsDefinition(name=MONTHS_PARTITION)


def delivered_months(instance: dg.DagsterInstance) -> list[str]:
    """The months registered as partitions, in calendar order."""
    return sorted(instance.get_dynamic_partitions(MONTHS_PARTITION))


def register_months(instance: dg.DagsterInstance, months: Iterable[str]) -> list[str]:
    """Make ``months`` (``YYYY-MM-01``) partitions; returns the ones that were new.

    Registrations are serialised by a file lock beside the instance (the CLI, the sensor and
    the export asset run in different processes). Dagster orders dynamic partitions as added
    and a single-run backfill is a range of them, so a month that sorts before a registered
    one (history delivered late) re-adds every month in calendar order, materializations being
    recorded by key, but only while no run or backfill is in flight: a range re-resolved mid-run
    would gain the month. Otherwise it is appended, and the order is restored by the next
    registration made while the instance is idle."""
    import fcntl

    new_keys = set(months)
    bad = sorted(k for k in new_keys if not _MONTH_KEY.fullmatch(k))
    if bad:
        raise ValueError(f"not month partition keys (YYYY-MM-01): {', '.join(bad)}")
    lock_path = Path(instance.root_directory) / "months-partitions.lock"
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        registered = instance.get_dynamic_partitions(MONTHS_PARTITION)
        new = sorted(new_keys - set(registered))
        wanted = sorted({*registered, *new})
        if registered + new == wanted:
            if new:
                instance.add_dynamic_partitions(MONTHS_PARTITION, new)
        elif _idle(instance):
            for key in registered:
                instance.delete_dynamic_partition(MONTHS_PARTITION, key)
            instance.add_dynamic_partitions(MONTHS_PARTITION, wanted)
        elif new:
            instance.add_dynamic_partitions(MONTHS_PARTITION, new)
    return new


def _idle(instance: dg.DagsterInstance) -> bool:
    """No run queued or in progress and no backfill requested."""
    from dagster._core.execution.backfill import BulkActionStatus

    active = instance.get_runs(filters=dg.RunsFilter(statuses=[
        dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED]), limit=1)
    return not active and not instance.get_backfills(status=BulkActionStatus.REQUESTED, limit=1)


def month_window(partition_keys: Sequence[str]) -> tuple[date, date]:
    """``[first month, the month after the last)`` of a run's months, for SQL parameters."""
    first, last = date.fromisoformat(min(partition_keys)), date.fromisoformat(max(partition_keys))
    following = date(last.year + last.month // 12, last.month % 12 + 1, 1)
    return first, following
