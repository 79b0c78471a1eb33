"""The code location: one Definitions object with every asset, check, sensor and resource."""

import warnings
from pathlib import Path

import dagster as dg

# Single-run backfill policies on partitioned assets are "beta" in Dagster 1.13; the
# warning would be printed by every process that loads the code location.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")

from churn_assets.automation import jobs as automation
from churn_assets.training.assets import ml_asset_checks, ml_assets
from churn_assets.evaluation.assets import evaluation_asset_checks, evaluation_assets
from churn_assets.monitoring.assets import monitoring_assets, monitoring_checks
from churn_assets.core.warehouse import default_resources
from churn_assets.source.raw_assets import RAW_ASSET_KEYS, raw_deliveries
from churn_assets.sql_models import load_sql_project
from churn_assets.sql_models.point_in_time_check import build_point_in_time_check

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"

sql_project = load_sql_project(SQL_DIR, RAW_ASSET_KEYS)

defs = dg.Definitions(
    assets=[
        raw_deliveries,
        *sql_project.assets,
        *ml_assets,
        *evaluation_assets,
        *monitoring_assets,
    ],
    asset_checks=[
        *sql_project.asset_checks,
        build_point_in_time_check(SQL_DIR),
        *ml_asset_checks,
        *evaluation_asset_checks,
        *monitoring_checks,
    ],
    jobs=automation.jobs,
    schedules=automation.schedules,
    sensors=automation.sensors,
    resources=default_resources(),
)
