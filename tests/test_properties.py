"""Property-based tests (hypothesis): a valid Telco file or delivery folder, mutated at random
(a column dropped or renamed, a cell changed or blanked, bytes injected, a key duplicated, a
date shifted), is either accepted with exactly its rows or refused with nothing written."""

from __future__ import annotations

import string

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from churn_assets.source.deliveries import ContractError, available_months, read_delivery, write_delivery
from churn_assets.source.ingest import TELCO_COLUMNS, ingest_telco

ROWS = 12
PROPERTY_SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                             suppress_health_check=[HealthCheck.function_scoped_fixture])


def telco_frame(rows: int = ROWS) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    tenure = rng.integers(1, 60, rows)
    monthly = rng.uniform(20, 100, rows).round(2)
    return pd.DataFrame({
        "customerID": [f"{i:04d}-ABCDE" for i in range(rows)],
        "gender": rng.choice(["Female", "Male"], rows),
        "SeniorCitizen": rng.integers(0, 2, rows),
        "Partner": rng.choice(["Yes", "No"], rows),
        "Dependents": rng.choice(["Yes", "No"], rows),
        "tenure": tenure,
        "PhoneService": "Yes",
        "MultipleLines": rng.choice(["Yes", "No"], rows),
        "InternetService": "DSL",
        **{c: rng.choice(["Yes", "No"], rows) for c in ("OnlineSecurity", "OnlineBackup", "DeviceProtection",
                                                         "TechSupport", "StreamingTV", "StreamingMovies")},
        "Contract": rng.choice(["Month-to-month", "One year", "Two year"], rows),
        "PaperlessBilling": rng.choice(["Yes", "No"], rows),
        "PaymentMethod": rng.choice(["Electronic check", "Mailed check"], rows),
        "MonthlyCharges": monthly,
        "TotalCharges": (monthly * tenure).round(2),
        "Churn": rng.choice(["Yes", "No"], rows),
    })[list(TELCO_COLUMNS)]


mutation = st.one_of(
    st.tuples(st.just("none"), st.just(0)),
    st.tuples(st.just("valid_cell"), st.integers(0, ROWS - 1)),
    st.tuples(st.just("drop"), st.sampled_from(TELCO_COLUMNS)),
    st.tuples(st.just("rename"), st.sampled_from(TELCO_COLUMNS)),
    st.tuples(st.just("cell"), st.tuples(st.integers(0, ROWS - 1), st.sampled_from(TELCO_COLUMNS),
                                         st.text(string.printable, max_size=6))),
    st.tuples(st.just("blank"), st.tuples(st.integers(0, ROWS - 1), st.sampled_from(TELCO_COLUMNS))),
    st.tuples(st.just("duplicate"), st.integers(0, ROWS - 1)),
    st.tuples(st.just("bytes"), st.tuples(st.integers(0, 2000), st.binary(min_size=1, max_size=4))),
)


def _mutated_text(change) -> tuple[bytes, int]:
    """The CSV bytes after one mutation, and how many data rows it has."""
    kind, detail = change
    frame = telco_frame()
    if kind == "valid_cell":
        frame.loc[detail, "gender"] = "Male" if frame.loc[detail, "gender"] == "Female" else "Female"
    elif kind == "drop":
        frame = frame.drop(columns=[detail])
    elif kind == "rename":
        frame = frame.rename(columns={detail: detail + "_x"})
    elif kind == "cell":
        row, column, value = detail
        frame[column] = frame[column].astype(str)
        frame.loc[row, column] = value
    elif kind == "blank":
        row, column = detail
        frame[column] = frame[column].astype(str)
        frame.loc[row, column] = ""
    elif kind == "duplicate":
        frame = pd.concat([frame, frame.iloc[[detail]]], ignore_index=True)
    data = frame.to_csv(index=False).encode()
    if kind == "bytes":
        position, injected = detail
        position = min(position, len(data))
        data = data[:position] + injected + data[position:]
    return data, len(frame)


def _snapshot(folder) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} \
        if folder.exists() else {}


@PROPERTY_SETTINGS
@given(change=mutation)
def test_a_mutated_telco_file_is_accepted_whole_or_refused_with_nothing_written(tmp_path_factory, change):
    work = tmp_path_factory.mktemp("telco")
    source = work / "source"
    path = work / "telco.csv"
    data, rows = _mutated_text(change)
    path.write_bytes(data)
    before = _snapshot(source)
    try:
        report = ingest_telco(path, "2024-06", source)
    except (ContractError, FileExistsError) as error:
        assert str(error)
        assert _snapshot(source) == before
        return
    # Accepted: exactly the file's rows, and a delivery the raw layer reads back as valid.
    assert change[0] not in ("drop", "rename", "duplicate"), f"{change} was accepted"
    assert report.rows["subscriptions"] == rows == report.rows["customers"]
    frames = read_delivery(source, "2024-06-01")
    assert len(frames["subscriptions"]) == rows
    assert available_months(source) == ["2024-06-01"]


delivery_mutation = st.one_of(
    st.tuples(st.just("shift_snapshot"), st.integers(-3, 3).filter(bool)),
    st.tuples(st.just("future_event"), st.integers(1, 400)),
    st.tuples(st.just("duplicate_key"), st.just(0)),
    st.tuples(st.just("drop_column"), st.sampled_from(["customer_id", "contract", "monthly_charges"])),
    st.tuples(st.just("none"), st.just(0)),
)


@PROPERTY_SETTINGS
@given(change=delivery_mutation)
def test_a_mutated_delivery_is_accepted_whole_or_refused_with_nothing_written(tmp_path_factory, make_delivery,
                                                                             change):
    source = tmp_path_factory.mktemp("deliveries") / "source"
    frames = make_delivery("2024-03-01")
    kind, amount = change
    if kind == "shift_snapshot":
        frames["subscriptions"]["snapshot_month"] = pd.Timestamp("2024-03-01") + pd.DateOffset(months=amount)
    elif kind == "future_event":
        frames["events"].loc[0, "event_time"] = pd.Timestamp("2024-04-01") + pd.Timedelta(days=amount)
    elif kind == "duplicate_key":
        frames["subscriptions"] = pd.concat([frames["subscriptions"], frames["subscriptions"].head(1)])
    elif kind == "drop_column":
        frames["subscriptions"] = frames["subscriptions"].drop(columns=[amount])
    try:
        write_delivery(source, "2024-03-01", frames)
    except ContractError as error:
        assert kind != "none" and str(error)
        assert _snapshot(source) == {}
        return
    assert kind == "none", f"{change} was accepted"
    assert len(read_delivery(source, "2024-03-01")["subscriptions"]) == len(frames["subscriptions"])


@pytest.fixture
def make_delivery():
    from conftest import tiny_delivery

    return tiny_delivery
