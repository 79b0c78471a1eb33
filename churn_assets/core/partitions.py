"""The one monthly partitions definition every layer shares."""

from __future__ import annotations

import dagster as dg

from churn_assets.core.project import active_project, month_key  # noqa: F401 (month_key lives with the project's first month)

# Months before this date cannot be delivered: the active project's first month (churn.yaml's
# project.first_month; 2023-01 for the built-in demo, which covers 2024-01 onwards), or
# CHURN_FIRST_MONTH=YYYY-MM-01 to ingest older history.
FIRST_MONTH = active_project().first_month

# end_offset=1: the month in progress is a partition too, so an export dated today has a home.
monthly_partitions = dg.MonthlyPartitionsDefinition(start_date=FIRST_MONTH, end_offset=1)
