"""File ingestion: Telco-format CSV -> one labelled delivery, any CSV/Parquet -> raw.NAME."""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

import pandas as pd
import pytest

from churn_assets.core.warehouse import Warehouse
from churn_assets.source.contract import RAW_TABLES
from churn_assets.source.deliveries import ContractError, read_delivery
from churn_assets.source.ingest import (
    TELCO_COLUMNS,
    DeliveryExistsError,
    IngestError,
    ingest_table,
    ingest_telco,
    parse_raw_table_name,
    partition_month,
    read_telco_csv,
    telco_to_delivery,
    validate_telco_frame,
)

# The shared sample sits next to the repository checkout; it is not committed.
REAL_TELCO = Path(__file__).resolve().parents[2] / "shared/datasets/telco_customer_churn.csv"
if not REAL_TELCO.exists():
    REAL_TELCO = Path("/work/shared/datasets/telco_customer_churn.csv")

MONTH = "2024-03"

# Six customers covering every category of the contract at least once where it matters.
TELCO_ROWS = [
    ["0001-A", "Female", "0", "Yes", "No", "1", "No", "No phone service", "DSL", "No", "Yes",
     "No", "No", "No", "No", "Month-to-month", "Yes", "Electronic check", "29.85", "29.85", "No"],
    ["0002-B", "Male", "0", "No", "No", "34", "Yes", "No", "DSL", "Yes", "No", "Yes", "No", "No",
     "No", "One year", "No", "Mailed check", "56.95", "1889.5", "No"],
    ["0003-C", "Male", "1", "No", "No", "2", "Yes", "No", "DSL", "Yes", "Yes", "No", "No", "No",
     "No", "Month-to-month", "Yes", "Mailed check", "53.85", "108.15", "Yes"],
    ["0004-D", "Female", "0", "Yes", "Yes", "0", "Yes", "Yes", "No", "No internet service",
     "No internet service", "No internet service", "No internet service",
     "No internet service", "No internet service", "Two year", "No",
     "Bank transfer (automatic)", "20.25", " ", "No"],
    ["0005-E", "Female", "0", "No", "No", "8", "Yes", "Yes", "Fiber optic", "No", "No", "Yes",
     "No", "Yes", "Yes", "Month-to-month", "Yes", "Credit card (automatic)", "99.65", "820.5",
     "Yes"],
    ["0006-F", "Male", "0", "No", "Yes", "72", "Yes", "Yes", "Fiber optic", "Yes", "Yes", "Yes",
     "Yes", "Yes", "Yes", "Two year", "Yes", "Electronic check", "118.75", "8684.8", "No"],
]


def telco_text(rows=None, header=None) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header or TELCO_COLUMNS)
    writer.writerows(rows if rows is not None else TELCO_ROWS)
    return buffer.getvalue()


def with_value(row: int, column: str, value: str) -> list[list[str]]:
    """The sample rows with one cell changed (row is 1-based, like the error messages)."""
    rows = [list(r) for r in TELCO_ROWS]
    rows[row - 1][TELCO_COLUMNS.index(column)] = value
    return rows


def tree_state(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with a hash of its bytes, hidden temporaries included."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    } | {str(p.relative_to(folder)) + "/": "" for p in folder.rglob("*") if p.is_dir()}


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CHURN_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def source(home) -> Path:
    return home / "source"


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


# --------------------------------------------------------------------------------------
# Telco format: the real file


@pytest.mark.skipif(
    not REAL_TELCO.exists(), reason=f"shared Telco sample not found at {REAL_TELCO}"
)
def test_real_telco_file_ingests_as_one_labelled_month(source):
    report = ingest_telco(REAL_TELCO, MONTH, source)

    assert report.month == "2024-03-01"
    assert report.path == source / "2024-03"
    assert report.rows == {"customers": 7043, "subscriptions": 7043, "events": 0,
                           "cancellations": 1869}
    assert any("11 blank TotalCharges" in w for w in report.warnings)
    assert "cancellations: 1,869 rows" in str(report)

    frames = read_delivery(source, "2024-03-01")
    subs, cancels, customers = frames["subscriptions"], frames["cancellations"], frames["customers"]
    assert len(customers) == 7043 and customers["customer_id"].is_unique
    assert (subs["snapshot_month"] == pd.Timestamp("2024-03-01")).all()
    null_totals = subs[subs["total_charges"].isna()]
    assert len(null_totals) == 11
    # Every blank TotalCharges belongs to a customer who signed up in the snapshot month.
    signup = customers.set_index("customer_id")["signup_date"]
    assert (signup[null_totals["customer_id"]] == pd.Timestamp("2024-03-01")).all()
    assert cancels["cancel_date"].between("2024-04-01", "2024-04-30").all()
    assert cancels["reason"].isna().all()
    # The label rule: snapshot in M and a cancellation in M+1 -> churned.
    labelled = subs.merge(cancels, on="customer_id", how="left")
    assert labelled["cancel_date"].notna().mean() == pytest.approx(1869 / 7043)
    assert frames["events"].empty


# --------------------------------------------------------------------------------------
# Telco format: mapping


def test_small_telco_file_maps_onto_the_contract(tmp_path, source):
    path = write(tmp_path, "telco.csv", telco_text())
    report = ingest_telco(path, MONTH, source)

    frames = read_delivery(source, "2024-03-01")
    assert report.rows == {"customers": 6, "subscriptions": 6, "events": 0, "cancellations": 2}
    customers = frames["customers"].set_index("customer_id")
    # signup_date = first day of the snapshot month minus tenure months.
    assert customers.loc["0001-A", "signup_date"] == pd.Timestamp("2024-02-01")
    assert customers.loc["0002-B", "signup_date"] == pd.Timestamp("2021-05-01")
    assert customers.loc["0004-D", "signup_date"] == pd.Timestamp("2024-03-01")
    assert customers.loc["0006-F", "signup_date"] == pd.Timestamp("2018-03-01")
    assert bool(customers.loc["0003-C", "senior_citizen"]) is True
    assert bool(customers.loc["0004-D", "dependents"]) is True
    subs = frames["subscriptions"].set_index("customer_id")
    assert pd.isna(subs.loc["0004-D", "total_charges"])
    assert subs.loc["0006-F", "monthly_charges"] == 118.75
    assert subs.loc["0005-E", "internet_service"] == "Fiber optic"
    cancels = frames["cancellations"]
    assert sorted(cancels["customer_id"]) == ["0003-C", "0005-E"]
    assert list(frames["events"].columns) == RAW_TABLES["events"].column_names


def test_cancellation_dates_are_deterministic_and_inside_the_next_month(tmp_path):
    frame = read_telco_csv(write(tmp_path, "telco.csv", telco_text()))
    first = telco_to_delivery(frame, "2024-01", "telco.csv")["cancellations"]
    again = telco_to_delivery(frame.sample(frac=1, random_state=3), "2024-01", "x")
    again = again["cancellations"].sort_values("customer_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(first.sort_values("customer_id").reset_index(drop=True), again)
    # February 2024 has 29 days.
    assert first["cancel_date"].between("2024-02-01", "2024-02-29").all()


def test_validate_telco_frame_is_idempotent(tmp_path):
    typed = read_telco_csv(write(tmp_path, "telco.csv", telco_text()))
    assert list(typed.columns) == list(TELCO_COLUMNS)
    assert str(typed["tenure"].dtype) == "Int64"
    pd.testing.assert_frame_equal(validate_telco_frame(typed, "again"), typed)


def test_byte_order_mark_crlf_and_trailing_blank_lines_are_accepted(tmp_path, source):
    text = "\ufeff" + telco_text().replace("\n", "\r\n") + "\r\n\r\n"
    report = ingest_telco(write(tmp_path, "excel.csv", text), MONTH, source)
    assert report.rows["customers"] == 6


def test_extra_columns_are_dropped_with_a_warning(tmp_path, source):
    rows = [r + ["north"] for r in TELCO_ROWS]
    path = write(tmp_path, "telco.csv", telco_text(rows, header=[*TELCO_COLUMNS, "region"]))
    report = ingest_telco(path, MONTH, source)
    assert any("region" in w for w in report.warnings)
    assert "region" not in read_delivery(source, "2024-03-01")["customers"].columns


def test_month_without_churners_warns_that_labels_stay_null(tmp_path, source):
    rows = [r[:-1] + ["No"] for r in TELCO_ROWS]
    report = ingest_telco(write(tmp_path, "telco.csv", telco_text(rows)), MONTH, source)
    assert report.rows["cancellations"] == 0
    assert any("labels for 2024-03 stay NULL" in w for w in report.warnings)


# --------------------------------------------------------------------------------------
# Telco format: bad input names file, column and row, and writes nothing


BAD_TELCO_FILES = {
    "missing column": (
        lambda: telco_text(
            rows=[r[:-1] for r in TELCO_ROWS], header=list(TELCO_COLUMNS[:-1])
        ),
        ["missing Telco column(s) Churn"],
    ),
    "renamed column": (
        lambda: telco_text(
            header=[("Monthly Charges" if c == "MonthlyCharges" else c) for c in TELCO_COLUMNS]
        ),
        ["MonthlyCharges", "'Monthly Charges' looks like 'MonthlyCharges'"],
    ),
    "text in MonthlyCharges": (
        lambda: telco_text(with_value(3, "MonthlyCharges", "abc")),
        ["column 'MonthlyCharges'", "data row 3 (line 4)", "'abc'"],
    ),
    "non-integer tenure": (
        lambda: telco_text(with_value(2, "tenure", "1.5")),
        ["column 'tenure'", "whole number", "data row 2 (line 3)", "'1.5'"],
    ),
    "negative tenure": (
        lambda: telco_text(with_value(5, "tenure", "-3")),
        ["column 'tenure'", "data row 5 (line 6)"],
    ),
    "blank MonthlyCharges": (
        lambda: telco_text(with_value(4, "MonthlyCharges", "")),
        ["column 'MonthlyCharges' is blank", "data row 4 (line 5)"],
    ),
    "blank TotalCharges with tenure > 0": (
        lambda: telco_text(with_value(2, "TotalCharges", " ")),
        ["column 'TotalCharges' is blank", "data row 2 (line 3)", "tenure is 0"],
    ),
    "infinite TotalCharges": (
        lambda: telco_text(with_value(6, "TotalCharges", "inf")),
        ["column 'TotalCharges'", "data row 6 (line 7)"],
    ),
    "duplicate customer id": (
        lambda: telco_text(with_value(5, "customerID", "0002-B")),
        ["duplicate key (customerID)", "rows 2, 5", "data rows are numbered from 1"],
    ),
    "unknown Contract": (
        lambda: telco_text(with_value(3, "Contract", "Three year")),
        ["column 'Contract'", "'Three year'", "row 3", "data rows are numbered from 1"],
    ),
    "unknown gender": (
        lambda: telco_text(with_value(1, "gender", "F")),
        ["column 'gender'", "row 1"],
    ),
    "Churn not Yes/No": (
        lambda: telco_text(with_value(6, "Churn", "Maybe")),
        ["column 'Churn'", "Yes or No", "data row 6 (line 7)"],
    ),
    "blank customer id": (
        lambda: telco_text(with_value(2, "customerID", "")),
        ["column 'customerID' is empty", "row 2"],
    ),
    "empty file": (lambda: "", ["empty (0 bytes)"]),
    "header only": (lambda: telco_text(rows=[]), ["header but no data rows"]),
    "ragged row": (
        lambda: telco_text() + "0007-G,Male,0\n",
        ["malformed CSV", "line 8", "3 field(s)", "header has 21"],
    ),
    "non-UTF-8 byte": (
        lambda: telco_text(with_value(4, "PaymentMethod", "Bank transfer (automatic)"))
        .replace("0004-D,Female", "0004-D,F\udce9male")
        .encode("utf-8", errors="surrogateescape"),
        ["not UTF-8", "0xe9", "line 5", "column 'gender'"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_TELCO_FILES))
def test_bad_telco_file_is_refused_with_location_and_nothing_written(tmp_path, source, case):
    make, expected = BAD_TELCO_FILES[case]
    content = make()
    path = write(tmp_path, "bad_telco.csv", content)
    # An earlier, valid month must survive untouched.
    ingest_telco(write(tmp_path, "good.csv", telco_text()), "2024-02", source)
    before = tree_state(source)

    with pytest.raises(ContractError) as raised:
        ingest_telco(path, MONTH, source)

    message = str(raised.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert tree_state(source) == before


def test_bad_telco_file_on_a_fresh_home_creates_no_source_folder(tmp_path, source):
    with pytest.raises(IngestError):
        path = write(tmp_path, "t.csv", telco_text(with_value(1, "tenure", "x")))
        ingest_telco(path, MONTH, source)
    assert not source.exists()


def test_every_problem_of_a_kind_is_reported_together(tmp_path, source):
    rows = with_value(2, "MonthlyCharges", "abc")
    rows[4][TELCO_COLUMNS.index("Churn")] = "Sometimes"
    with pytest.raises(IngestError) as raised:
        ingest_telco(write(tmp_path, "t.csv", telco_text(rows)), MONTH, source)
    assert "MonthlyCharges" in str(raised.value) and "Churn" in str(raised.value)


@pytest.mark.parametrize(
    ("month", "fragment"),
    [
        ("2024-13", "month must be 01-12"),
        ("March", "expected YYYY-MM"),
        ("2024-3", "expected YYYY-MM"),
        ("2024-03-15", "expected YYYY-MM"),
        ("2022-12", "before the project's first month"),
        ("2999-01", "has not begun yet"),
    ],
)
def test_invalid_month_is_refused_before_reading(tmp_path, source, month, fragment):
    path = write(tmp_path, "telco.csv", telco_text())
    with pytest.raises(IngestError, match=fragment):
        ingest_telco(path, month, source)
    assert not source.exists()


def test_month_accepts_partition_key_form():
    assert partition_month("2024-03") == partition_month("2024-03-01") == "2024-03-01"


def test_existing_delivery_is_refused_unless_replace(tmp_path, source):
    first = write(tmp_path, "first.csv", telco_text())
    ingest_telco(first, MONTH, source)
    before = tree_state(source)

    smaller = write(tmp_path, "second.csv", telco_text(TELCO_ROWS[:3]))
    with pytest.raises(FileExistsError, match="already exists.*replace"):
        ingest_telco(smaller, MONTH, source)
    with pytest.raises(DeliveryExistsError):
        ingest_telco(smaller, "2024-03-01", source)
    assert tree_state(source) == before

    report = ingest_telco(smaller, MONTH, source, replace=True)
    assert report.rows["customers"] == 3
    assert any("replaced" in w for w in report.warnings)
    assert len(read_delivery(source, "2024-03-01")["customers"]) == 3
    assert [p.name for p in source.iterdir()] == ["2024-03"]


def test_failed_replace_keeps_the_existing_delivery(tmp_path, source):
    ingest_telco(write(tmp_path, "good.csv", telco_text()), MONTH, source)
    before = tree_state(source)
    bad = write(tmp_path, "bad.csv", telco_text(with_value(1, "Contract", "Weekly")))
    with pytest.raises(ContractError, match="Weekly"):
        ingest_telco(bad, MONTH, source, replace=True)
    assert tree_state(source) == before


# --------------------------------------------------------------------------------------
# Any CSV/Parquet as raw.NAME


@pytest.fixture
def warehouse(home) -> Warehouse:
    return Warehouse(path=str(home / "warehouse.duckdb"))


def table_rows(warehouse: Warehouse, name: str) -> list[tuple]:
    with warehouse.read() as con:
        return con.execute(f"SELECT * FROM {name} ORDER BY ALL").fetchall()


def warehouse_state(warehouse: Warehouse) -> dict[str, list[tuple]]:
    if not warehouse.db_path.exists():
        return {}
    with warehouse.read() as con:
        tables = [
            f"{s}.{t}"
            for s, t in con.execute(
                "SELECT schema_name, table_name FROM duckdb_tables() ORDER BY ALL"
            ).fetchall()
        ]
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in tables}


PLANS_CSV = (
    "plan_id,name,price,launched\n"
    "1,basic,9.99,2023-01-15\n2,plus,19.5,2023-06-01\n3,pro,,2024-02-29\n"
)


def test_csv_round_trip_with_sniffed_types(tmp_path, warehouse):
    report = ingest_table(write(tmp_path, "plans.csv", PLANS_CSV), "raw.plans", warehouse)

    assert report.target == "raw.plans"
    assert report.rows == {"raw.plans": 3}
    assert report.columns == {"plan_id": "BIGINT", "name": "VARCHAR", "price": "DOUBLE",
                              "launched": "DATE"}
    import datetime as dt

    assert table_rows(warehouse, "raw.plans") == [
        (1, "basic", 9.99, dt.date(2023, 1, 15)),
        (2, "plus", 19.5, dt.date(2023, 6, 1)),
        (3, "pro", None, dt.date(2024, 2, 29)),
    ]


def test_csv_with_semicolons_and_quoted_delimiters(tmp_path, warehouse):
    text = 'id;comment\n1;"a; b"\n2;"say ""hi"""\n'
    ingest_table(write(tmp_path, "notes.csv", text), "raw.Notes", warehouse)
    assert table_rows(warehouse, "raw.notes") == [(1, "a; b"), (2, 'say "hi"')]


def test_late_value_that_breaks_a_sampled_type_still_loads(tmp_path, warehouse):
    # Type sniffing reads the whole file, so a text value after many integers makes the
    # column VARCHAR instead of failing half-way.
    lines = ["code"] + [str(i) for i in range(30_000)] + ["X-1"]
    ingest_table(write(tmp_path, "codes.csv", "\n".join(lines) + "\n"), "raw.codes", warehouse)
    with warehouse.read() as con:
        counted = con.execute("SELECT count(*), max(length(code)) FROM raw.codes").fetchone()
    assert counted == (30_001, 5)


def test_gzipped_tab_separated_file(tmp_path, warehouse):
    import gzip

    path = tmp_path / "usage.tsv.gz"
    path.write_bytes(gzip.compress(b"customer_id\tgb\na\t1.5\nb\t0\n"))
    report = ingest_table(path, "raw.usage", warehouse)
    assert report.columns == {"customer_id": "VARCHAR", "gb": "DOUBLE"}
    assert table_rows(warehouse, "raw.usage") == [("a", 1.5), ("b", 0.0)]


def test_parquet_round_trip(tmp_path, warehouse):
    frame = pd.DataFrame(
        {
            "customer_id": ["a", "b"],
            "nps": [9, 3],
            "answered_at": pd.to_datetime(["2024-03-02 10:00", "2024-03-05 17:30"]),
        }
    )
    path = tmp_path / "survey.parquet"
    frame.to_parquet(path, index=False)

    report = ingest_table(path, "raw.survey", warehouse)

    assert report.rows == {"raw.survey": 2}
    assert report.columns["nps"] == "BIGINT"
    assert report.columns["answered_at"].startswith("TIMESTAMP")
    with warehouse.read() as con:
        back = con.execute("SELECT * FROM raw.survey ORDER BY customer_id").df()
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)


def test_reingest_replaces_and_failed_reingest_keeps_the_old_table(tmp_path, warehouse):
    ingest_table(write(tmp_path, "plans.csv", PLANS_CSV), "raw.plans", warehouse)
    before = warehouse_state(warehouse)

    ragged = write(tmp_path, "plans_v2.csv", "plan_id,name\n1,basic\n2,plus,extra\n")
    with pytest.raises(IngestError, match="line 3"):
        ingest_table(ragged, "raw.plans", warehouse)
    assert warehouse_state(warehouse) == before

    narrower = write(tmp_path, "plans_v3.csv", "plan_id\n7\n")
    with pytest.raises(IngestError, match="would change schema"):
        ingest_table(narrower, "raw.plans", warehouse)
    assert warehouse_state(warehouse) == before
    report = ingest_table(narrower, "raw.plans", warehouse, allow_schema_change=True)
    assert report.warnings[0].startswith("replaced the previous raw.plans (schema changed: -")
    assert table_rows(warehouse, "raw.plans") == [(7,)]


def _parquet_with_duplicate_columns(tmp_path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "dup.parquet"
    pq.write_table(pa.table([[1], [2]], names=["a", "a"]), path)
    return path


def _empty_parquet(tmp_path: Path) -> Path:
    path = tmp_path / "none.parquet"
    pd.DataFrame({"a": pd.Series(dtype="int64")}).to_parquet(path)
    return path


BAD_TABLE_FILES = {
    "empty file": (lambda d: write(d, "t.csv", ""), ["empty (0 bytes)"]),
    "header only": (lambda d: write(d, "t.csv", "a,b\n"), ["header but no data rows"]),
    "ragged short row": (
        lambda d: write(d, "t.csv", "a,b,c\n1,2,3\n4,5\n"),
        ["malformed CSV", "line 3", "2 field(s)"],
    ),
    "ragged long row": (
        lambda d: write(d, "t.csv", "a,b\n1,2\n3,4\n5,6,7\n"),
        ["malformed CSV", "line 4", "3 field(s)"],
    ),
    "duplicate columns": (
        lambda d: write(d, "t.csv", "id,name,ID\n1,x,2\n"),
        ["duplicate column name 'ID'", "positions 1 and 3"],
    ),
    "blank column name": (lambda d: write(d, "t.csv", "id,,x\n1,2,3\n"), ["blank column name"]),
    "non-UTF-8": (
        lambda d: write(d, "t.csv", b"id,city\n1,Paris\n2,Montr\xe9al\n"),
        ["not UTF-8", "line 3", "column 'city'"],
    ),
    "unclosed quote": (
        lambda d: write(d, "t.csv", 'id,note\n1,"open\n'),
        ["malformed CSV"],
    ),
    "parquet duplicate columns": (_parquet_with_duplicate_columns, ["duplicate column name 'a'"]),
    "parquet zero rows": (_empty_parquet, ["no data rows"]),
    "corrupt parquet": (
        lambda d: write(d, "t.parquet", b"PAR1 this is not parquet"),
        ["not a readable Parquet file"],
    ),
    "unsupported type": (lambda d: write(d, "t.xlsx", b"PK\x03\x04"), ["unsupported file type"]),
}


@pytest.mark.parametrize("case", list(BAD_TABLE_FILES))
def test_bad_table_file_is_refused_and_warehouse_unchanged(tmp_path, warehouse, case):
    make, expected = BAD_TABLE_FILES[case]
    ingest_table(write(tmp_path, "plans.csv", PLANS_CSV), "raw.plans", warehouse)
    before = warehouse_state(warehouse)
    path = make(tmp_path)

    with pytest.raises(IngestError) as raised:
        ingest_table(path, "raw.plans", warehouse)

    message = str(raised.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert warehouse_state(warehouse) == before


def test_bad_table_file_on_a_fresh_home_creates_no_warehouse(tmp_path, warehouse):
    with pytest.raises(IngestError):
        ingest_table(write(tmp_path, "t.csv", "a,b\n1\n"), "raw.t", warehouse)
    assert not warehouse.db_path.exists()


def test_missing_file_is_named(tmp_path, warehouse):
    with pytest.raises(IngestError, match="no such file"):
        ingest_table(tmp_path / "nope.csv", "raw.nope", warehouse)


@pytest.mark.parametrize("table", ["raw.customers", "raw.Subscriptions", "RAW.events",
                                   "raw.cancellations"])
def test_contract_tables_are_refused_with_a_pointer_to_deliveries(table):
    with pytest.raises(IngestError, match="--format telco"):
        parse_raw_table_name(table)


@pytest.mark.parametrize("table", ["plans", "staging.plans", "raw.", "raw.1plans",
                                   "raw.my-plans", 'raw.x"; DROP TABLE y; --', "raw.a.b"])
def test_invalid_table_names_are_refused(table):
    with pytest.raises(IngestError, match="expected raw.NAME"):
        parse_raw_table_name(table)


def test_a_table_reingest_that_changes_the_schema_is_refused_with_the_difference(churn_home, tmp_path):
    from churn_assets.core.warehouse import Warehouse
    from churn_assets.source.ingest import IngestError, ingest_table

    warehouse = Warehouse()
    first = tmp_path / "prices.csv"
    first.write_text("plan,price\nbasic,10\npro,20\n")
    ingest_table(first, "raw.prices", warehouse)
    changed = tmp_path / "prices2.csv"
    changed.write_text("plan,price,region\nbasic,ten,EU\n")
    with pytest.raises(IngestError, match=r"price BIGINT -> VARCHAR.*\+region VARCHAR|\+region VARCHAR.*price BIGINT -> VARCHAR"):
        ingest_table(changed, "raw.prices", warehouse)
    with warehouse.read() as con:
        assert con.execute("SELECT count(*), sum(price) FROM raw.prices").fetchone() == (2, 30)
    report = ingest_table(changed, "raw.prices", warehouse, allow_schema_change=True)
    assert "schema changed" in report.warnings[0]
    # The same schema again replaces the rows without a question.
    ingest_table(changed, "raw.prices", warehouse)
