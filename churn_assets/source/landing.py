"""The landing folder: files dropped into ``$CHURN_HOME/landing/`` become monthly deliveries.

Two shapes are accepted, and the month comes from the name:

- ``<anything>YYYY-MM.csv`` (or ``.csv.gz``; e.g. ``telco_2025-06.csv``): a Telco-format CSV, one
  labelled month;
- ``YYYY-MM/`` holding ``customers.parquet``, ``subscriptions.parquet``, ``events.parquet`` and
  ``cancellations.parquet``: a delivery in the raw contract.

Each item is validated in full before anything is written. A valid item becomes the month's
delivery and moves to ``landing/processed/``; an invalid one moves to ``landing/rejected/``
with a ``.error.txt`` beside it; so does any other file, with the reason. Delivering a month again with identical content is a no-op;
different content for a delivered month is rejected (replace it with `churn ingest --replace`).
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from churn_assets.source.contract import RAW_TABLES

MONTH_IN_NAME = re.compile(r"(\d{4})-(\d{2})(?!.*\d{4}-\d{2})")
PROCESSED = "processed"
REJECTED = "rejected"


@dataclass(frozen=True)
class LandingOutcome:
    item: str
    status: str  # delivered | duplicate | rejected | waiting
    month: str | None = None
    detail: str = ""


def pending_items(landing: Path) -> list[Path]:
    """Items waiting in the landing folder, oldest name first (hidden and in-progress names skipped)."""
    if not landing.is_dir():
        return []
    items = []
    for path in sorted(landing.iterdir()):
        if path.name.startswith((".", "_")) or path.name in (PROCESSED, REJECTED):
            continue
        # Every other file is an item too: process_item rejects what it cannot read, with the
        # reason, instead of leaving it in the folder forever.
        items.append(path)
    return items


def _month_of(path: Path) -> str:
    from churn_assets.source.ingest import IngestError, partition_month

    match = MONTH_IN_NAME.search(path.stem if path.is_file() else path.name)
    if not match:
        raise IngestError(
            f"{path.name}: the name carries no month; name it like telco_2025-06.csv or 2025-06/"
        )
    return partition_month(f"{match.group(1)}-{match.group(2)}")


def _read_item(path: Path, month: str):
    """The item's delivery frames, validated against the contract."""
    import pandas as pd

    from churn_assets.source.deliveries import ContractError, coerce_to_contract

    if path.is_file():
        from churn_assets.source.ingest import read_telco_csv, telco_to_delivery

        frames = telco_to_delivery(read_telco_csv(path), month, str(path))
        return {
            name: coerce_to_contract(table, frames[name], f"{path} ({name})")
            for name, table in RAW_TABLES.items()
        }
    missing = [f"{name}.parquet" for name in RAW_TABLES if not (path / f"{name}.parquet").exists()]
    if missing:
        raise ContractError(f"{path}: missing {', '.join(missing)}")
    frames = {}
    for name, table in RAW_TABLES.items():
        file = path / f"{name}.parquet"
        try:
            frame = pd.read_parquet(file)
        except Exception as error:  # pyarrow raises several unrelated types
            raise ContractError(f"{file}: not a readable Parquet file ({error})") from None
        frames[name] = coerce_to_contract(table, frame, str(file))
    return frames


def _same_content(a: dict, b: dict) -> bool:
    for name, table in RAW_TABLES.items():
        left = a[name].sort_values(list(table.key)).reset_index(drop=True)
        right = b[name].sort_values(list(table.key)).reset_index(drop=True)
        if len(left) != len(right) or not left.astype(str).equals(right.astype(str)):
            return False
    return True


def _move(path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{time.strftime('%Y%m%dT%H%M%S')}_{path.name}"
    shutil.move(str(path), target)
    return target


def process_item(path: Path, source: Path) -> LandingOutcome:
    """Validate one landing item and turn it into its month's delivery (or reject it)."""
    from churn_assets.source.deliveries import ContractError, delivery_dir, read_delivery, write_delivery

    landing = path.parent
    try:
        if path.is_file() and not path.name.lower().endswith((".csv", ".csv.gz")):
            raise ContractError(f"{path.name}: not a landing item: drop a Telco-format CSV named like "
                                "telco_2025-06.csv, or a YYYY-MM/ folder of raw-contract Parquet files")
        month = _month_of(path)
        frames = _read_item(path, month)
        if delivery_dir(source, month).exists():
            if _same_content(frames, read_delivery(source, month)):
                _move(path, landing / PROCESSED)
                return LandingOutcome(path.name, "duplicate", month, "identical to the existing delivery")
            raise FileExistsError(
                f"{path.name}: {month[:7]} was already delivered with different content; "
                f"to replace it run `churn ingest {path} --format telco --month {month[:7]} --replace`"
            )
        write_delivery(source, month, frames)
    except (ValueError, FileExistsError, OSError) as error:  # ContractError is a ValueError
        rejected = _move(path, landing / REJECTED)
        rejected.with_name(rejected.name + ".error.txt").write_text(f"{error}\n")
        return LandingOutcome(path.name, "rejected", None, str(error))
    _move(path, landing / PROCESSED)
    return LandingOutcome(path.name, "delivered", month, f"{len(frames['subscriptions']):,} snapshots")
