"""File ingestion: a Telco-format CSV as one labelled month, or any CSV/Parquet as a raw table.

Everything is read and validated before anything is written. A Telco file becomes one
monthly delivery (written atomically by ``write_delivery``); a table file is parsed into
memory first and then swapped in with ``CREATE OR REPLACE TABLE`` inside one warehouse
transaction, so a bad file never leaves half a table behind and never touches the
warehouse at all when it fails validation.

Errors are ``IngestError`` (a ``ContractError``) or, for the contract-level checks,
``ContractError`` itself. Messages name the file and, where it applies, the column and
either the 1-based *data row* (the header is not counted) or the *line* of the file.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import gzip
import hashlib
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from churn_assets.source.contract import CUSTOMERS, RAW_TABLES, SUBSCRIPTIONS, YES_NO, Table
from churn_assets.source.deliveries import (
    MAX_REPORTED_ROWS,
    ContractError,
    coerce_to_contract,
    delivery_dir,
    write_delivery,
)

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from churn_assets.core.warehouse import Warehouse


class IngestError(ContractError):
    """An input file that cannot be ingested; the message names file, column and row or line."""


class DeliveryExistsError(IngestError, FileExistsError):
    """The month already has a delivery and the caller did not ask to replace it."""


# Telco column -> raw contract column. tenure and Churn have no contract column of their
# own: tenure becomes customers.signup_date and Churn a cancellation in the next month.
TELCO_TO_CONTRACT: dict[str, str] = {
    "customerID": "customer_id",
    "gender": "gender",
    "SeniorCitizen": "senior_citizen",
    "Partner": "partner",
    "Dependents": "dependents",
    "PhoneService": "phone_service",
    "MultipleLines": "multiple_lines",
    "InternetService": "internet_service",
    "OnlineSecurity": "online_security",
    "OnlineBackup": "online_backup",
    "DeviceProtection": "device_protection",
    "TechSupport": "tech_support",
    "StreamingTV": "streaming_tv",
    "StreamingMovies": "streaming_movies",
    "Contract": "contract",
    "PaperlessBilling": "paperless_billing",
    "PaymentMethod": "payment_method",
    "MonthlyCharges": "monthly_charges",
    "TotalCharges": "total_charges",
}
TELCO_COLUMNS: tuple[str, ...] = (
    "customerID", "gender", "SeniorCitizen", "Partner", "Dependents", "tenure",
    "PhoneService", "MultipleLines", "InternetService", "OnlineSecurity", "OnlineBackup",
    "DeviceProtection", "TechSupport", "StreamingTV", "StreamingMovies", "Contract",
    "PaperlessBilling", "PaymentMethod", "MonthlyCharges", "TotalCharges", "Churn",
)
# A tenure longer than this is a data error, and would also overflow pandas' date range.
MAX_TENURE_MONTHS = 1200

ROW_NOTE = "data rows are numbered from 1, the header is not counted"
TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MONTH_ARGUMENT = re.compile(r"\d{4}-\d{2}(-01)?")
PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
CSV_SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz")


def _telco_view() -> Table:
    """The raw contract's customers + subscriptions columns under their Telco names.

    Validating the file through this view reuses every contract check (types, categories,
    ranges, empties, duplicate ids) while the messages name the columns as the file does.
    """
    columns = []
    for table in (CUSTOMERS, SUBSCRIPTIONS):
        for telco_name, contract_name in TELCO_TO_CONTRACT.items():
            if contract_name in table.column_names and telco_name not in {c.name for c in columns}:
                columns.append(replace(table.column(contract_name), name=telco_name))
    return Table(
        name="Telco file",
        description="Customers and their subscription snapshot, one row per customer.",
        columns=tuple(columns),
        key=("customerID",),
        time_column="tenure",
    )


@dataclass(frozen=True)
class IngestReport:
    """What one ingest wrote: where, how many rows per table, and anything worth a warning."""

    target: str
    path: Path
    rows: dict[str, int]
    month: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def summary(self) -> str:
        """A few lines for a terminal."""
        lines = [f"Ingested {self.target} -> {self.path}"]
        lines += [f"  {name}: {count:,} rows" for name, count in self.rows.items()]
        if self.columns:
            lines.append("  columns: " + ", ".join(f"{n} {t}" for n, t in self.columns.items()))
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    # print(report) and f"{report}" in the CLI show the summary; repr() stays a dataclass's.
    __str__ = summary


# --------------------------------------------------------------------------------------
# Reading text files strictly


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _open_text(path: Path):
    # utf-8-sig drops the byte-order mark Excel writes; newline="" is what csv expects.
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _check_readable_file(path: Path) -> None:
    if not path.exists():
        raise IngestError(f"{path}: no such file")
    if not path.is_file():
        raise IngestError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise IngestError(f"{path}: the file is empty (0 bytes)")


def _check_utf8(path: Path, delimiter: str) -> None:
    """Fail on the first byte that is not UTF-8, naming its line and column.

    Decodes in large chunks (fast, constant memory); only a file that fails is read again
    line by line to say where.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    with _open_binary(path) as handle:
        try:
            while chunk := handle.read(1 << 20):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
            return
        except UnicodeDecodeError:
            pass
    header = None
    with _open_binary(path) as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise IngestError(
                    f"{path}: not UTF-8 text: byte 0x{raw[error.start]:02x} on line {number}"
                    f"{_column_at(raw, error.start, header, delimiter)}; "
                    "re-save the file as UTF-8"
                ) from None
            if header is None and text.strip():
                header = next(csv.reader([text.removeprefix("\ufeff")], delimiter=delimiter))
    raise IngestError(f"{path}: not UTF-8 text: the file ends inside a multi-byte character")


def _column_at(raw: bytes, offset: int, header: list[str] | None, delimiter: str) -> str:
    prefix = raw[:offset].decode("utf-8")
    index = len(next(csv.reader([prefix], delimiter=delimiter), [""])) - 1
    if header and 0 <= index < len(header):
        return f" in column '{header[index].strip()}'"
    return f" in field {index + 1}"


def _sniff_delimiter(path: Path) -> str:
    if path.name.lower().removesuffix(".gz").endswith(".tsv"):
        return "\t"
    with _open_binary(path) as handle:
        sample = handle.read(64 * 1024).decode("utf-8", errors="replace")
    first_line = next((line for line in sample.splitlines() if line.strip()), "")
    counts = {d: first_line.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


@dataclass
class _CsvScan:
    header: list[str]
    delimiter: str
    data_rows: int
    records: list[list[str]] | None
    # Line of the file on which each kept record starts (1-based, header = line 1).
    lines: list[int] | None


def _scan_csv(path: Path, *, keep_records: bool) -> _CsvScan:
    """Parse a CSV strictly: UTF-8, a header with unique non-blank names, no ragged rows."""
    _check_readable_file(path)
    delimiter = _sniff_delimiter(path)
    _check_utf8(path, delimiter)
    header: list[str] | None = None
    width = 0
    records: list[list[str]] = []
    lines: list[int] = []
    data_rows = 0
    previous_end = 0
    with _open_text(path) as handle:
        reader = csv.reader(handle, delimiter=delimiter, strict=True)
        try:
            for record in reader:
                if header is not None and len(record) == width:
                    data_rows += 1
                    if keep_records:
                        records.append(record)
                        lines.append(previous_end + 1)
                elif not any(value.strip() for value in record):
                    pass  # blank lines carry no data; a trailing one is common
                elif header is None:
                    header = [name.strip() for name in record]
                    width = len(header)
                    _check_header(path, header)
                else:
                    raise IngestError(
                        f"{path}: malformed CSV: line {previous_end + 1} has {len(record)} "
                        f"field(s) but the header has {width} (delimiter {delimiter!r})"
                    )
                previous_end = reader.line_num
        except csv.Error as error:
            raise IngestError(
                f"{path}: malformed CSV near line {reader.line_num}: {error}"
            ) from None
    if header is None:
        raise IngestError(f"{path}: the file has no header and no data (only blank lines)")
    if data_rows == 0:
        raise IngestError(f"{path}: the file has a header but no data rows")
    return _CsvScan(
        header=header,
        delimiter=delimiter,
        data_rows=data_rows,
        records=records if keep_records else None,
        lines=lines if keep_records else None,
    )


def _check_header(path: Path, header: list[str], where: str = "the header") -> None:
    blank = [i + 1 for i, name in enumerate(header) if not name]
    if blank:
        raise IngestError(
            f"{path}: {where} has a blank column name at position(s) "
            f"{', '.join(map(str, blank))}"
        )
    seen: dict[str, int] = {}
    for position, name in enumerate(header, start=1):
        # DuckDB identifiers are case-insensitive, so 'Id' and 'id' would collide.
        key = name.lower()
        if key in seen:
            raise IngestError(
                f"{path}: duplicate column name '{name}' in {where} "
                f"(positions {seen[key]} and {position})"
            )
        seen[key] = position


# --------------------------------------------------------------------------------------
# Telco format


def read_telco_csv(path: Path) -> pd.DataFrame:
    """Read and validate a Telco-format CSV; returns one typed row per customer.

    Columns keep their Telco names, with contract types (booleans, floats, strings) plus
    ``tenure`` as Int64 and ``Churn`` as 'Yes'/'No'. Blank TotalCharges of customers with
    tenure 0 (they have not been billed yet) become NULL; every other problem raises.
    Columns beyond the Telco ones are dropped.
    """
    return _read_telco(Path(path))[0]


def _read_telco(path: Path) -> tuple[pd.DataFrame, list[str]]:
    import pandas as pd

    scan = _scan_csv(path, keep_records=True)
    frame = pd.DataFrame(scan.records, columns=scan.header, dtype="string")
    for column in frame.columns:
        stripped = frame[column].str.strip()
        frame[column] = stripped.mask(stripped == "")
    ignored = [name for name in scan.header if name not in TELCO_COLUMNS]
    return _validate_telco(frame, str(path), scan.lines), ignored


def validate_telco_frame(frame: pd.DataFrame, origin: str) -> pd.DataFrame:
    """Check a Telco-format frame and return it typed; ``origin`` names it in errors.

    Idempotent: a frame already returned by this function passes unchanged.
    """
    return _validate_telco(frame, origin, None)


def _validate_telco(frame: pd.DataFrame, origin: str, lines: list[int] | None) -> pd.DataFrame:
    _check_telco_columns(frame, origin)
    frame = frame.reset_index(drop=True)
    numbers, problems = _parse_telco_numbers(frame, lines)
    churn = frame["Churn"].astype("string")
    bad_churn = ~churn.isin(YES_NO).fillna(False)
    if bad_churn.any():
        seen = sorted({str(v) for v in churn[bad_churn].fillna("<blank>").unique()})
        problems.append(
            f"column 'Churn' must be Yes or No, found {seen[:MAX_REPORTED_ROWS]} in "
            f"{_data_rows(bad_churn, lines)}"
        )
    if problems:
        raise IngestError(f"{origin}: " + "; ".join(problems))
    view = _telco_view()
    typed = coerce_to_contract(
        view,
        frame.assign(
            MonthlyCharges=numbers["MonthlyCharges"], TotalCharges=numbers["TotalCharges"]
        ),
        f"{origin} ({ROW_NOTE})",
    )
    typed.insert(TELCO_COLUMNS.index("tenure"), "tenure", numbers["tenure"])
    typed["Churn"] = churn
    return typed[list(TELCO_COLUMNS)]


def _check_telco_columns(frame: pd.DataFrame, origin: str) -> None:
    names = [str(c) for c in frame.columns]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise IngestError(f"{origin}: duplicate column(s) {', '.join(duplicated)}")
    missing = [c for c in TELCO_COLUMNS if c not in names]
    if not missing:
        return
    unexpected = [n for n in names if n not in TELCO_COLUMNS]
    hints, hinted = [], set()
    for name in unexpected:
        match = _closest(name, missing)
        if match and match not in hinted:
            hinted.add(match)
            hints.append(f"'{name}' looks like '{match}' (rename it)")
    message = f"{origin}: missing Telco column(s) {', '.join(missing)}"
    if hints:
        message += "; " + "; ".join(hints)
    elif unexpected:
        message += f"; unexpected column(s): {', '.join(unexpected)}"
    if len(missing) > len(hints) + 2:
        # Not a Telco file with a few renamed columns: a different export altogether.
        message += ". For any other churn export, make a dataset project: `churn init DIR --from FILE`"
    raise IngestError(message + f". Expected columns: {', '.join(TELCO_COLUMNS)}")


def _closest(name: str, candidates: list[str]) -> str | None:
    def normalise(text: str) -> str:
        return re.sub(r"[^a-z0-9]", "", text.lower())

    by_normal = {normalise(c): c for c in candidates}
    if normalise(name) in by_normal:
        return by_normal[normalise(name)]
    # Only a near-identical spelling is a rename; 0.85 keeps 'Tenure_Months' ~ 'tenure' out.
    match = difflib.get_close_matches(normalise(name), list(by_normal), n=1, cutoff=0.85)
    return by_normal[match[0]] if match else None


def _data_rows(mask: pd.Series, lines: list[int] | None) -> str:
    positions = [i for i, bad in enumerate(mask.to_numpy()) if bad]
    parts = [
        f"{i + 1} (line {lines[i]})" if lines is not None else str(i + 1)
        for i in positions[:MAX_REPORTED_ROWS]
    ]
    hidden = len(positions) - MAX_REPORTED_ROWS
    more = f" and {hidden} more" if hidden > 0 else ""
    return f"data row{'s' if len(positions) > 1 else ''} {', '.join(parts)}{more}"


def _parse_telco_numbers(
    frame: pd.DataFrame, lines: list[int] | None
) -> tuple[dict[str, pd.Series], list[str]]:
    import pandas as pd

    problems: list[str] = []
    parsed: dict[str, pd.Series] = {}
    for column in ("tenure", "MonthlyCharges", "TotalCharges"):
        values = frame[column]
        numbers = pd.Series(
            [_to_number(v) for v in values.astype("object")], index=frame.index, dtype="float64"
        )
        blank = values.isna()
        not_number = numbers.isna() & ~blank
        if not_number.any():
            example = values[not_number].iloc[0]
            problems.append(
                f"column '{column}' is not a finite number in {_data_rows(not_number, lines)} "
                f"(e.g. {example!r})"
            )
        if column == "tenure":
            not_whole = numbers.notna() & ((numbers % 1 != 0) | (numbers < 0))
            if not_whole.any():
                example = values[not_whole].iloc[0]
                problems.append(
                    f"column 'tenure' must be a whole number of months >= 0 in "
                    f"{_data_rows(not_whole, lines)} (e.g. {example!r})"
                )
            too_long = numbers > MAX_TENURE_MONTHS
            if too_long.any():
                problems.append(
                    f"column 'tenure' exceeds {MAX_TENURE_MONTHS} months in "
                    f"{_data_rows(too_long, lines)}"
                )
        parsed[column] = numbers
    tenure = parsed["tenure"]
    for column in ("tenure", "MonthlyCharges", "TotalCharges"):
        blank = frame[column].isna()
        if column == "TotalCharges":
            # New customers (tenure 0) have not been billed yet: the Telco file leaves
            # their total blank, which the contract stores as NULL.
            blank &= tenure != 0
        if blank.any():
            rule = " (blank is only allowed when tenure is 0)" if column == "TotalCharges" else ""
            problems.append(f"column '{column}' is blank in {_data_rows(blank, lines)}{rule}")
    parsed["tenure"] = tenure.round().astype("Int64") if not problems else tenure
    return parsed, problems


def _to_number(value) -> float:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.nan
    try:
        number = float(str(value).strip())
    except ValueError:
        return math.nan
    return number if math.isfinite(number) else math.nan


def partition_month(month: str) -> str:
    """Validate a 'YYYY-MM' month for ingestion; returns the partition key 'YYYY-MM-01'.

    The month must be from the project's first month (CHURN_FIRST_MONTH) up to the month in
    progress: a delivery cannot describe the future.
    """
    from churn_assets.core.partitions import FIRST_MONTH, month_key
    from churn_assets.core.project import current_month

    text = str(month).strip()
    if not MONTH_ARGUMENT.fullmatch(text):
        raise IngestError(f"invalid month {month!r}: expected YYYY-MM, e.g. 2024-03")
    try:
        key = month_key(text)
    except ValueError as error:
        raise IngestError(f"invalid month {month!r}: {error}") from None
    first = month_key(FIRST_MONTH)
    if key < first:
        raise IngestError(
            f"month {key[:7]} is before the project's first month {first[:7]}; set "
            f"CHURN_FIRST_MONTH={key} to ingest older history"
        )
    if key > current_month():
        raise IngestError(
            f"month {key[:7]} has not begun yet (the month in progress is {current_month()[:7]}); "
            "a delivery describes a month that happened"
        )
    return key


def _cancel_dates(customer_ids: pd.Series, month: str) -> pd.Series:
    """A cancellation date inside the month after ``month``, stable for each customer id."""
    import pandas as pd

    next_month = pd.Timestamp(month) + pd.offsets.MonthBegin(1)
    days = next_month.days_in_month
    offsets = [
        int.from_bytes(hashlib.sha256(str(cid).encode()).digest()[:8], "big") % days
        for cid in customer_ids
    ]
    return pd.Series(
        next_month + pd.to_timedelta(offsets, unit="D"), index=customer_ids.index
    )


def _signup_dates(tenure: pd.Series, month: str) -> pd.Series:
    import pandas as pd

    snapshot = pd.Timestamp(month)
    index = snapshot.year * 12 + (snapshot.month - 1) - tenure.astype("int64").to_numpy()
    dates = pd.to_datetime({"year": index // 12, "month": index % 12 + 1, "day": 1})
    return pd.Series(dates.to_numpy(), index=tenure.index)


def telco_to_delivery(frame: pd.DataFrame, month: str, origin: str) -> dict[str, pd.DataFrame]:
    """Turn a Telco-format frame into one month of the raw contract.

    Snapshot month M = ``month``: customers (signup = M minus tenure months), one
    subscription snapshot each at M, no events, and a cancellation inside M+1 for every
    Churn == 'Yes', which labels month M under the shared label rule.
    """
    import pandas as pd

    key = partition_month(month)
    typed = validate_telco_frame(frame, origin)
    renamed = typed.rename(columns=TELCO_TO_CONTRACT)
    customers = renamed.assign(signup_date=_signup_dates(typed["tenure"], key))
    subscriptions = renamed.assign(snapshot_month=pd.Timestamp(key))
    churned = renamed.loc[typed["Churn"] == "Yes", ["customer_id"]]
    cancellations = churned.assign(
        cancel_date=_cancel_dates(churned["customer_id"], key),
        reason=pd.Series(pd.NA, index=churned.index, dtype="string"),
    )
    events = pd.DataFrame(
        {
            "event_id": pd.Series(dtype="string"),
            "customer_id": pd.Series(dtype="string"),
            "event_time": pd.Series(dtype="datetime64[ns]"),
            "event_type": pd.Series(dtype="string"),
            "value": pd.Series(dtype="float64"),
        }
    )
    frames = {
        "customers": customers,
        "subscriptions": subscriptions,
        "events": events,
        "cancellations": cancellations,
    }
    return {
        name: frames[name][table.column_names].reset_index(drop=True)
        for name, table in RAW_TABLES.items()
    }


def ingest_telco(path: Path, month: str, source: Path, *, replace: bool = False) -> IngestReport:
    """Validate a Telco-format CSV and write it as the delivery for ``month`` under ``source``.

    Nothing is written unless the whole file is valid. An existing delivery for the month
    is refused with DeliveryExistsError unless ``replace``.
    """
    path, source = Path(path), Path(source)
    key = partition_month(month)
    target = delivery_dir(source, key)
    existed = target.exists()
    if existed and not replace:
        raise DeliveryExistsError(
            f"a delivery for {key[:7]} already exists at {target}; "
            "pass replace=True (`churn ingest ... --replace`) to overwrite it"
        )
    frame, ignored = _read_telco(path)
    frames = telco_to_delivery(frame, key, str(path))
    written = write_delivery(source, key, frames, replace=replace)
    warnings = []
    if ignored:
        warnings.append(
            f"ignored column(s) that are not part of the Telco format: {', '.join(ignored)}"
        )
    if frames["cancellations"].empty:
        warnings.append(
            f"no customer has Churn = Yes, so nothing is dated in the month after {key[:7]}: "
            f"labels for {key[:7]} stay NULL until a later month is delivered"
        )
    null_totals = int(frames["subscriptions"]["total_charges"].isna().sum())
    if null_totals:
        warnings.append(
            f"{null_totals} blank TotalCharges (all with tenure 0) stored as NULL total_charges"
        )
    if existed:
        warnings.append(f"replaced the previous delivery for {key[:7]}")
    return IngestReport(
        target=f"delivery {key[:7]} (Telco format)",
        path=written,
        rows={name: len(frames[name]) for name in RAW_TABLES},
        month=key,
        warnings=tuple(warnings),
    )


# --------------------------------------------------------------------------------------
# Any CSV/Parquet as a raw table


def parse_raw_table_name(table: str) -> str:
    """'raw.NAME' -> 'NAME', refusing other schemas and the contract's partitioned tables."""
    schema, dot, name = str(table).strip().partition(".")
    if not dot or schema.lower() != "raw" or not TABLE_NAME.fullmatch(name):
        raise IngestError(
            f"invalid table {table!r}: expected raw.NAME, where NAME is a plain identifier "
            "(letters, digits, underscores; not starting with a digit)"
        )
    if name.lower() in RAW_TABLES:
        raise IngestError(
            f"raw.{name.lower()} is a partitioned table of the raw contract and is loaded from "
            "monthly deliveries: use `churn ingest FILE --format telco --month YYYY-MM` for a "
            "Telco-format file, or write a delivery folder source/YYYY-MM/ "
            "(see docs/bring-your-own-data.md)"
        )
    return name.lower()


def _file_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    raise IngestError(
        f"{path}: unsupported file type; expected one of "
        f"{', '.join(PARQUET_SUFFIXES + CSV_SUFFIXES)}"
    )


def _read_parquet(path: Path) -> pa.Table:
    import duckdb
    import pyarrow.parquet as pq

    _check_readable_file(path)
    try:
        names = pq.read_schema(path).names
    except Exception as error:  # pyarrow raises several unrelated types
        raise IngestError(f"{path}: not a readable Parquet file ({error})") from None
    _check_header(path, names, "the Parquet schema")
    con = duckdb.connect()
    try:
        data = con.sql("SELECT * FROM read_parquet(?)", params=[str(path)]).to_arrow_table()
    except duckdb.Error as error:
        raise IngestError(f"{path}: cannot read Parquet: {error}") from None
    finally:
        con.close()
    if data.num_rows == 0:
        raise IngestError(f"{path}: the file has no data rows")
    return data


def _read_csv(path: Path) -> pa.Table:
    import duckdb

    scan = _scan_csv(path, keep_records=False)
    con = duckdb.connect()
    try:
        # The dialect is pinned to what the strict scan checked; only the column types are
        # sniffed, over the whole file so a late odd value cannot break a sampled guess.
        data = con.sql(
            "SELECT * FROM read_csv(?, header = true, delim = ?, quote = '\"', escape = '\"', "
            "skip = 0, strict_mode = true, sample_size = -1)",
            params=[str(path), scan.delimiter],
        ).to_arrow_table()
    except duckdb.Error as error:
        raise IngestError(f"{path}: cannot read CSV: {error}") from None
    finally:
        con.close()
    if data.num_rows == 0:
        raise IngestError(f"{path}: the file has a header but no data rows")
    return data


def read_table_file(path: Path) -> pa.Table:
    """A CSV (strictly scanned, types sniffed over the whole file) or Parquet file as Arrow;
    IngestError names the file and what is wrong with it."""
    path = Path(path)
    return _read_parquet(path) if _file_format(path) == "parquet" else _read_csv(path)


def replace_raw_table(con, name: str, data: pa.Table) -> None:
    """``raw.<name>`` replaced by ``data`` on the caller's (transactional) connection."""
    con.execute("CREATE SCHEMA IF NOT EXISTS raw")
    con.register("incoming_file", data)
    try:
        con.execute(f'CREATE OR REPLACE TABLE raw."{name}" AS SELECT * FROM incoming_file')
    finally:
        con.unregister("incoming_file")


def _raw_columns(con, name: str) -> dict[str, str]:
    return dict(con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = 'raw' AND table_name = ? "
        "ORDER BY column_index", [name]).fetchall())


def schema_diff(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """What changes between two column -> type mappings, one phrase per column."""
    changes = [f"-{c} {t}" for c, t in before.items() if c not in after]
    changes += [f"+{c} {t}" for c, t in after.items() if c not in before]
    changes += [f"{c} {before[c]} -> {after[c]}" for c in before if c in after and before[c] != after[c]]
    return changes


def ingest_table(path: Path, table: str, warehouse: Warehouse, *, allow_schema_change: bool = False) -> IngestReport:
    """Load any CSV or Parquet file as the table ``raw.NAME``, replacing it atomically.

    The file is parsed and validated in memory first; only then does one warehouse
    transaction run CREATE OR REPLACE TABLE, so a failure leaves the previous table. A file
    whose columns or types differ from the table it replaces is refused, with the difference,
    unless ``allow_schema_change``: SQL reading the table would break or change meaning.
    """
    path = Path(path)
    name = parse_raw_table_name(table)
    data = read_table_file(path)
    qualified = f'raw."{name}"'
    with warehouse.write() as con:
        before = _raw_columns(con, name)
        existed = bool(before)
        replace_raw_table(con, name, data)
        rows = con.execute(f"SELECT count(*) FROM {qualified}").fetchone()[0]
        columns = _raw_columns(con, name)
        changes = schema_diff(before, columns) if existed else []
        if changes and not allow_schema_change:
            # Raised inside the transaction: the previous table stays.
            raise IngestError(f"{path}: raw.{name} would change schema ({'; '.join(changes)}); pass --replace "
                              "to accept the new columns")
    warnings = ((f"replaced the previous raw.{name}" + (f" (schema changed: {'; '.join(changes)})" if changes else ""),)
                if existed else ())
    return IngestReport(
        target=f"raw.{name}",
        path=warehouse.db_path,
        rows={f"raw.{name}": rows},
        columns=columns,
        warnings=warnings,
    )


__all__ = [
    "TELCO_COLUMNS",
    "TELCO_TO_CONTRACT",
    "DeliveryExistsError",
    "IngestError",
    "IngestReport",
    "ingest_table",
    "ingest_telco",
    "parse_raw_table_name",
    "partition_month",
    "read_table_file",
    "read_telco_csv",
    "telco_to_delivery",
    "validate_telco_frame",
]
