"""The SQL layer's Definitions: the project's sql/ models as assets, their YAML and singular
tests as checks, and the blocking point-in-time leakage check."""

import dagster as dg

from churn_assets.core.paths import BUILTIN_SQL_DIR
from churn_assets.source.raw_assets import RAW_ASSET_KEYS
from churn_assets.sql_models.point_in_time_check import build_point_in_time_check
from churn_assets.sql_models.project import load_sql_project

sql_project = load_sql_project(BUILTIN_SQL_DIR, RAW_ASSET_KEYS)

defs = dg.Definitions(
    assets=sql_project.assets,
    asset_checks=[*sql_project.asset_checks, build_point_in_time_check(sql_project)],
)
