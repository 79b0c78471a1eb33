"""The SQL layer's Definitions: the project's sql/ models as assets, their YAML and singular
tests as checks, and the blocking point-in-time leakage check."""

import dagster as dg

from churn_assets.core.metadata import layer_assets
from churn_assets.core.project import Project
from churn_assets.source.definitions import raw_asset_keys, raw_time_columns
from churn_assets.source.export import SourcePolicy
from churn_assets.sql_models.point_in_time_check import build_point_in_time_check
from churn_assets.sql_models.project import SqlProject, load_sql_project


# Who answers for this layer's assets (shown in the UI, for routing alerts).
OWNER = "team:analytics-engineering"


def sql_project_for(project: Project, source: SourcePolicy, engine: str = "duckdb") -> SqlProject:
    return load_sql_project(project.sql_dir, raw_asset_keys(project, source), engine=engine)


def definitions_for(project: Project, source: SourcePolicy, engine: str = "duckdb") -> dg.Definitions:
    sql_project = sql_project_for(project, source, engine)
    return dg.Definitions(
        assets=layer_assets(sql_project.assets, owner=OWNER, layer="sql"),
        asset_checks=[*sql_project.asset_checks,
                      build_point_in_time_check(sql_project, raw_time_columns(project, source))],
    )
