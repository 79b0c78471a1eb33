"""Monthly deliveries on disk and their validation against the raw contract.

A delivery is one folder ``$CHURN_HOME/source/YYYY-MM/`` holding one Parquet file per
raw table. Folders are written under a temporary name and renamed into place, so a
reader sees a whole delivery or none. Every table is validated before it is written
and again before it is loaded, and a problem is reported with the file, column and row.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from churn_assets.source.contract import RAW_TABLES, Table

if TYPE_CHECKING:
    import pandas as pd

MAX_REPORTED_ROWS = 5


class ContractError(ValueError):
    """Data that does not meet the raw contract; the message names file, column and rows."""


def _rows(mask: pd.Series) -> str:
    # Row numbers are 1-based data rows (a CSV's header line is not counted).
    positions = [i + 1 for i, bad in enumerate(mask.to_numpy()) if bad]
    shown = ", ".join(str(p) for p in positions[:MAX_REPORTED_ROWS])
    more = f" and {len(positions) - MAX_REPORTED_ROWS} more" if len(positions) > MAX_REPORTED_ROWS else ""
    return f"row{'s' if len(positions) > 1 else ''} {shown}{more}"


def coerce_to_contract(table: Table, frame: pd.DataFrame, origin: str) -> pd.DataFrame:
    """Check ``frame`` against ``table`` and return it with the contract's column order and types.

    Raises ContractError naming ``origin`` (a file), the column and the offending rows.
    """
    import numpy as np
    import pandas as pd

    problems: list[str] = []
    missing = [c for c in table.column_names if c not in frame.columns]
    if missing:
        unexpected = sorted(set(frame.columns) - set(table.column_names))
        hint = f"; unexpected columns: {', '.join(unexpected)}" if unexpected else ""
        raise ContractError(
            f"{origin}: table '{table.name}' is missing column(s) {', '.join(missing)}{hint}"
        )
    out = {}
    for column in table.columns:
        values = frame[column.name]
        null = values.isna()
        if not column.nullable and null.any():
            problems.append(f"column '{column.name}' is empty in {_rows(null)}")
        try:
            if column.dtype == "DOUBLE":
                converted = pd.to_numeric(values, errors="coerce").astype("float64")
            elif column.dtype == "BOOLEAN":
                converted = values.map(_to_bool, na_action="ignore").astype("boolean")
            elif column.dtype == "DATE":
                converted = pd.to_datetime(values, errors="coerce").dt.normalize()
            elif column.dtype == "TIMESTAMP":
                converted = pd.to_datetime(values, errors="coerce")
            else:
                converted = values.astype("string")
        except (TypeError, ValueError) as error:
            problems.append(f"column '{column.name}' cannot be read as {column.dtype}: {error}")
            continue
        bad_type = converted.isna() & ~null
        if bad_type.any():
            example = values[bad_type].iloc[0]
            problems.append(
                f"column '{column.name}' is not {column.dtype} in {_rows(bad_type)} "
                f"(e.g. {example!r})"
            )
        if column.categories is not None:
            unknown = ~converted.isin(column.categories) & converted.notna()
            if unknown.any():
                seen = sorted({str(v) for v in converted[unknown].unique()})[:MAX_REPORTED_ROWS]
                problems.append(
                    f"column '{column.name}' has unknown value(s) {seen} in {_rows(unknown)}; "
                    f"allowed: {list(column.categories)}"
                )
        if column.minimum is not None or column.maximum is not None:
            numbers = converted.to_numpy(dtype="float64", na_value=np.nan)
            low = column.minimum if column.minimum is not None else -np.inf
            high = column.maximum if column.maximum is not None else np.inf
            out_of_range = pd.Series((numbers < low) | (numbers > high), index=converted.index)
            if out_of_range.any():
                problems.append(
                    f"column '{column.name}' is outside [{low}, {high}] in {_rows(out_of_range)}"
                )
        out[column.name] = converted
    if not problems:
        result = pd.DataFrame(out)
        duplicated = result.duplicated(subset=list(table.key), keep=False)
        if duplicated.any():
            example = result.loc[duplicated, list(table.key)].iloc[0].to_dict()
            problems.append(
                f"duplicate key ({', '.join(table.key)}) in {_rows(duplicated)} "
                f"(e.g. {example})"
            )
    if problems:
        raise ContractError(f"{origin}: " + "; ".join(problems))
    return result


def _to_bool(value):
    if isinstance(value, (bool,)) or type(value).__name__ == "bool_":
        return bool(value)
    text = str(value).strip().lower()
    if text in ("yes", "true", "1", "y", "t"):
        return True
    if text in ("no", "false", "0", "n", "f"):
        return False
    return None


def delivery_dir(source: Path, month: str) -> Path:
    """``source/YYYY-MM`` for a partition key ``YYYY-MM-01``."""
    return source / month[:7]


def available_months(source: Path) -> list[str]:
    """Partition keys of the deliveries present, oldest first."""
    if not source.exists():
        return []
    return sorted(
        f"{p.name}-01" for p in source.iterdir() if p.is_dir() and len(p.name) == 7 and p.name[4] == "-"
    )


def check_dates_in_month(frames: dict[str, pd.DataFrame], month: str, origin: str) -> None:
    """A month's delivery describes that month: every snapshot is dated in it, and no event or
    signup is dated after it ends (a row from the future would make later labels wrong).
    Cancellations may fall in the next month, no later: a one-month file (the Telco format)
    carries its label that way, and the labels treat the latest cancellation month as the data's
    horizon, so one from further ahead would turn unknown labels into "stayed"."""
    import pandas as pd

    start = pd.Timestamp(month)
    end = start + pd.offsets.MonthBegin(1)
    snapshots = pd.to_datetime(frames["subscriptions"]["snapshot_month"])
    wrong = snapshots[(snapshots < start) | (snapshots >= end)]
    if len(wrong):
        raise ContractError(f"{origin}: {len(wrong):,} subscription snapshot(s) are dated "
                            f"{wrong.iloc[0]:%Y-%m}, not the delivery month {month[:7]}")
    for table, column in (("events", "event_time"), ("customers", "signup_date")):
        values = pd.to_datetime(frames[table][column])
        late = values[values >= end]
        if len(late):
            raise ContractError(f"{origin}: {len(late):,} row(s) of {table}.{column} are dated after the delivery "
                                f"month {month[:7]} ends (e.g. {late.iloc[0]:%Y-%m-%d})")
    label_month_end = end + pd.offsets.MonthBegin(1)
    cancels = pd.to_datetime(frames["cancellations"]["cancel_date"])
    late = cancels[cancels >= label_month_end]
    if len(late):
        raise ContractError(f"{origin}: {len(late):,} row(s) of cancellations.cancel_date are dated after the month "
                            f"following the delivery month {month[:7]} (e.g. {late.iloc[0]:%Y-%m-%d}); a delivery "
                            f"may carry cancellations up to {(end + pd.offsets.MonthEnd(1)):%Y-%m-%d}")


def check_month_order(source: Path, month: str) -> None:
    """Months are delivered without gaps: the features' trailing windows and the labels read the
    months on either side. A month that would leave one out is refused, naming it."""
    import pandas as pd

    months = sorted({*available_months(source), month})
    expected = [f"{m:%Y-%m-01}" for m in pd.date_range(months[0], months[-1], freq="MS")]
    missing = [m for m in expected if m not in months]
    if missing:
        raise ContractError(f"delivery {month[:7]} would leave a gap: no delivery for "
                            f"{', '.join(m[:7] for m in missing)} (deliver the months in order)")


def write_delivery(
    source: Path,
    month: str,
    frames: dict[str, pd.DataFrame],
    *,
    replace: bool = False,
    validate: bool = True,
) -> Path:
    """Validate and write one month's delivery atomically; returns its folder.

    Refuses to overwrite an existing delivery unless ``replace``: delivering a month twice
    is almost always a mistake upstream. ``validate=False`` is for trusted producers (the
    embedded generator) at scale; the raw layer validates again when it loads the month.
    """
    validated = {
        name: (
            coerce_to_contract(RAW_TABLES[name], frames[name], f"delivery {month[:7]} table '{name}'")
            if validate
            else frames[name][RAW_TABLES[name].column_names]
        )
        for name in RAW_TABLES
        if name in frames
    }
    missing = sorted(set(RAW_TABLES) - set(validated))
    if missing:
        raise ContractError(f"delivery {month[:7]} lacks table(s): {', '.join(missing)}")
    if validated["subscriptions"].empty:
        raise ContractError(f"delivery {month[:7]} is empty: no subscription snapshots")
    if validate:
        check_dates_in_month(validated, month, f"delivery {month[:7]}")
    check_month_order(source, month)
    target = delivery_dir(source, month)
    if target.exists() and not replace:
        raise FileExistsError(f"A delivery for {month[:7]} already exists at {target}")
    source.mkdir(parents=True, exist_ok=True)
    staging = source / f".{month[:7]}.{uuid.uuid4().hex}.tmp"
    staging.mkdir()
    try:
        for name, frame in validated.items():
            # Microseconds, DuckDB's TIMESTAMP precision: Spark (and other Parquet readers)
            # refuse pandas' default nanosecond timestamps.
            frame.to_parquet(staging / f"{name}.parquet", index=False, coerce_timestamps="us",
                             allow_truncated_timestamps=True)
        if target.exists():
            old = source / f".{month[:7]}.{uuid.uuid4().hex}.old"
            os.rename(target, old)
            os.rename(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def read_delivery(source: Path, month: str) -> dict[str, pd.DataFrame]:
    """Read and validate one month's delivery; raises ContractError naming the bad file."""
    import pandas as pd

    folder = delivery_dir(source, month)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"No delivery for {month[:7]}: expected a folder {folder} "
            "(run `churn demo` or `churn ingest`)"
        )
    frames = {}
    for name, table in RAW_TABLES.items():
        path = folder / f"{name}.parquet"
        if not path.exists():
            raise ContractError(f"{path}: missing file for table '{name}'")
        try:
            frame = pd.read_parquet(path)
        except Exception as error:  # pyarrow raises several unrelated types
            raise ContractError(f"{path}: not a readable Parquet file ({error})") from error
        frames[name] = coerce_to_contract(table, frame, str(path))
    if frames["subscriptions"].empty:
        raise ContractError(f"{folder}: the month is empty (no subscription snapshots)")
    check_dates_in_month(frames, month, str(folder))
    return frames
