"""The code location: one Definitions object with every asset, check, sensor and resource."""

from pathlib import Path

import dagster as dg

from churn_assets.resources import default_resources
from churn_assets.source.raw_assets import RAW_ASSET_KEYS, raw_deliveries
from churn_assets.sql_models import load_sql_project

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"

sql_project = load_sql_project(SQL_DIR, RAW_ASSET_KEYS)

defs = dg.Definitions(
    assets=[raw_deliveries, *sql_project.assets],
    asset_checks=[*sql_project.asset_checks],
    resources=default_resources(),
)
