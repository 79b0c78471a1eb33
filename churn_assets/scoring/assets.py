"""Dagster wiring of the scoring layer: the champion's monthly scores and their explanations.

- ``ml/predictions`` (monthly partitions): the champion's scores for every customer of a
  month, streamed in Arrow batches, replacing the month in one transaction; risk bands and
  batch size from the ``scoring_policy`` resource.
- ``ml/explanations`` (monthly partitions): per scored customer-month, the top-k features
  pushing the risk up and down (exact TreeSHAP where the champion's candidate has it).
"""

# No `from __future__ import annotations`: Dagster resolves config classes from the
# real annotations of the decorated functions.
import dagster as dg
from pydantic import Field

from churn_assets.core.keys import (
    CHAMPION_KEY,
    CUSTOMER_FEATURES_KEY,
    EXPLANATIONS_KEY,
    PREDICTIONS_KEY,
    SCORE_LOG_KEY,
    SERVING_SNAPSHOT_KEY,
    TRAINING_SET_KEY,
)
from churn_assets.core.engine import EnginePolicy
from churn_assets.core.metadata import (
    add_partition_metadata,
    described_schema,
    partition_row_counts,
    silenced_backfill_warning,
    table_metadata,
    table_schema,
)
from churn_assets.core.partitions import monthly_partitions
from churn_assets.core.warehouse import WAREHOUSE_POOL, ArtifactStore, Warehouse, column_definitions
from churn_assets.scoring.batch import PREDICTION_COLUMNS, PREDICTION_DESCRIPTIONS, PREDICTIONS_TABLE, ScoringPolicy
from churn_assets.scoring.explanations import DEFAULT_TOP_REASONS, EXPLANATION_COLUMNS, EXPLANATIONS_TABLE
from churn_assets.scoring.score_log import SCORE_LOG_COLUMNS, SCORE_LOG_TABLE
from churn_assets.scoring.serving import ServingPolicy

FEATURES_TABLE = "features.customer_features"


def explanations_schema() -> dg.TableSchema:
    return described_schema(EXPLANATION_COLUMNS)


def _predictions_asset():
    @dg.asset(
        key=PREDICTIONS_KEY,
        deps=[CUSTOMER_FEATURES_KEY, CHAMPION_KEY],
        partitions_def=monthly_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=WAREHOUSE_POOL,
        group_name="ml",
        kinds={"duckdb", "python"},
        code_version="predictions-v2",
        description=(
            "Churn probability and risk band (low / medium / high) of every customer in "
            "features.customer_features for the month, scored by the champion in chunks of the "
            "scoring policy's batch_rows (tree boosters read a matrix built in SQL)."
        ),
        metadata=table_metadata(
            column_schema=table_schema(PREDICTION_COLUMNS, PREDICTION_DESCRIPTIONS), table_name=PREDICTIONS_TABLE
        ),
    )
    def predictions(
        context: dg.AssetExecutionContext, scoring_policy: ScoringPolicy, warehouse: Warehouse,
        artifacts: ArtifactStore, engine_policy: EnginePolicy
    ) -> dg.MaterializeResult:
        from churn_assets.scoring.batch import write_predictions
        from churn_assets.training.registry import load_champion

        bands = scoring_policy.bands()
        model = load_champion(artifacts.root_path, warehouse)
        months = list(context.partition_keys)
        if engine_policy.on_spark:
            from churn_assets.scoring.spark_scoring import predictions_on_spark

            stats = predictions_on_spark(warehouse, engine_policy, artifacts.root_path, model.version, months,
                                         bands=bands, batch_rows=scoring_policy.batch_rows)
        else:
            with warehouse.write() as con:
                stats = write_predictions(con, model, months, batch_rows=scoring_policy.batch_rows, bands=bands)
        with warehouse.read() as con:
            total = con.execute(f"SELECT count(*) FROM {PREDICTIONS_TABLE}").fetchone()[0]
        # Each month's own figures, so "plots by partition" draw the series.
        by_month = {month: stats.months[month[:7]] for month in months}
        add_partition_metadata(context, {
            month: {
                "dagster/partition_row_count": dg.MetadataValue.int(figures.rows),
                **({"mean_churn_probability": dg.MetadataValue.float(round(figures.mean_probability, 6)),
                    "high_risk_share": dg.MetadataValue.float(round(figures.high_risk_share, 6))}
                   if figures.rows else {}),
            }
            for month, figures in by_month.items()
        })
        context.log.info(
            f"Scored {stats.rows:,} rows of {len(months)} month(s) with {model.version} "
            f"at {stats.rows_per_second:,.0f} rows/s"
        )
        return dg.MaterializeResult(metadata={
            **table_metadata(row_count=total),
            "rows_scored": dg.MetadataValue.int(stats.rows),
            "rows_per_second": dg.MetadataValue.float(round(stats.rows_per_second, 1)),
            "seconds": dg.MetadataValue.float(round(stats.seconds, 3)),
            "batches": dg.MetadataValue.int(stats.batches),
            "largest_batch_rows": dg.MetadataValue.int(stats.largest_batch),
            "scoring_path": dg.MetadataValue.text(stats.path),
            **{f"rows_{band}_risk": dg.MetadataValue.int(int(n)) for band, n in stats.band_counts.items()},
            "model_version": dg.MetadataValue.text(str(model.version)),
            "risk_cut_offs": dg.MetadataValue.json({"medium": bands.medium, "high": bands.high}),
        })

    return predictions


predictions = silenced_backfill_warning(_predictions_asset)


# -- explanations ---------------------------------------------------------------------


class ExplanationsConfig(dg.Config):
    top_k: int = Field(default=DEFAULT_TOP_REASONS, description="Reasons per direction per customer.")
    batch_rows: int = Field(default=50_000, description="Rows explained per batch.")
    background_rows: int = Field(default=10, description="Background rows (non-tree models).")
    approximate: bool = Field(
        default=False,
        description="Tree boosters (XGBoost, LightGBM, and an ensemble of them): Saabas attributions "
                    "instead of exact TreeSHAP (10-100x faster, also additive, not Shapley values) "
                    "for every month.",
    )
    exact_latest_months: int = Field(
        default=1,
        description="In a multi-month backfill, the latest N months get exact TreeSHAP and "
                    "older months Saabas attributions, so a full history stays fast. "
                    "Set high to explain everything exactly.",
    )


@dg.asset(
    key=EXPLANATIONS_KEY,
    deps=[PREDICTIONS_KEY],
    partitions_def=monthly_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="ml",
    kinds={"duckdb", "shap"},
    pool=WAREHOUSE_POOL,
    code_version="explanations-v1",
    metadata=table_metadata(column_schema=explanations_schema(), table_name=EXPLANATIONS_TABLE),
    description="ml.explanations: per scored customer-month, the top-k features pushing the "
                "churn risk up and down, with their values and SHAP contributions.",
)
def explanations(context: dg.AssetExecutionContext, config: ExplanationsConfig,
                 warehouse: Warehouse, artifacts: ArtifactStore) -> dg.MaterializeResult:
    import pandas as pd

    from churn_assets.scoring.explanations import explanation_rows
    from churn_assets.training.registry import load_champion

    months = sorted(context.partition_keys)
    exact_from = len(months) - max(config.exact_latest_months, 0)
    with warehouse.read() as con:
        model = load_champion(artifacts.root_path, con)
        frames = {
            month: con.execute(
                f"SELECT * FROM {FEATURES_TABLE} WHERE snapshot_month = CAST(? AS DATE) "
                "ORDER BY customer_id", [month]).df()
            for month in months
        }
    parts, methods = [], {}
    for position, (month, frame) in enumerate(frames.items()):
        approximate = config.approximate or position < exact_from
        method = model.candidate.explanation_method(model, approximate)
        methods[month[:7]] = method
        background = None
        if not model.candidate.explains_exactly(model) and len(frame):
            background = frame.sample(n=min(config.background_rows, len(frame)), random_state=0)
        for start in range(0, len(frame), config.batch_rows):
            rows = explanation_rows(model, frame.iloc[start:start + config.batch_rows],
                                    config.top_k, background, approximate)
            parts.append(rows.assign(method=method))
    reasons = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=list(EXPLANATION_COLUMNS))
    body = column_definitions(EXPLANATION_COLUMNS)
    with warehouse.write() as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS ml")
        con.execute(f"CREATE TABLE IF NOT EXISTS {EXPLANATIONS_TABLE} ({body})")
        con.execute(f"DELETE FROM {EXPLANATIONS_TABLE} WHERE snapshot_month BETWEEN "
                    "CAST(? AS DATE) AND CAST(? AS DATE)", [months[0], months[-1]])
        con.register("new_reasons", reasons)
        con.execute(f"INSERT INTO {EXPLANATIONS_TABLE} SELECT {', '.join(EXPLANATION_COLUMNS)} "
                    "FROM new_reasons")
        con.unregister("new_reasons")
        total = con.execute(f"SELECT count(*) FROM {EXPLANATIONS_TABLE}").fetchone()[0]
    partition_row_counts(context, reasons["snapshot_month"].astype(str).value_counts().to_dict() if len(reasons) else {})
    return dg.MaterializeResult(metadata={
        **table_metadata(row_count=total),
        "model_version": model.version,
        "customers_explained": sum(len(f) for f in frames.values()),
        "method_by_month": dg.MetadataValue.json(methods),
        "example_query": dg.MetadataValue.md(
            "```sql\nSELECT direction, rank, feature, feature_value, shap_value\n"
            f"FROM {EXPLANATIONS_TABLE}\nWHERE customer_id = '<id>' AND snapshot_month = "
            f"DATE '{months[-1]}'\nORDER BY direction DESC, rank;\n```"),
    })


# -- the HTTP service's snapshot and score log ----------------------------------------------


@dg.asset(
    key=SERVING_SNAPSHOT_KEY,
    deps=[CUSTOMER_FEATURES_KEY, TRAINING_SET_KEY, CHAMPION_KEY],
    group_name="ml",
    kinds={"duckdb", "parquet"},
    code_version="serving-snapshot-v1",
    description="What `churn serve` answers from without a warehouse connection: every customer's latest row "
                "of features.customer_features as Parquet, the champion's and the challenger's versions and "
                "hashes, and the training range of every numeric feature, under artifacts/serving/. The service "
                "loads a new snapshot when this asset writes one.",
)
def serving_snapshot(context: dg.AssetExecutionContext, serving_policy: ServingPolicy, warehouse: Warehouse,
                     artifacts: ArtifactStore) -> dg.MaterializeResult:
    from churn_assets.scoring.serving import pointer_path, write_snapshot

    with warehouse.read() as con:
        described = write_snapshot(con, artifacts.root_path, serving_policy.challenger)
    models = described["models"]
    challenger = models.get("challenger")
    context.log.info(f"Serving snapshot {described['snapshot_id']}: {described['customers']:,} customers, "
                     f"champion {models['champion']['version']}, challenger "
                     f"{challenger['version'] if challenger else 'none'}")
    return dg.MaterializeResult(metadata={
        "snapshot_id": dg.MetadataValue.text(described["snapshot_id"]),
        "customers": dg.MetadataValue.int(described["customers"]),
        "latest_feature_month": dg.MetadataValue.text(described["feature_months"]["last"] or ""),
        "champion_version": dg.MetadataValue.text(models["champion"]["version"]),
        "challenger_version": dg.MetadataValue.text(challenger["version"] if challenger else "none"),
        "pointer": dg.MetadataValue.path(str(pointer_path(artifacts.root_path))),
    })


score_log = dg.AssetSpec(
    SCORE_LOG_KEY,
    deps=[SERVING_SNAPSHOT_KEY],
    group_name="ml",
    kinds={"duckdb", "fastapi"},
    code_version="score-log-v1",
    description="serving.score_log: one row per score `churn serve` computed (customer, feature month, model "
                "version, arm, answered or shadow, probability, band, latency), written by the service's "
                "background writer. Not materialized by a run.",
    metadata=table_metadata(column_schema=described_schema(SCORE_LOG_COLUMNS), table_name=SCORE_LOG_TABLE),
)

scoring_assets = [predictions, explanations, serving_snapshot, score_log]
