"""The training set on the Spark warehouse, pulled to the driver as a seeded, stratified sample.

Training runs on one machine (the candidates, tuning, calibration and SHAP are single-node
libraries); what has to fit there is the sample, not the base. The size rule:

- a training set of at most ``max_rows`` rows comes whole: the frame is the one DuckDB's
  ``train.read_training_set`` returns (the same rows, columns, dtypes), so the content hash,
  the split, the candidates and the champion are the same on both engines;
- a larger one is sampled to about ``max_rows`` rows, stratified by the label: each class keeps
  the same fraction ``max_rows / rows``, except that a class with fewer than ``min_class_rows``
  rows at that fraction keeps ``min(all its rows, min_class_rows)`` (the churners of a large,
  loyal base are the scarce class the model must see). A row is kept when a seeded hash of its
  key falls below its class's fraction: the same key, seed and fractions keep the same rows
  however Spark partitions the table, and a customer-month once sampled stays sampled while the
  fraction holds.

Spark computes the class counts and applies the hash filter; only the kept rows reach the
driver (Arrow), and they become pandas through DuckDB, so their dtypes are DuckDB's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from churn_assets.core.engine import DEFAULT_MIN_CLASS_ROWS, DEFAULT_SAMPLE_ROWS

if TYPE_CHECKING:
    import pandas as pd

    from churn_assets.core.spark_warehouse import SparkWarehouse

HASH_RANGE = 2**31


class SampleError(ValueError):
    """A training set that cannot be sampled as asked; the message names what is wrong."""


@dataclass(frozen=True)
class TrainingSample:
    frame: pd.DataFrame
    column_types: dict[str, str]
    total_rows: int
    fractions: dict[str, float]

    @property
    def whole(self) -> bool:
        return all(fraction >= 1.0 for fraction in self.fractions.values())

    @property
    def odds_factor(self) -> float | None:
        """What turns the sample's odds of churn into the training set's: the negatives' kept
        fraction over the positives' (< 1 when the class floor enriched the churners); None
        when both classes kept the same fraction, so the sample's odds are the set's."""
        positive = [f for label, f in self.fractions.items() if label.lower() in ("1", "true")]
        negative = [f for label, f in self.fractions.items() if label.lower() in ("0", "false")]
        if len(positive) != 1 or len(negative) != 1 or positive[0] == negative[0]:
            return None
        return negative[0] / positive[0]


def class_fractions(counts: dict[str, int], max_rows: int, min_class_rows: int) -> dict[str, float]:
    """Each label's kept fraction under the size rule (see the module docstring)."""
    total = sum(counts.values())
    if max_rows < 1:
        raise SampleError(f"max_rows must be a positive number of rows, got {max_rows}")
    if total <= max_rows:
        return dict.fromkeys(counts, 1.0)
    share = max_rows / total
    return {label: 1.0 if n == 0 else min(1.0, max(share, min(n, min_class_rows) / n)) for label, n in counts.items()}


def pull_training_sample(
    warehouse: SparkWarehouse,
    key_columns: list[str],
    label: str,
    *,
    relation: str = "features.training_set",
    max_rows: int = DEFAULT_SAMPLE_ROWS,
    min_class_rows: int = DEFAULT_MIN_CLASS_ROWS,
    seed: int = 0,
) -> TrainingSample:
    import duckdb
    from pyspark.sql import functions as F

    if not warehouse.table_exists(relation):
        raise SampleError(f"{relation} does not exist on the Spark warehouse: build the features first")
    table = warehouse.sql(f"SELECT * FROM {relation}")
    missing = [c for c in [*key_columns, label] if c not in table.columns]
    if missing:
        raise SampleError(f"{relation} lacks the column(s) {', '.join(missing)}")
    counts = {str(row[0]): int(row[1]) for row in table.groupBy(F.col(label).cast("string")).count().collect()}
    fractions = class_fractions(counts, max_rows, min_class_rows)
    kept = table
    if any(fraction < 1.0 for fraction in fractions.values()):
        bucket = F.pmod(F.xxhash64(F.lit(seed), *(F.col(c) for c in key_columns)), F.lit(HASH_RANGE))
        threshold = F.lit(None)
        for value, fraction in fractions.items():
            threshold = F.when(F.col(label).cast("string") == F.lit(value), F.lit(fraction * HASH_RANGE)).otherwise(threshold)
        kept = table.where(bucket < threshold)
    arrow = kept.orderBy(*key_columns).toArrow()
    with duckdb.connect() as con:
        relation_frame = con.from_arrow(arrow)
        column_types = dict(zip(relation_frame.columns, (str(t) for t in relation_frame.types)))
        frame = relation_frame.df()
    return TrainingSample(frame=frame, column_types=column_types, total_rows=sum(counts.values()), fractions=fractions)


def training_sample_for(engine, roles, seed: int) -> TrainingSample:
    """The training set of the Spark warehouse under ``engine``'s (EnginePolicy) size rule,
    keyed and stratified by the training policy's ``roles`` and sampled with ``seed``."""
    key_columns = [*roles.id_columns, *([roles.time_column] if roles.time_column else [])]
    return pull_training_sample(
        engine.spark_warehouse(), key_columns, roles.label_column,
        max_rows=engine.training_sample_rows, min_class_rows=engine.training_sample_min_class_rows, seed=seed,
    )
