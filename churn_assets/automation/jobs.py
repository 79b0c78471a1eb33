"""Jobs, sensors and the schedule that keep the platform current without a person.

- landing_sensor: files dropped into $CHURN_HOME/landing/ become monthly deliveries; every
  delivered month whose raw partition is not loaded yet gets one run (data layers, plus
  scoring and monitoring once a champion exists).
- retraining_sensor: when drift or decay crossed the error line, or enough new labelled
  months arrived since the champion was trained, it launches the training job once per
  cause (the run key names the cause, month and champion); ml/champion decides.
- monthly_scoring_schedule: scores each month when it closes, if it was delivered.
Both sensors start stopped; switch them on in the UI (Automation) or with
`dagster sensor start`.
"""

import os

import dagster as dg

from churn_assets.core import keys
from churn_assets.core.warehouse import Warehouse, WarehouseBusyError, WarehouseMissingError
from churn_assets.monitoring.drift import DriftPolicy
from churn_assets.monitoring.retraining import RetrainingPolicy
from churn_assets.training.assets import CANDIDATE_ASSET_KEYS

TRAINING_KEYS = [
    *CANDIDATE_ASSET_KEYS, keys.MODEL_VERSIONS_KEY, keys.CHAMPION_KEY,
    keys.EVALUATION_REPORT_KEY, keys.SHAP_SUMMARY_KEY, keys.SERVING_SNAPSHOT_KEY,
]
SCORING_KEYS = [
    keys.PREDICTIONS_KEY, keys.EXPLANATIONS_KEY, keys.DRIFT_KEY, keys.REALISED_PERFORMANCE_KEY,
    keys.SERVING_SNAPSHOT_KEY, keys.SERVING_ARMS_KEY,
]
DATA_LAYERS = dg.AssetSelection.groups("raw", "staging", "features")
RAW_LOADED_MARKER = dg.AssetKey(["raw", "subscriptions"])

# Runs launched from the UI, a sensor or the schedule log at INFO on the terminal of `churn ui`
# (Dagster's console logger defaults to DEBUG: every event of every step).
RUN_LOGGING = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}

# What `churn run` and `churn demo` launch (a subset of it for `churn ingest`): a named job, so
# the UI shows the run's target. (Re-executing a CLI run from the UI is refused: its stored
# run config names the CLI's progress logger, which the code location does not define.)
FULL_REFRESH_JOB = "full_refresh"
full_refresh_job = dg.define_asset_job(
    FULL_REFRESH_JOB,
    selection=dg.AssetSelection.all(),
    description="Every asset and check for the delivered months: raw data to monitoring.",
    config=RUN_LOGGING,
)
data_refresh_job = dg.define_asset_job(
    "data_refresh",
    selection=DATA_LAYERS,
    description="Load a month's delivery and rebuild staging and features for it.",
    config=RUN_LOGGING,
)
monthly_refresh_job = dg.define_asset_job(
    "monthly_refresh",
    selection=DATA_LAYERS | dg.AssetSelection.assets(*SCORING_KEYS),
    description="data_refresh, then score the month with the champion and measure drift.",
    config=RUN_LOGGING,
)
monthly_scoring_job = dg.define_asset_job(
    "monthly_scoring",
    selection=dg.AssetSelection.assets(*SCORING_KEYS),
    description="Score a month with the champion, explain it, measure drift and realised performance.",
    config=RUN_LOGGING,
)
training_job = dg.define_asset_job(
    "retrain",
    selection=dg.AssetSelection.assets(*TRAINING_KEYS),
    description="Train every candidate model; ml/champion decides whether the best becomes champion.",
    config=RUN_LOGGING,
)

@dg.schedule(
    job=monthly_scoring_job,
    cron_schedule="0 6 2 * *",
    name="monthly_scoring_schedule",
    description="Two days after a month closes, scores it if it was delivered; otherwise skips, naming it.",
)
def monthly_scoring_schedule(context: dg.ScheduleEvaluationContext):
    from churn_assets.core.partitions import delivered_months

    tick = context.scheduled_execution_time
    closed = f"{tick.year - (tick.month == 1):04d}-{(tick.month - 2) % 12 + 1:02d}-01"
    if closed not in delivered_months(context.instance):
        return dg.SkipReason(f"No delivery for {closed[:7]}: nothing to score (it runs when the month arrives).")
    return dg.RunRequest(run_key=f"scoring-{closed[:7]}", partition_key=closed,
                         tags={"churn/trigger": "schedule"})


def _champion_exists(warehouse: Warehouse) -> bool:
    from churn_assets.monitoring.champion import champion_record

    try:
        with warehouse.read() as con:
            return champion_record(con) is not None
    except WarehouseMissingError:
        return False


@dg.sensor(
    jobs=[data_refresh_job, monthly_refresh_job],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "Ingests files dropped into $CHURN_HOME/landing/ (telco_YYYY-MM.csv, or a YYYY-MM/ "
        "folder of raw-contract Parquet files) and runs each newly delivered month."
    ),
)
def landing_sensor(context: dg.SensorEvaluationContext, warehouse: Warehouse):
    from churn_assets.core.paths import landing_dir, source_dir
    from churn_assets.source.deliveries import available_months, delivery_dir
    from churn_assets.source.landing import pending_items, process_item

    source = source_dir()
    for item in pending_items(landing_dir()):
        outcome = process_item(item, source)
        log = context.log.warning if outcome.status == "rejected" else context.log.info
        log(f"landing: {outcome.item}: {outcome.status}. {outcome.detail}")

    # Reconcile: every delivered month whose raw partition is not loaded gets a run. The
    # run key carries the delivery's modification time, so a replaced delivery runs again
    # while a sensor tick that repeats itself (after a crash, say) requests nothing new.
    from churn_assets.core.partitions import register_months

    delivered = available_months(source)
    # A delivered month becomes a partition in the tick that runs it (in calendar order, which
    # a SensorResult's add request would not keep for history delivered late).
    register_months(context.instance, delivered)
    loaded = context.instance.get_materialized_partitions(RAW_LOADED_MARKER)
    waiting = [m for m in delivered if m not in loaded]
    if not waiting:
        return dg.SkipReason("No new deliveries.")
    try:
        scoring = _champion_exists(warehouse)
    except WarehouseBusyError:
        return dg.SkipReason("The warehouse is busy; deliveries will be picked up next tick.")
    job = monthly_refresh_job if scoring else data_refresh_job
    stamps = "-".join(
        f"{month[:7]}@{os.stat(delivery_dir(source, month)).st_mtime_ns}" for month in waiting
    )
    tags = {"churn/trigger": "landing", "churn/months": ",".join(m[:7] for m in waiting)}
    if len(waiting) == 1:
        return dg.RunRequest(
            run_key=f"delivery-{stamps}", partition_key=waiting[0], job_name=job.name, tags=tags
        )
    # Several months at once (a backfill dropped in one go) run as one range: every
    # partitioned asset has a single-run backfill policy. Months in between that were
    # already loaded are reloaded, which is idempotent.
    return dg.RunRequest(
        run_key=f"delivery-{stamps}",
        job_name=job.name,
        tags={
            **tags,
            "dagster/asset_partition_range_start": waiting[0],
            "dagster/asset_partition_range_end": waiting[-1],
        },
    )


@dg.sensor(
    job=training_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "Launches `retrain` when the latest drift or realised-performance decay crossed "
        "its line, or when enough new labelled months arrived since the champion was "
        "trained. One run per cause (run keys), so it never repeats itself on every tick."
    ),
)
def retraining_sensor(
    context: dg.SensorEvaluationContext, warehouse: Warehouse, retraining_policy: RetrainingPolicy,
    drift_policy: DriftPolicy,
):
    from churn_assets.monitoring.retraining import retraining_reasons

    settings = retraining_policy
    try:
        with warehouse.read() as con:
            reasons = retraining_reasons(
                con,
                drift=drift_policy.thresholds(),
                decay_margin=settings.decay_margin,
                new_labelled_months=settings.new_labelled_months,
                first_model_labelled_months=settings.first_model_labelled_months,
            )
    except WarehouseMissingError:
        return dg.SkipReason("No warehouse yet.")
    except WarehouseBusyError:
        return dg.SkipReason("The warehouse is busy; evaluated again next tick.")
    if not reasons:
        return dg.SkipReason("No drift, decay or new labelled data calls for retraining.")
    for reason in reasons:
        context.log.info(f"retrain: {reason.kind} ({reason.detail})")
    # One training run answers every current reason; its key joins them, so each distinct
    # cause launches exactly once.
    return dg.RunRequest(
        run_key="|".join(sorted(r.run_key for r in reasons)),
        job_name=training_job.name,
        tags={
            "churn/trigger": "retraining",
            "churn/retrain_reasons": ",".join(sorted({r.kind for r in reasons})),
        },
    )


jobs = [full_refresh_job, data_refresh_job, monthly_refresh_job, monthly_scoring_job, training_job]
schedules = [monthly_scoring_schedule]
sensors = [landing_sensor, retraining_sensor]
