"""The dataset project a process serves: the built-in synthetic telecom project (the repository's
``sql/``), or a folder made by ``churn init`` with ``churn.yaml``, ``sql/`` and ``data/``.

The project comes from ``$CHURN_PROJECT`` (the CLI's ``--project DIR`` sets it, so child
processes such as ``dagster dev`` serve the same one). Only the project's location and its
``project:`` section (name, first month) are read here, with nothing heavier than yaml: the
rest of ``churn.yaml`` is the policy schema (``churn_assets.policies``), validated there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

REPO_ROOT = Path(__file__).resolve().parents[2]
# The built-in synthetic telecom project's SQL models (the repository's sql/).
BUILTIN_SQL_DIR = REPO_ROOT / "sql"
PROJECT_ENV = "CHURN_PROJECT"
PROJECT_FILE = "churn.yaml"
PROJECT_SQL_DIR = "sql"
PROJECT_DATA_DIR = "data"
BUILTIN_NAME = "synthetic telecom (built-in)"
# Months before this date cannot be delivered to the built-in project; CHURN_FIRST_MONTH moves it.
BUILTIN_FIRST_MONTH = "2023-01-01"


class ProjectSection(BaseModel):
    """churn.yaml ``project:``: what the project is called and its first monthly partition."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, description="Shown in the CLI's summary; default: the folder's name.")
    first_month: str = Field(default=BUILTIN_FIRST_MONTH, description="Earliest month a delivery may describe (YYYY-MM).")
    run_executor: Literal["in_process", "multiprocess"] = Field(
        default="in_process",
        description=(
            "How runs launched by the UI, a sensor or the schedule execute their steps: in_process "
            "(one process: the imports and the code location are paid once per run) or multiprocess "
            "(a process per step: isolation, at several seconds per step; the steps still queue for "
            "the warehouse). `churn run` and `churn demo` always run in process."
        ),
    )


class ProjectError(ValueError):
    """The project folder cannot be used; the message names the folder or the file."""


@dataclass(frozen=True)
class Project:
    # None for the built-in project.
    root: Path | None
    name: str
    sql_dir: Path
    first_month: str

    @property
    def builtin(self) -> bool:
        return self.root is None

    @property
    def config_file(self) -> Path | None:
        return self.root / PROJECT_FILE if self.root else None

    @property
    def data_dir(self) -> Path | None:
        """Where the project keeps its warehouse and artifacts when CHURN_HOME is not set."""
        return self.root / PROJECT_DATA_DIR if self.root else None

    def config(self) -> dict[str, Any]:
        """The parsed ``churn.yaml`` (empty for the built-in project)."""
        return _read_config(self.config_file) if self.config_file else {}


def _read_config(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise ProjectError(f"{path.parent} is not a churn project: {path.name} is missing (create one with "
                           "`churn init DIR --from FILE`)")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ProjectError(f"{path}: not valid YAML: {error}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ProjectError(f"{path}: expected a mapping of sections, got {type(values).__name__}")
    return values


def month_key(value: str) -> str:
    """Normalise 'YYYY-MM' or 'YYYY-MM-DD' to the partition key 'YYYY-MM-01'."""
    text = value.strip()
    parts = text.split("-")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
        raise ValueError(f"Not a month: {value!r} (expected YYYY-MM)")
    year, month = int(parts[0]), int(parts[1])
    if not 1 <= month <= 12:
        raise ValueError(f"Not a month: {value!r} (month must be 01-12)")
    return f"{year:04d}-{month:02d}-01"


def current_month() -> str:
    """The month in progress as a partition key (the last month a delivery or export may describe)."""
    import datetime as dt

    today = dt.date.today()
    return f"{today.year:04d}-{today.month:02d}-01"


def builtin_project() -> Project:
    first = month_key(os.environ.get("CHURN_FIRST_MONTH") or BUILTIN_FIRST_MONTH)
    return Project(root=None, name=BUILTIN_NAME, sql_dir=BUILTIN_SQL_DIR, first_month=first)


@lru_cache(maxsize=16)
def load_project(root: str | Path) -> Project:
    folder = Path(root).expanduser().resolve()
    if not folder.is_dir():
        raise ProjectError(f"Project folder {folder} does not exist (create it with `churn init {root} --from FILE`)")
    config = _read_config(folder / PROJECT_FILE)
    section = config.get("project") or {}
    if not isinstance(section, dict):
        raise ProjectError(f"{folder / PROJECT_FILE}: project: expected a mapping")
    sql_dir = folder / PROJECT_SQL_DIR
    if not sql_dir.is_dir():
        raise ProjectError(f"{folder}: the project has no {PROJECT_SQL_DIR}/ folder")
    try:
        first = month_key(os.environ.get("CHURN_FIRST_MONTH") or str(section.get("first_month") or BUILTIN_FIRST_MONTH))
    except ValueError as error:
        raise ProjectError(f"{folder / PROJECT_FILE}: project.first_month: {error}") from None
    return Project(root=folder, name=str(section.get("name") or folder.name), sql_dir=sql_dir, first_month=first)


def active_project() -> Project:
    """``$CHURN_PROJECT``'s project, else the built-in one."""
    root = os.environ.get(PROJECT_ENV)
    return load_project(root) if root else builtin_project()


def select_project(root: str | Path | None) -> Project:
    """Make ``root`` the active project for this process and its children (None: keep $CHURN_PROJECT)."""
    if root is not None:
        os.environ[PROJECT_ENV] = str(Path(root).expanduser().resolve())
    return active_project()
