"""The embedded synthetic source: determinism, the raw contract, Telco calibration, the
label rule, the drift event and id uniqueness, on small seeded populations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churn_assets.source.contract import INTERNET_ADDON_COLUMNS, RAW_TABLES
from churn_assets.source.deliveries import (
    available_months,
    coerce_to_contract,
    read_delivery,
)
from churn_assets.source.synthetic import (
    GeneratorConfig,
    generate_months,
    partition_keys,
    write_source,
)

TELCO_CANDIDATES = (
    Path(__file__).resolve().parents[1] / "shared/datasets/telco_customer_churn.csv",
    Path(__file__).resolve().parents[2] / "shared/datasets/telco_customer_churn.csv",
    Path("/work/shared/datasets/telco_customer_churn.csv"),
)
TELCO_CSV = next((p for p in TELCO_CANDIDATES if p.exists()), None)

SMALL = GeneratorConfig(customers=2_000, months=12, start_month="2024-01", seed=7, drift_month="2024-09")


def concat_history(config: GeneratorConfig) -> dict[str, pd.DataFrame]:
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in RAW_TABLES}
    for key, frames in generate_months(config):
        for name, frame in frames.items():
            parts[name].append(frame.assign(delivery_month=pd.Timestamp(key)))
    return {name: pd.concat(frames, ignore_index=True) for name, frames in parts.items()}


@pytest.fixture(scope="module")
def history() -> dict[str, pd.DataFrame]:
    return concat_history(SMALL)


def month_start(dates: pd.Series) -> pd.Series:
    return dates.dt.to_period("M").dt.to_timestamp()


# --- determinism --------------------------------------------------------------------------


def test_same_seed_gives_identical_frames_and_another_seed_does_not():
    config = GeneratorConfig(customers=500, months=4, seed=3)
    first = list(generate_months(config))
    second = list(generate_months(config))
    assert [key for key, _ in first] == partition_keys(config)
    for (key_a, frames_a), (key_b, frames_b) in zip(first, second):
        assert key_a == key_b
        for name in RAW_TABLES:
            pd.testing.assert_frame_equal(frames_a[name], frames_b[name])

    other = list(generate_months(GeneratorConfig(customers=500, months=4, seed=4)))
    assert not first[0][1]["subscriptions"].equals(other[0][1]["subscriptions"])
    assert not first[-1][1]["events"].equals(other[-1][1]["events"])


def test_months_are_generated_lazily():
    """Streaming: the first month is available without simulating the rest."""
    # A thousand months must end before the current month, so they start in 1900.
    months = generate_months(GeneratorConfig(customers=200, months=1_000, seed=1, start_month="1900-01",
                                             drift_month=None))
    key, frames = next(months)
    assert key == "1900-01-01"
    assert len(frames["subscriptions"]) == 200


# --- contract -----------------------------------------------------------------------------


def test_every_table_of_every_month_meets_the_raw_contract():
    config = GeneratorConfig(customers=800, months=8, seed=11, drift_month="2024-05")
    for key, frames in generate_months(config):
        assert set(frames) == set(RAW_TABLES)
        for name, table in RAW_TABLES.items():
            frame = frames[name]
            assert list(frame.columns) == table.column_names
            coerce_to_contract(table, frame, f"{key} {name}")
        snapshot = frames["subscriptions"]
        assert (snapshot["snapshot_month"] == pd.Timestamp(key)).all()
        assert (month_start(frames["events"]["event_time"]) == pd.Timestamp(key)).all()
        assert (month_start(frames["cancellations"]["cancel_date"]) == pd.Timestamp(key)).all()


def test_write_source_writes_readable_deliveries_and_refuses_to_overwrite(tmp_path):
    config = GeneratorConfig(customers=300, months=3, seed=5)
    source = tmp_path / "source"
    messages: list[str] = []
    written = write_source(source, config, progress=messages.append)
    assert written == ["2024-01-01", "2024-02-01", "2024-03-01"]
    assert available_months(source) == written
    assert len(messages) == 3 and messages[0].startswith("2024-01: 300 active")
    generated = dict(generate_months(config))
    for key in written:
        delivered = read_delivery(source, key)
        for name in RAW_TABLES:
            assert len(delivered[name]) == len(generated[key][name])
        assert delivered["customers"]["customer_id"].tolist() == generated[key]["customers"]["customer_id"].tolist()

    before = (source / "2024-02" / "events.parquet").read_bytes()
    with pytest.raises(FileExistsError, match="2024-01"):
        write_source(source, GeneratorConfig(customers=300, months=3, seed=6))
    assert (source / "2024-02" / "events.parquet").read_bytes() == before

    assert write_source(source, GeneratorConfig(customers=300, months=3, seed=6), replace=True) == written
    replaced = read_delivery(source, "2024-02-01")["subscriptions"]["monthly_charges"].to_numpy()
    original = generated["2024-02-01"]["subscriptions"]["monthly_charges"].to_numpy()
    assert len(replaced) != len(original) or not np.array_equal(replaced, original)

    # A shorter regeneration would leave 2024-03 from the earlier generation behind.
    with pytest.raises(FileExistsError, match="2024-03, which a regenerated 2024-01..2024-02"):
        write_source(source, GeneratorConfig(customers=300, months=2, seed=7), replace=True)
    assert read_delivery(source, "2024-02-01")["subscriptions"]["monthly_charges"].to_numpy().tolist() == replaced.tolist()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"drift_segment": "Satellite"}, "drift_segment 'Satellite'"),
        ({"drift_month": "2023-12"}, "drift_month 2023-12 must come after start_month"),
        ({"drift_month": "2024-13"}, "month must be 01-12"),
        ({"customers": 0}, "customers must be a positive integer"),
        ({"months": 0}, "months must be a positive integer"),
        ({"drift_price_increase": -1.5}, "drift_price_increase"),
    ],
)
def test_bad_config_is_rejected_with_a_clear_message(overrides, message):
    with pytest.raises(ValueError, match=message):
        GeneratorConfig(**overrides)


# --- ids ----------------------------------------------------------------------------------


def test_ids_are_unique_across_history_and_reference_known_customers(history):
    customers = history["customers"]
    assert customers["customer_id"].is_unique
    assert customers["customer_id"].str.fullmatch(r"C\d{7}").all()
    assert history["events"]["event_id"].is_unique
    assert history["subscriptions"].duplicated(["customer_id", "snapshot_month"]).sum() == 0

    first_seen = customers.set_index("customer_id")["delivery_month"]
    for name in ("subscriptions", "events", "cancellations"):
        frame = history[name]
        known = frame["customer_id"].map(first_seen)
        assert known.notna().all(), f"{name} mentions customers never delivered"
        assert (known <= frame["delivery_month"]).all(), f"{name} mentions a customer before delivery"

    # The initial base arrives in the first month, signups after it, every month.
    per_month = customers.groupby("delivery_month").size()
    assert per_month.iloc[0] == SMALL.customers
    assert (per_month.iloc[1:] > 0).all() and len(per_month) == SMALL.months
    new = customers[customers["delivery_month"] > customers["delivery_month"].min()]
    assert (month_start(new["signup_date"]) == new["delivery_month"]).all()


# --- label rule ---------------------------------------------------------------------------


def test_cancellations_follow_the_label_rule(history):
    snapshots = history["subscriptions"][["customer_id", "snapshot_month"]]
    cancellations = history["cancellations"].assign(
        cancel_month=lambda f: month_start(f["cancel_date"])
    )
    assert cancellations["customer_id"].is_unique  # a customer cancels at most once

    merged = snapshots.merge(cancellations, on="customer_id", how="inner")
    assert (merged["snapshot_month"] < merged["cancel_month"]).all(), "snapshot at or after cancellation"
    last = merged.groupby("customer_id").agg(last=("snapshot_month", "max"), cancel=("cancel_month", "first"))
    assert (last["last"] + pd.offsets.MonthBegin(1) == last["cancel"]).all(), (
        "a cancelled customer must have a snapshot in the month before the cancellation"
    )

    # Conversely, leaving the snapshots (inside the window) always means a cancellation.
    final_month = snapshots["snapshot_month"].max()
    gone = snapshots.groupby("customer_id")["snapshot_month"].max()
    gone = gone[gone < final_month]
    assert set(gone.index) == set(cancellations["customer_id"])

    # Nobody is active or has events after cancelling.
    events = history["events"].merge(cancellations, on="customer_id")
    assert (events["event_time"] < events["cancel_date"] + pd.Timedelta(days=1)).all()
    signup = history["customers"].set_index("customer_id")["signup_date"]
    assert (history["events"]["event_time"] >= history["events"]["customer_id"].map(signup)).all()


def test_churn_level_and_drivers_are_plausible(history):
    snapshots = history["subscriptions"]
    cancel_month = history["cancellations"].set_index("customer_id")["cancel_date"].dt.to_period("M").dt.to_timestamp()
    labelled = snapshots[snapshots["snapshot_month"] < snapshots["snapshot_month"].max()].copy()
    labelled["churned"] = labelled["customer_id"].map(cancel_month) == labelled["snapshot_month"] + pd.offsets.MonthBegin(1)

    monthly = labelled.groupby("snapshot_month")["churned"].mean()
    assert 0.008 < monthly.median() < 0.035  # a consumer telecom loses 1-3% a month

    def rate(mask) -> float:
        return labelled.loc[mask, "churned"].mean()

    contract = labelled["contract"]
    assert rate(contract == "Month-to-month") > 2 * rate(contract == "One year") > 0
    assert rate(contract == "One year") > rate(contract == "Two year")
    assert rate(labelled["payment_method"] == "Electronic check") > 1.3 * rate(
        labelled["payment_method"].str.contains("automatic")
    )
    fiber_no_support = (labelled["internet_service"] == "Fiber optic") & (labelled["tech_support"] == "No")
    assert rate(fiber_no_support) > 1.3 * rate(labelled["internet_service"] == "DSL")

    # Late payments in the snapshot month signal churn in the next one.
    events = history["events"]
    late = events[events["event_type"] == "late_payment"].assign(
        snapshot_month=lambda f: month_start(f["event_time"])
    )[["customer_id", "snapshot_month"]].drop_duplicates()
    flagged = labelled.merge(late.assign(late=1), on=["customer_id", "snapshot_month"], how="left")
    was_late = flagged["late"].notna().to_numpy()
    assert rate(was_late) > 1.5 * rate(~was_late)


# --- calibration against the Telco sample -------------------------------------------------


@pytest.fixture(scope="module")
def telco() -> pd.DataFrame:
    if TELCO_CSV is None:
        pytest.skip(
            "IBM Telco sample not found (looked for shared/datasets/telco_customer_churn.csv); "
            "calibration cannot be compared"
        )
    return pd.read_csv(TELCO_CSV)


@pytest.fixture(scope="module")
def initial_base() -> pd.DataFrame:
    key, frames = next(generate_months(GeneratorConfig(customers=6_000, months=1, seed=21)))
    base = frames["subscriptions"].merge(frames["customers"], on="customer_id")
    base["tenure"] = (
        (base["snapshot_month"].dt.year - base["signup_date"].dt.year) * 12
        + base["snapshot_month"].dt.month - base["signup_date"].dt.month + 1
    )
    return base


def shares(values: pd.Series) -> pd.Series:
    return values.astype(str).value_counts(normalize=True)


# Absolute tolerance on a share: 6,000 draws have a sampling sd below 0.007, so 0.03
# leaves room for the deliberate simplifications (e.g. add-ons drawn independently).
SHARE_TOLERANCE = 0.03


@pytest.mark.parametrize(
    ("synthetic_column", "telco_column", "mapping"),
    [
        ("gender", "gender", None),
        ("senior_citizen", "SeniorCitizen", {1: "True", 0: "False"}),
        ("partner", "Partner", {"Yes": "True", "No": "False"}),
        ("dependents", "Dependents", {"Yes": "True", "No": "False"}),
        ("phone_service", "PhoneService", {"Yes": "True", "No": "False"}),
        ("multiple_lines", "MultipleLines", None),
        ("contract", "Contract", None),
        ("internet_service", "InternetService", None),
        ("payment_method", "PaymentMethod", None),
        ("paperless_billing", "PaperlessBilling", {"Yes": "True", "No": "False"}),
    ],
)
def test_initial_base_matches_telco_shares(initial_base, telco, synthetic_column, telco_column, mapping):
    expected = telco[telco_column]
    if mapping is not None:
        expected = expected.map(mapping)
    observed, expected = shares(initial_base[synthetic_column]), shares(expected)
    assert set(observed.index) == set(expected.index)
    difference = (observed - expected).abs()
    assert difference.max() < SHARE_TOLERANCE, f"{synthetic_column}: {observed.to_dict()} vs Telco {expected.to_dict()}"


@pytest.mark.parametrize("addon", INTERNET_ADDON_COLUMNS)
def test_addon_take_up_given_internet_matches_telco(initial_base, telco, addon):
    telco_column = "".join(part.capitalize() for part in addon.split("_"))
    telco_column = telco_column.replace("Tv", "TV")
    for service in ("DSL", "Fiber optic"):
        observed = (initial_base.loc[initial_base["internet_service"] == service, addon] == "Yes").mean()
        expected = (telco.loc[telco["InternetService"] == service, telco_column] == "Yes").mean()
        assert abs(observed - expected) < 0.04, f"{addon} | {service}: {observed:.3f} vs Telco {expected:.3f}"
    no_internet = initial_base.loc[initial_base["internet_service"] == "No", addon]
    assert (no_internet == "No internet service").all()


def test_charges_and_tenure_look_like_telco(initial_base, telco):
    charges, telco_charges = initial_base["monthly_charges"], telco["MonthlyCharges"]
    assert abs(charges.mean() - telco_charges.mean()) < 2.0
    assert abs(charges.std() - telco_charges.std()) < 2.0
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert abs(charges.quantile(q) - telco_charges.quantile(q)) < 4.0, f"charges quantile {q}"
    assert charges.min() > 15 and charges.max() < 125

    tenure, telco_tenure = initial_base["tenure"], telco["tenure"].clip(lower=1)
    assert abs(tenure.mean() - telco_tenure.mean()) < 2.0
    assert abs(tenure.median() - telco_tenure.median()) < 4.0
    assert tenure.between(1, 72).all()
    for contract in ("Month-to-month", "One year", "Two year"):
        observed = tenure[initial_base["contract"] == contract].mean()
        expected = telco_tenure[telco["Contract"] == contract].mean()
        assert abs(observed - expected) < 3.0, f"tenure | {contract}"

    billed = initial_base.dropna(subset=["total_charges"])
    ratio = billed["total_charges"] / (billed["monthly_charges"] * billed["tenure"])
    assert abs(ratio.median() - 1.0) < 0.02 and ratio.std() < 0.08
    assert initial_base["total_charges"].isna().mean() < 0.01


def test_each_bill_is_added_to_total_charges(history):
    snapshots = history["subscriptions"].sort_values(["customer_id", "snapshot_month"])
    steps = snapshots.groupby("customer_id")["total_charges"].diff()
    known = steps.notna()
    assert known.sum() > 10_000
    assert np.allclose(steps[known], snapshots.loc[known, "monthly_charges"], atol=0.011)


# --- seasonality and drift ----------------------------------------------------------------


def test_september_brings_more_signups_than_the_months_before_it():
    config = GeneratorConfig(customers=10_000, months=9, seed=7, drift_month=None)
    new_customers, active = [], []
    for _, frames in generate_months(config):
        new_customers.append(len(frames["customers"]))
        active.append(len(frames["subscriptions"]))
    # Signups relative to the base they join (month 0 is the initial base itself).
    rate = np.array(new_customers[1:]) / np.array(active[:-1])
    february_to_july, september = rate[:6], rate[7]
    assert september > 1.2 * february_to_july.mean()


def segment_ratio(snapshots: pd.DataFrame, month: str, segment: str) -> float:
    """Median charge ratio, month over previous month, of the segment's continuing customers."""
    current = pd.Timestamp(month)
    previous = current - pd.offsets.MonthBegin(1)
    now = snapshots[snapshots["snapshot_month"] == current].set_index("customer_id")
    before = snapshots[snapshots["snapshot_month"] == previous].set_index("customer_id")
    both = now.join(before, rsuffix="_before", how="inner")
    both = both[(both["internet_service"] == segment) & (both["internet_service_before"] == segment)]
    return float((both["monthly_charges"] / both["monthly_charges_before"]).median())


def test_drift_raises_the_segment_price_at_drift_month_only(history):
    snapshots = history["subscriptions"]
    rise = SMALL.drift_price_increase
    assert segment_ratio(snapshots, "2024-09-01", "Fiber optic") == pytest.approx(1 + rise, abs=0.01)
    for month in ("2024-07-01", "2024-08-01", "2024-10-01", "2024-11-01"):
        assert segment_ratio(snapshots, month, "Fiber optic") == pytest.approx(1.0, abs=0.005)
    for segment in ("DSL", "No"):
        assert segment_ratio(snapshots, "2024-09-01", segment) == pytest.approx(1.0, abs=0.005)

    events = history["events"]
    changes = events[(events["event_type"] == "plan_change") & (month_start(events["event_time"]) == "2024-09-01")]
    fiber_before = snapshots[
        (snapshots["snapshot_month"] == "2024-08-01") & (snapshots["internet_service"] == "Fiber optic")
    ]
    recorded = changes[changes["customer_id"].isin(fiber_before["customer_id"])]
    assert len(recorded) >= 0.9 * len(fiber_before)  # all but those who cancel before it lands
    assert (recorded["value"] > 0).mean() > 0.95

    # The rise drives customers away: the segment's churn jumps in the drift month.
    def segment_churn(cancel_month: str) -> float:
        month = pd.Timestamp(cancel_month)
        cancelled = history["cancellations"].loc[month_start(history["cancellations"]["cancel_date"]) == month]
        before = snapshots[
            (snapshots["snapshot_month"] == month - pd.offsets.MonthBegin(1))
            & (snapshots["internet_service"] == "Fiber optic")
        ]
        return before["customer_id"].isin(cancelled["customer_id"]).mean()

    calm = np.mean([segment_churn(m) for m in ("2024-06-01", "2024-07-01", "2024-08-01")])
    assert segment_churn("2024-09-01") > 1.5 * calm


def test_no_drift_when_switched_off():
    config = GeneratorConfig(customers=2_000, months=10, seed=7, drift_month=None)
    snapshots = concat_history(config)["subscriptions"]
    for month in ("2024-07-01", "2024-08-01", "2024-09-01", "2024-10-01"):
        assert segment_ratio(snapshots, month, "Fiber optic") == pytest.approx(1.0, abs=0.005)
