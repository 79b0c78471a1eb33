"""Dagster wiring of the monitoring layer: drift and realised performance, and their checks.

- ``monitoring/drift`` (monthly partitions): per-feature drift and PSI of the month
  against the champion's training months, prediction drift, Evidently HTML report.
  Writes ``monitoring.drift`` and ``monitoring.drift_summary``.
- ``monitoring/realised_performance`` (unpartitioned): AUC, PR-AUC, Brier and ECE of each
  month's predictions once its labels are known. Unpartitioned because its input,
  ``features.labels``, is one table recomputed as a whole: when month M+1 lands it is
  month M's row that changes, which a month-M+1 partition could not express; the refresh
  recomputes only months whose labelled predictions changed.

The checks read the tables only, so ``churn check`` evaluates them without
re-materializing; with nothing measured yet they pass and say so. Levels come from the
``drift_policy`` and ``retraining_policy`` resources, which the retraining sensor reads too.
"""

import time
from typing import Any

import dagster as dg

from churn_assets.core.keys import (
    CHAMPION_KEY,
    CUSTOMER_FEATURES_KEY,
    DRIFT_KEY,
    LABELS_KEY,
    MODEL_VERSIONS_KEY,
    PREDICTIONS_KEY,
    REALISED_PERFORMANCE_KEY,
    TRAINING_SET_KEY,
)
from churn_assets.core.metadata import (
    CheckVerdict,
    markdown_table,
    silenced_backfill_warning,
    table_metadata,
    table_schema,
)
from churn_assets.core.partitions import monthly_partitions
from churn_assets.core.warehouse import WAREHOUSE_POOL, ArtifactStore, Warehouse
from churn_assets.monitoring.drift import (
    DRIFT_COLUMNS,
    DRIFT_SUMMARY_TABLE,
    DRIFT_TABLE,
    DriftPolicy,
    check_drift_share,
    check_max_psi,
    check_prediction_drift,
)
from churn_assets.monitoring.performance import PERFORMANCE_COLUMNS, PERFORMANCE_TABLE, check_decay
from churn_assets.monitoring.retraining import RetrainingPolicy


# -- drift -------------------------------------------------------------------------------


def drift_for_months(
    warehouse: Warehouse,
    artifacts: ArtifactStore,
    months: list[str],
    policy: DriftPolicy,
    log=None,
) -> list[dict[str, Any]]:
    """Compute and store drift for ``months`` against the champion; returns the summaries.

    Each month's reference is a sample of the champion's training months before it
    (``reference_months_for``); months sharing a reference share its sample and scores.
    Features are weighted by the champion's mean |SHAP| on the latest month's reference.
    Reads happen on short read-only connections (a long one would keep other processes
    from writing), the Evidently work between them, and all months are written in one
    transaction at the end.
    """
    from churn_assets.training.registry import load_champion
    from churn_assets.monitoring.champion import model_record
    from churn_assets.monitoring.drift import (
        DriftError,
        compute_drift,
        current_sample,
        feature_importance,
        first_of_month,
        reference_months_for,
        reference_sample,
        write_drift,
        write_drift_report,
    )

    settings, thresholds = policy.settings(), policy.thresholds()
    model = load_champion(artifacts.root_path, warehouse)
    roles = model.feature_spec.roles
    numeric, categorical = list(roles.numeric), list(roles.categorical)
    with warehouse.read() as con:
        record = model_record(con, model.version)
    train_months = record.train_months if record else []
    if not train_months:
        raise DriftError("The champion records no training months: no reference to compare with")
    references: dict[tuple, tuple] = {}

    def reference_for(month: str) -> tuple:
        chosen = tuple(reference_months_for(month, train_months, settings.reference_months))
        if chosen not in references:
            with warehouse.read() as con:
                frame = reference_sample(
                    con, chosen, [*numeric, *categorical], sample_rows=settings.sample_rows, seed=settings.seed
                )
            references[chosen] = (chosen, frame, model.predict_proba(frame))
        return references[chosen]

    ordered = sorted(months)
    importance = feature_importance(model, reference_for(ordered[-1])[1], settings, log) if ordered else None
    report_months = {"latest": set(ordered[-1:]), "all": set(months), "none": set()}[policy.html_reports]
    results = []
    for month in ordered:
        chosen, reference, reference_predictions = reference_for(month)
        with warehouse.read() as con:
            current = current_sample(
                con, month, [*numeric, *categorical], sample_rows=settings.sample_rows, seed=settings.seed
            )
        if current.empty:
            raise DriftError(f"features.customer_features has no rows for {month[:7]}: materialize it first")
        current_predictions = current["churn_probability"] if current["churn_probability"].notna().all() else None
        if current_predictions is None and log:
            log.warning(f"{month[:7]} is not (fully) scored yet: prediction drift left out")
        result = compute_drift(
            reference, current, numeric, categorical,
            reference_predictions=reference_predictions, current_predictions=current_predictions,
            settings=settings, thresholds=thresholds, importance=importance,
        )
        result.summary["reference_months"] = ", ".join(f"{m:%Y-%m}" for m in chosen)
        result.summary["reference_precedes"] = max(chosen) < first_of_month(month)
        report_path = None
        if month in report_months:
            started = time.perf_counter()
            reference_frame = reference.assign(churn_probability=reference_predictions)
            current_frame = current if current_predictions is not None else current.drop(columns="churn_probability")
            report_path = str(write_drift_report(
                reference_frame, current_frame, numeric, categorical,
                artifacts.path("reports", "drift", f"{month[:7]}.html"), settings=settings,
            ))
            if log:
                log.info(f"Evidently report for {month[:7]} in {time.perf_counter() - started:.1f}s")
        results.append((month, result, report_path))
    with warehouse.write() as con:
        for month, result, report_path in results:
            write_drift(con, month, result, model.version, report_path)
    return [
        {"month": month, **result.summary, "model_version": model.version, "report_path": report_path,
         "features": result.features}
        for month, result, report_path in results
    ]


def _drift_asset():
    @dg.asset(
        key=DRIFT_KEY,
        deps=[CUSTOMER_FEATURES_KEY, PREDICTIONS_KEY, TRAINING_SET_KEY, CHAMPION_KEY],
        partitions_def=monthly_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=WAREHOUSE_POOL,
        group_name="monitoring",
        kinds={"duckdb", "evidently"},
        code_version="drift-v1",
        description=(
            "Per-feature drift (Evidently tests and PSI) of the month against a sample of the "
            "champion's training months, prediction drift, and an Evidently HTML report. Writes "
            f"{DRIFT_TABLE} (one row per feature) and {DRIFT_SUMMARY_TABLE} (one row per month)."
        ),
        metadata=table_metadata(column_schema=table_schema(DRIFT_COLUMNS), table_name=DRIFT_TABLE),
    )
    def drift(
        context: dg.AssetExecutionContext, drift_policy: DriftPolicy, warehouse: Warehouse,
        artifacts: ArtifactStore
    ) -> dg.MaterializeResult:
        started = time.perf_counter()
        summaries = drift_for_months(warehouse, artifacts, list(context.partition_keys), drift_policy, context.log)
        with warehouse.read() as con:
            total = con.execute(f"SELECT count(*) FROM {DRIFT_TABLE}").fetchone()[0]
        latest = summaries[-1]
        top = latest["features"].sort_values("psi", ascending=False).head(10)
        metadata: dict[str, Any] = {
            **table_metadata(row_count=total, partition_row_count=len(latest["features"]) if len(summaries) == 1 else None),
            "summary": dg.MetadataValue.md(markdown_table([
                "month", "share_drifted", "drifted_features", "features_checked", "max_psi",
                "max_psi_feature", "prediction_drift_score", "prediction_drifted",
            ], summaries)),
            "top_features_by_psi": dg.MetadataValue.md(markdown_table(
                ["feature", "kind", "psi", "drift_score", "drifted", "stattest"], top.to_dict("records")
            )),
            "share_drifted": dg.MetadataValue.float(float(latest["share_drifted"])),
            "max_psi": dg.MetadataValue.float(float(latest["max_psi"] or 0.0)),
            "model_version": dg.MetadataValue.text(latest["model_version"]),
            "reference_rows": dg.MetadataValue.int(latest["reference_rows"]),
            "seconds": dg.MetadataValue.float(round(time.perf_counter() - started, 2)),
        }
        if latest["prediction_drift_score"] is not None:
            metadata["prediction_drift_score"] = dg.MetadataValue.float(float(latest["prediction_drift_score"]))
        reports = {s["month"][:7]: s["report_path"] for s in summaries if s["report_path"]}
        if reports:
            newest = reports[max(reports)]
            metadata["report"] = dg.MetadataValue.path(newest)
            metadata["report_url"] = dg.MetadataValue.url(f"file://{newest}")
            metadata["reports"] = dg.MetadataValue.json(reports)
        return dg.MaterializeResult(metadata=metadata)

    return drift


drift = silenced_backfill_warning(_drift_asset)


# -- realised performance ----------------------------------------------------------------


@dg.asset(
    key=REALISED_PERFORMANCE_KEY,
    deps=[PREDICTIONS_KEY, LABELS_KEY, MODEL_VERSIONS_KEY],
    pool=WAREHOUSE_POOL,
    group_name="monitoring",
    kinds={"duckdb", "scikit-learn"},
    code_version="realised-performance-v1",
    description=(
        f"{PERFORMANCE_TABLE}: ROC-AUC, PR-AUC, Brier score and expected calibration error of "
        "each month's predictions once the following month has revealed who churned, next to "
        "the test AUC of the model that made them."
    ),
    metadata=table_metadata(column_schema=table_schema(PERFORMANCE_COLUMNS), table_name=PERFORMANCE_TABLE),
)
def realised_performance(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    from churn_assets.monitoring.performance import compute_month, plan_refresh, write_performance

    with warehouse.read() as con:
        plan = plan_refresh(con)
        rows = [compute_month(con, month, version) for month, version in plan.to_compute]
    with warehouse.write() as con:
        write_performance(con, rows, plan.to_remove)
        stored = con.execute(
            f"SELECT month, model_version, rows, positives, auc, pr_auc, brier, ece, champion_test_auc "
            f"FROM {PERFORMANCE_TABLE} ORDER BY month"
        ).df().to_dict("records")
    context.log.info(
        f"Realised performance: {len(plan.to_compute)} month(s) computed, {len(plan.unchanged)} unchanged, "
        f"{len(plan.to_remove)} removed"
    )
    metadata: dict[str, Any] = {
        **table_metadata(row_count=len(stored)),
        "months_computed": dg.MetadataValue.int(len(plan.to_compute)),
        "months_unchanged": dg.MetadataValue.int(len(plan.unchanged)),
        "by_month": dg.MetadataValue.md(markdown_table([
            "month", "model_version", "rows", "positives", "auc", "pr_auc", "brier", "ece", "champion_test_auc",
        ], stored)) if stored else dg.MetadataValue.text("no month has labels for its predictions yet"),
    }
    if stored:
        latest = stored[-1]
        for name in ("auc", "pr_auc", "brier", "ece"):
            value = latest[name]
            if value is not None and value == value:
                metadata[f"latest_{name}"] = dg.MetadataValue.float(float(value))
        metadata["latest_month"] = dg.MetadataValue.text(f"{latest['month']:%Y-%m}")
    return dg.MaterializeResult(metadata=metadata)


# -- checks --------------------------------------------------------------------------------


def verdict_result(verdict: CheckVerdict, extra: dict[str, Any] | None = None) -> dg.AssetCheckResult:
    passed, severity, metadata = verdict
    description = metadata.get("description", "")
    values = {k: v for k, v in {**metadata, **(extra or {})}.items() if k != "description" and v is not None}
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR if severity == "ERROR" else dg.AssetCheckSeverity.WARN,
        description=description,
        metadata=values,
    )


def _drift_verdict(warehouse: Warehouse, policy: DriftPolicy, check) -> dg.AssetCheckResult:
    from churn_assets.monitoring.drift import latest_drift_summary

    with warehouse.read() as con:
        summary = latest_drift_summary(con)
    if summary is None:
        return dg.AssetCheckResult(passed=True, description="no month's drift has been measured yet")
    passed, severity, metadata = check(summary, policy.thresholds())
    metadata["description"] = f"{summary['month']:%Y-%m}: {metadata['description']}"
    return verdict_result((passed, severity, metadata), {
        "month": f"{summary['month']:%Y-%m}", "model_version": summary["model_version"],
    })


@dg.asset_check(asset=DRIFT_KEY, name="drift_share",
                description="Share of features whose Evidently drift test fires in the latest month.")
def drift_share_check(drift_policy: DriftPolicy, warehouse: Warehouse) -> dg.AssetCheckResult:
    return _drift_verdict(warehouse, drift_policy, check_drift_share)


@dg.asset_check(asset=DRIFT_KEY, name="max_psi",
                description="Largest population stability index of any feature in the latest month.")
def max_psi_check(drift_policy: DriftPolicy, warehouse: Warehouse) -> dg.AssetCheckResult:
    return _drift_verdict(warehouse, drift_policy, check_max_psi)


@dg.asset_check(asset=DRIFT_KEY, name="prediction_drift",
                description="Drift of churn_probability against the champion's reference predictions.")
def prediction_drift_check(drift_policy: DriftPolicy, warehouse: Warehouse) -> dg.AssetCheckResult:
    return _drift_verdict(warehouse, drift_policy, check_prediction_drift)


@dg.asset_check(asset=REALISED_PERFORMANCE_KEY, name="performance_decay",
                description="Realised AUC of the latest labelled month against the model's test AUC.")
def performance_decay_check(retraining_policy: RetrainingPolicy, warehouse: Warehouse) -> dg.AssetCheckResult:
    from churn_assets.monitoring.performance import latest_performance

    with warehouse.read() as con:
        latest = latest_performance(con)
    return verdict_result(check_decay(latest, retraining_policy.decay()))


monitoring_assets = [drift, realised_performance]
monitoring_checks = [drift_share_check, max_psi_check, prediction_drift_check, performance_decay_check]
