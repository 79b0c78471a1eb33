"""Where the platform keeps its files. Everything lives under ``$CHURN_HOME``."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = "data"
REPO_ROOT = Path(__file__).resolve().parents[2]
# The built-in synthetic telecom project's SQL models (the repository's sql/).
BUILTIN_SQL_DIR = REPO_ROOT / "sql"
# What `churn ui` hands to `dagster dev`.
WORKSPACE_FILE = REPO_ROOT / "workspace.yaml"


def churn_home() -> Path:
    """``$CHURN_HOME`` as an absolute path (default ``./data``), created on first use."""
    home = Path(os.environ.get("CHURN_HOME") or DEFAULT_HOME).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def warehouse_path(home: Path | None = None) -> Path:
    return (home or churn_home()) / "warehouse.duckdb"


def source_dir(home: Path | None = None) -> Path:
    """Monthly deliveries the raw layer loads: ``source/YYYY-MM/<table>.parquet``."""
    return (home or churn_home()) / "source"


def artifacts_dir(home: Path | None = None) -> Path:
    return (home or churn_home()) / "artifacts"


def landing_dir(home: Path | None = None) -> Path:
    return (home or churn_home()) / "landing"
