"""What monitoring needs to know about a registered model, read from ``ml.model_versions``.

Only the registry's table is read (version, test_auc, is_champion, created_at,
split_description), so monitoring does not depend on the registry's Python internals.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from churn_assets.core.warehouse import table_exists

if TYPE_CHECKING:
    import duckdb

MODEL_VERSIONS_TABLE = "ml.model_versions"
SPLIT_PARTS = ("train", "valid", "test")


@dataclass(frozen=True)
class ModelRecord:
    version: str
    test_auc: float | None
    is_champion: bool
    created_at: datetime | None
    # Snapshot months per split part ('train', 'valid', 'test'), as first days of months.
    split_months: dict[str, list[date]]

    @property
    def train_months(self) -> list[date]:
        return self.split_months.get("train", [])

    @property
    def last_labelled_month(self) -> date | None:
        """The latest snapshot month the model saw in any split part."""
        months = [m for part in self.split_months.values() for m in part]
        return max(months) if months else None


def _month_range(first: date, last: date) -> list[date]:
    months, current = [], date(first.year, first.month, 1)
    while current <= last:
        months.append(current)
        current = date(current.year + current.month // 12, current.month % 12 + 1, 1)
    return months


def split_months(split_description: Any) -> dict[str, list[date]]:
    """Months per split part from the registry's split description. Long lists are stored
    abbreviated as [first, '...', last]; they expand to every month in between."""
    if split_description is None:
        return {}
    described = json.loads(split_description) if isinstance(split_description, str) else split_description
    # The registry nests the parts under "parts" next to the strategy and settings.
    described = described.get("parts", described)
    result: dict[str, list[date]] = {}
    for part in SPLIT_PARTS:
        entry = described.get(part) or {}
        listed = [m for m in entry.get("months") or [] if m and m != "..."]
        months = sorted({date.fromisoformat(str(m)[:10]).replace(day=1) for m in listed})
        if "..." in (entry.get("months") or []) and months:
            months = _month_range(months[0], months[-1])
        result[part] = months
    return result


def _record(row: tuple) -> ModelRecord:
    version, test_auc, is_champion, created_at, description = row
    return ModelRecord(
        version=version,
        test_auc=float(test_auc) if test_auc is not None else None,
        is_champion=bool(is_champion),
        created_at=created_at,
        split_months=split_months(description),
    )


_SELECT = f"SELECT version, test_auc, is_champion, created_at, split_description FROM {MODEL_VERSIONS_TABLE}"


def champion_record(con: duckdb.DuckDBPyConnection) -> ModelRecord | None:
    """The current champion's registry row, or None when no model has been promoted."""
    if not table_exists(con, MODEL_VERSIONS_TABLE):
        return None
    row = con.execute(f"{_SELECT} WHERE is_champion ORDER BY created_at DESC LIMIT 1").fetchone()
    return _record(row) if row else None


def model_record(con: duckdb.DuckDBPyConnection, version: str) -> ModelRecord | None:
    if not table_exists(con, MODEL_VERSIONS_TABLE):
        return None
    row = con.execute(f"{_SELECT} WHERE version = ?", [version]).fetchone()
    return _record(row) if row else None
