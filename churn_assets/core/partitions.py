"""The one monthly partitions definition every layer shares, and how months join it.

The partitions are the months that were delivered, no more: a dynamic partitions definition
whose keys (``YYYY-MM-01``) are added when a month is delivered (`churn run`, `churn demo`,
`churn ingest`, the landing sensor) rather than a calendar from a fixed start to today, which
showed every month without data as missing and let the schedule score months nobody delivered.
Months are kept in calendar order, because Dagster orders dynamic partitions as added and a
single-run backfill is a range of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date

import dagster as dg

from churn_assets.core.project import active_project, month_key  # noqa: F401 (month_key lives with the project's first month)

MONTHS_PARTITION = "months"

# The earliest month a delivery may describe: the active project's first month (churn.yaml's
# project.first_month; 2023-01 for the built-in one), or CHURN_FIRST_MONTH=YYYY-MM-01.
FIRST_MONTH = active_project().first_month

monthly_partitions = dg.DynamicPartitionsDefinition(name=MONTHS_PARTITION)


def delivered_months(instance: dg.DagsterInstance) -> list[str]:
    """The months registered as partitions, in calendar order."""
    return sorted(instance.get_dynamic_partitions(MONTHS_PARTITION))


def register_months(instance: dg.DagsterInstance, months: Iterable[str]) -> list[str]:
    """Make ``months`` partitions; returns the ones that were new.

    A month that sorts before a registered one (history delivered late) re-adds every month in
    calendar order: ranges follow the order of addition. Materializations are recorded by key,
    so re-adding loses nothing."""
    registered = instance.get_dynamic_partitions(MONTHS_PARTITION)
    new = sorted(set(months) - set(registered))
    if not new:
        return []
    if registered and new[0] < max(registered):
        for key in registered:
            instance.delete_dynamic_partition(MONTHS_PARTITION, key)
        instance.add_dynamic_partitions(MONTHS_PARTITION, sorted({*registered, *new}))
    else:
        instance.add_dynamic_partitions(MONTHS_PARTITION, new)
    return new


def month_window(partition_keys: Sequence[str]) -> tuple[date, date]:
    """``[first month, the month after the last)`` of a run's months, for SQL parameters."""
    first, last = date.fromisoformat(min(partition_keys)), date.fromisoformat(max(partition_keys))
    following = date(last.year + last.month // 12, last.month % 12 + 1, 1)
    return first, following
