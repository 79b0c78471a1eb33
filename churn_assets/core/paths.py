"""Where the platform keeps its files. Everything lives under ``$CHURN_HOME``."""

from __future__ import annotations

import os
from pathlib import Path

from churn_assets.core.project import BUILTIN_SQL_DIR, REPO_ROOT, active_project  # noqa: F401

DEFAULT_HOME = "data"


class HomeError(OSError):
    """``$CHURN_HOME`` cannot hold the platform's files; the message says why and what to do."""
# What `churn ui` hands to the Dagster webserver and daemon.
WORKSPACE_FILE = REPO_ROOT / "workspace.yaml"


def churn_home() -> Path:
    """``$CHURN_HOME`` as an absolute path, created on first use. Default: the active dataset
    project's ``data/`` folder, or ``./data`` for the built-in project."""
    value = os.environ.get("CHURN_HOME")
    if not value:
        value = active_project().data_dir or DEFAULT_HOME
    home = Path(value).expanduser().resolve()
    try:
        home.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise HomeError(f"CHURN_HOME {home} is a file, not a folder: point CHURN_HOME at a folder") from None
    except PermissionError:
        raise HomeError(f"CHURN_HOME {home} cannot be created: permission denied") from None
    if not os.access(home, os.W_OK | os.X_OK):
        raise HomeError(f"CHURN_HOME {home} is not writable: point CHURN_HOME at a folder you can write")
    return home


def warehouse_path(home: Path | None = None) -> Path:
    return (home or churn_home()) / "warehouse.duckdb"


def duckdb_temp_dir(home: Path | None = None) -> Path:
    """Where DuckDB spills what does not fit its memory_limit (created by DuckDB when needed,
    emptied when the connection closes): under $CHURN_HOME, not the working directory's
    ``.tmp`` (DuckDB's default), which may be read-only or on a small disk."""
    return (home or churn_home()) / "duckdb_tmp"


def spark_warehouse_dir(home: Path | None = None) -> Path:
    """The Spark engine's tables when no warehouse location is configured:
    ``spark-warehouse/<schema>/<table>/`` Parquet (docs/scale-out.md)."""
    return (home or churn_home()) / "spark-warehouse"


def source_dir(home: Path | None = None) -> Path:
    """Monthly deliveries the raw layer loads: ``source/YYYY-MM/<table>.parquet``."""
    return (home or churn_home()) / "source"


def artifacts_dir(home: Path | None = None) -> Path:
    return (home or churn_home()) / "artifacts"


def landing_dir(home: Path | None = None) -> Path:
    return (home or churn_home()) / "landing"
