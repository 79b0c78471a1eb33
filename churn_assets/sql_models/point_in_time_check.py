"""The point-in-time (leakage) check on features.customer_features as a Dagster asset check."""

from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from churn_assets.core.keys import CUSTOMER_FEATURES_KEY
from churn_assets.core.warehouse import Warehouse

if TYPE_CHECKING:
    from churn_assets.sql_models.project import SqlProject


class PointInTimeConfig(dg.Config):
    # Customers per checked month when the model declares row_depends_on (else rows).
    sample_rows_per_month: int = 500
    months: list[str] | None = None
    # Recompute each checked month in full instead of only the sampled customers.
    full_recompute: bool = False


def build_point_in_time_check(project: "SqlProject | Path",
                              source_time_columns: dict[str, str] | None = None) -> dg.AssetChecksDefinition:
    """The check over the loader's project: ``load_sql_project``'s result, or a sql folder
    that the check reads with ``load_sql_project`` each time it runs. ``source_time_columns``:
    raw relation -> the column its rows are truncated on (default: the built-in raw contract's)."""

    @dg.asset_check(
        asset=CUSTOMER_FEATURES_KEY,
        name="point_in_time_correct",
        blocking=True,
        description=(
            "Recomputes a sample of customers' feature rows with every upstream row dated after "
            "the snapshot month removed (only their own rows, as the model's row_depends_on "
            "declares); the stored rows must be identical (no leakage), and so must the month's "
            "row count."
        ),
    )
    def point_in_time_correct(
        config: PointInTimeConfig, warehouse: Warehouse
    ) -> dg.AssetCheckResult:
        from churn_assets.sql_models.leakage import check_point_in_time

        with warehouse.read() as con:
            result = check_point_in_time(
                con,
                project,
                model=CUSTOMER_FEATURES_KEY.to_user_string().replace("/", "."),
                months=config.months,
                sample=config.sample_rows_per_month,
                time_columns=source_time_columns,
                full_recompute=config.full_recompute,
            )
        return dg.AssetCheckResult(
            passed=result.passed,
            description=result.summary(),
            metadata=result.as_metadata(),
        )

    return point_in_time_correct
