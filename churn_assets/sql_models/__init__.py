"""The dbt-style SQL loader: sql/ files become Dagster assets, their YAML tests asset checks.

Importing this package is cheap; sqlglot, yaml and duckdb load only when a function runs.
"""

from churn_assets.sql_models.loader import SqlModel, SqlProjectError
from churn_assets.sql_models.project import SqlProject, load_sql_project
from churn_assets.sql_models.transpile import (
    TRANSPILE_DIALECTS,
    TranspileResult,
    transpile_model,
    transpile_report,
)

__all__ = [
    "TRANSPILE_DIALECTS",
    "SqlModel",
    "SqlProject",
    "SqlProjectError",
    "TranspileResult",
    "load_sql_project",
    "transpile_model",
    "transpile_report",
]
