"""PSI per feature with Spark aggregates: a month of a large base is binned where it lies.

The reference (the champion's training months, a sample of them at scale) is small enough for
the driver and fixes the bins exactly as ``drift.binned_shares`` does: numeric edges at its
quantiles, categorical levels as text. The current month is never collected: Spark turns each
row into one (feature, bin) pair per feature and counts them with one ``groupBy``; only the
counts (features x bins) come back. The PSI is then ``drift.psi_from_shares`` of the same shares
the DuckDB path computes, so the two agree to rounding (tests/test_spark_engine.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from churn_assets.monitoring.drift import (
    CATEGORICAL,
    MISSING_LEVEL,
    NUMERIC,
    DriftError,
    _check_columns,
    categorical_levels,
    finite_or_nan,
    numeric_codes,
    numeric_edges,
    numeric_labels,
    psi_from_shares,
)

if TYPE_CHECKING:
    import pandas as pd

    from churn_assets.core.spark_warehouse import SparkWarehouse


@dataclass(frozen=True)
class FeaturePsi:
    name: str
    kind: str
    psi: float
    labels: list[str]
    reference_share: list[float]
    current_share: list[float]
    current_rows: int


def _bin_expression(name: str, kind: str, spark_type: str, edges):
    """The row's bin as text: a numeric bin's index (edges <= value, NULL/NaN/inf last),
    or a categorical level as pandas writes it ('True'/'False' for booleans)."""
    from pyspark.sql import functions as F

    column = F.col(f"`{name}`")
    if kind == NUMERIC:
        number = column.cast("double")
        missing = number.isNull() | F.isnan(number) | (F.abs(number) == float("inf"))
        index = sum((F.when(number >= F.lit(float(edge)), 1).otherwise(0) for edge in edges), F.lit(0))
        return F.when(missing, F.lit(len(edges) + 1)).otherwise(index).cast("string")
    if spark_type == "boolean":
        text = F.when(column, F.lit("True")).when(~column, F.lit("False"))
    else:
        text = column.cast("string")
    return F.coalesce(text, F.lit(MISSING_LEVEL))


def psi_on_spark(
    warehouse: SparkWarehouse,
    reference: pd.DataFrame,
    current_sql: str,
    numeric: Sequence[str],
    categorical: Sequence[str],
    *,
    params: dict[str, Any] | None = None,
    bins: int = 10,
    epsilon: float = 1e-4,
) -> list[FeaturePsi]:
    """PSI of each feature between ``reference`` (pandas, on the driver) and the rows of
    ``current_sql`` (Spark SQL, e.g. one month of features.customer_features, ``params``
    bound), counted by Spark."""
    import numpy as np
    from pyspark.sql import functions as F

    if reference.empty:
        raise DriftError("The reference sample is empty: the champion's training months hold no rows")
    _check_columns(reference, [*numeric, *categorical], "reference")
    current = warehouse.sql(current_sql, params)
    _check_columns(current, [*numeric, *categorical], "current")
    types = {field.name: field.dataType.simpleString() for field in current.schema}

    reference_values = {name: finite_or_nan(reference[name]) for name in numeric}
    edges = {name: numeric_edges(reference_values[name], bins) for name in numeric}
    pairs = [F.struct(F.lit(name).alias("feature"), _bin_expression(name, NUMERIC, types[name], edges[name]).alias("bin"))
             for name in numeric]
    pairs += [F.struct(F.lit(name).alias("feature"), _bin_expression(name, CATEGORICAL, types[name], None).alias("bin"))
              for name in categorical]
    counted = (current.select(F.explode(F.array(*pairs)).alias("pair"))
               .groupBy("pair.feature", "pair.bin").count().collect())
    counts: dict[str, dict[str, int]] = {}
    for row in counted:
        counts.setdefault(row["feature"], {})[row["bin"]] = int(row["count"])
    rows = sum(next(iter(counts.values()), {}).values())
    if rows == 0:
        raise DriftError("The current month holds no feature rows")

    results = []
    for name in numeric:
        ref_codes = numeric_codes(reference_values[name], edges[name])
        labels = numeric_labels(edges[name])
        ref_share = np.bincount(ref_codes, minlength=len(labels)) / ref_codes.size
        cur_share = np.array([counts[name].get(str(code), 0) for code in range(len(labels))]) / rows
        results.append(FeaturePsi(name, NUMERIC, psi_from_shares(ref_share, cur_share, epsilon), labels,
                                  ref_share.tolist(), cur_share.tolist(), rows))
    for name in categorical:
        ref_levels = categorical_levels(reference[name]).value_counts()
        labels = sorted(set(ref_levels.index) | set(counts[name]))
        ref_share = np.array([ref_levels.get(level, 0) for level in labels]) / len(reference)
        cur_share = np.array([counts[name].get(level, 0) for level in labels]) / rows
        results.append(FeaturePsi(name, CATEGORICAL, psi_from_shares(ref_share, cur_share, epsilon), labels,
                                  ref_share.tolist(), cur_share.tolist(), rows))
    return results
