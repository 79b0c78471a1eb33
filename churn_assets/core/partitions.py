"""The one monthly partitions definition every layer shares."""

from __future__ import annotations

import os

import dagster as dg

# Months before this date cannot be delivered. The embedded demo covers 2024-01 onwards;
# set CHURN_FIRST_MONTH=YYYY-MM-01 to ingest older history.
FIRST_MONTH = os.environ.get("CHURN_FIRST_MONTH", "2023-01-01")

monthly_partitions = dg.MonthlyPartitionsDefinition(start_date=FIRST_MONTH)


def month_key(value: str) -> str:
    """Normalise 'YYYY-MM' or 'YYYY-MM-DD' to the partition key 'YYYY-MM-01'."""
    text = value.strip()
    parts = text.split("-")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
        raise ValueError(f"Not a month: {value!r} (expected YYYY-MM)")
    year, month = int(parts[0]), int(parts[1])
    if not 1 <= month <= 12:
        raise ValueError(f"Not a month: {value!r} (month must be 01-12)")
    return f"{year:04d}-{month:02d}-01"
