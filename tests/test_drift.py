"""The false-alarm rule of drift: which reference a month meets, PSI against chance, the
importance weighting, and the one verdict the checks, the retraining sensor and the summary share.

The histories here are small seeded simulations of the two things that made quiet demo months
page: a base that ages (tenure grows a month a month) and a look-back feature that is
left-censored by the start of the data (``days_since_*`` sits at its 365-day cap for everyone
whose last event predates the data, until a year of history exists).
"""

from __future__ import annotations

import json
from datetime import date

import duckdb
import numpy as np
import pandas as pd
import pytest

from churn_assets.monitoring.drift import (
    NUMERIC,
    DriftSettings,
    DriftThresholds,
    binned_shares,
    check_max_psi,
    check_weighted_drift,
    compute_drift,
    drift_verdict,
    ensure_drift_tables,
    population_stability_index,
    psi_chance_level,
    psi_expected,
    psi_from_shares,
    reference_months_for,
    write_drift,
)

MONTHS = [f"{2024 + i // 12}-{i % 12 + 1:02d}-01" for i in range(20)]
SHIFT_MONTH = MONTHS[16]  # 2025-05
STEADY = [f"steady_{i}" for i in range(6)]
NUMERIC_FEATURES = ["tenure_months", "days_since_support_call", "monthly_charges", "usage_gb", *STEADY]
CATEGORICAL_FEATURES = ["contract", "promo_flag"]
IMPORTANCE = {"tenure_months": 0.25, "days_since_support_call": 0.1, "monthly_charges": 0.2,
              "usage_gb": 0.1, "contract": 0.289, "promo_flag": 0.001, **{name: 0.01 for name in STEADY}}


def history(rows: int = 800, seed: int = 7, shift: str | None = "monthly_charges") -> dict[str, pd.DataFrame]:
    """Monthly feature frames of a base of customers, 2% of whom leave each month for a
    newcomer: an ageing base, a days_since feature censored by the start of the data, and
    from SHIFT_MONTH on a shift in ``shift`` (None: a quiet history)."""
    rng = np.random.default_rng(seed)

    def newcomers(count: int, tenure: np.ndarray) -> dict[str, np.ndarray]:
        return {
            "tenure": tenure,
            # Day of the customer's last support call; NaN: none the data has seen.
            "last_call": np.full(count, np.nan),
            "charges": rng.normal(70, 20, count),
            "contract": rng.choice(["month-to-month", "one_year", "two_year"], count, p=[0.55, 0.25, 0.2]),
        }

    base = newcomers(rows, rng.integers(1, 72, rows))
    frames = {}
    for index, month in enumerate(MONTHS):
        month_end = 30 * (index + 1)  # days since the data started
        if index:
            base["tenure"] = base["tenure"] + 1
            leaving = rng.random(rows) < 0.02
            fresh = newcomers(int(leaving.sum()), np.ones(int(leaving.sum()), dtype=int))
            for key, values in fresh.items():
                base[key] = base[key].copy()
                base[key][leaving] = values
        # A tenth of the customers call each month. Calls before the data started are
        # invisible, so days_since sits at its cap of 365 ("none in a year") for far more
        # customers until a year of history exists: 66% after four months, 28% after twelve.
        calling = rng.random(rows) < 0.1
        base["last_call"] = np.where(calling, month_end - rng.integers(0, 30, rows), base["last_call"])
        days = np.nan_to_num(np.minimum(month_end - base["last_call"], 365), nan=365.0)
        shifted = shift is not None and month >= SHIFT_MONTH
        frames[month] = pd.DataFrame({
            "tenure_months": base["tenure"],
            "days_since_support_call": days,
            "monthly_charges": base["charges"] * (1.3 if shifted and shift == "monthly_charges" else 1.0)
            + rng.normal(0, 1, rows),
            "usage_gb": rng.gamma(2, 10, rows),
            **{name: rng.normal(0, 1, rows) for name in STEADY},
            "contract": base["contract"],
            "promo_flag": rng.random(rows) < (0.9 if shifted and shift == "promo_flag" else 0.2),
        })
    return frames


def measure(frames: dict[str, pd.DataFrame], train: list[str], *, reference_months: int = 12,
            importance=IMPORTANCE) -> dict[str, dict]:
    """drift_for_months' loop on in-memory frames: each month against its reference months."""
    settings = DriftSettings(reference_months=reference_months)
    summaries = {}
    for month in MONTHS:
        chosen = reference_months_for(month, train, settings.reference_months)
        reference = pd.concat([frames[f"{m:%Y-%m-%d}"] for m in chosen], ignore_index=True)
        reference = reference.sample(n=min(len(reference), 3_000), random_state=0)
        result = compute_drift(reference, frames[month], NUMERIC_FEATURES, CATEGORICAL_FEATURES,
                               settings=settings, importance=importance)
        summaries[month] = {**result.summary, "reference_precedes": max(chosen) < date.fromisoformat(month)}
    return summaries


def error_months(summaries: dict[str, dict], thresholds: DriftThresholds | None = None) -> list[str]:
    return [m[:7] for m, s in summaries.items() if drift_verdict(s, thresholds or DriftThresholds())[1] == "ERROR"]


# -- which months a month is compared with -------------------------------------------------


def test_reference_is_the_training_months_before_the_month():
    train = [date(2024, m, 1) for m in range(3, 13)]  # 2024-03 .. 2024-12
    # After training: the latest training months.
    assert reference_months_for("2025-02-01", train, 3) == [date(2024, 10, 1), date(2024, 11, 1), date(2024, 12, 1)]
    # Inside the window (a backfill): the ones before it, never itself or later ones.
    assert reference_months_for(date(2024, 6, 1), train, 3) == [date(2024, 3, 1), date(2024, 4, 1), date(2024, 5, 1)]
    assert reference_months_for("2024-04-01", train, 3) == [date(2024, 3, 1)]
    # The first month (and any before it) has no past: the earliest other months stand in.
    assert reference_months_for("2024-03-01", train, 2) == [date(2024, 4, 1), date(2024, 5, 1)]
    assert reference_months_for("2024-01-01", train, 2) == [date(2024, 3, 1), date(2024, 4, 1)]
    # 0 pools every training month.
    assert reference_months_for("2024-06-01", train, 0) == train


# -- PSI against chance ------------------------------------------------------------------


def test_psi_expected_and_chance_level_match_simulated_noise():
    rng = np.random.default_rng(3)
    samples = []
    for _ in range(300):
        population = rng.normal(size=2_000)
        reference, current = rng.choice(population, 100), rng.choice(population, 100)
        ref_share, cur_share, _ = binned_shares(reference, current, NUMERIC, bins=10)
        samples.append(psi_from_shares(ref_share, cur_share))
    samples = np.array(samples)
    # PSI of two samples of one population is (bins - 1)(1/n + 1/m) on average: 0.18 here,
    # already near the conventional 'moderate' level of 0.25.
    assert samples.mean() == pytest.approx(psi_expected(10, 100, 100), rel=0.2)
    level = psi_chance_level(10, 100, 100, alpha=0.01)
    assert (samples >= 0.25).mean() > 0.1  # a fixed level is reached by noise
    # The chance level: close to alpha (the chi-square approximation is a little optimistic
    # at 10 rows a bin, which the default alpha of 0.001 leaves room for).
    assert (samples >= level).mean() < 0.05
    assert psi_chance_level(10, 5_000, 5_000) < 0.02  # large samples: the PSI levels decide


def test_a_small_quiet_month_does_not_page_on_noise():
    rng = np.random.default_rng(11)

    def frame(rows: int) -> pd.DataFrame:
        return pd.DataFrame({name: rng.normal(size=rows) for name in NUMERIC_FEATURES})

    reference, current = frame(400), frame(25)
    # Ten quantile bins and a fixed level call this month drifted: noise alone at 25 rows
    # passes PSI 0.5 there.
    assert max(population_stability_index(reference[c], current[c], NUMERIC, bins=10)
               for c in NUMERIC_FEATURES) >= DriftThresholds().psi_error
    result = compute_drift(reference, current, NUMERIC_FEATURES, [])
    summary = result.summary
    assert drift_verdict(summary, DriftThresholds())[1] is None
    assert summary["drifted_features"] == 0 and summary["moved_features"] == ""
    # Five rows a bin at least, and a chance level above the PSI levels at this size.
    assert (result.features["psi_critical"] > DriftThresholds().psi_warn).all()


# -- the false-alarm rule on a history -----------------------------------------------------


def test_quiet_months_pass_and_the_shifted_month_fails():
    frames = history()
    train = [date.fromisoformat(m) for m in MONTHS[3:15]]  # the first three months are warm-up
    summaries = measure(frames, train)
    # Against the months before it, only the shift is an alarm: not the ageing base, not the
    # censored days_since feature filling up, not the warm-up months before training.
    assert error_months(summaries) == [m[:7] for m in MONTHS[16:]]
    shifted = summaries[SHIFT_MONTH]
    assert shifted["paging_psi_feature"] == "monthly_charges"
    assert shifted["moved_features"].split(", ")[0] == "monthly_charges"
    assert "moved: monthly_charges" in drift_verdict(shifted, DriftThresholds())[2]["description"]
    quiet = [s for m, s in summaries.items() if m < SHIFT_MONTH]
    assert max(s["paging_psi"] for s in quiet if s["reference_precedes"]) < DriftThresholds().psi_error

    # The reference this replaces, every training month pooled, pages on the history itself:
    # the first training months, whose look-back is still filling, against the whole pool.
    pooled = measure(frames, train, reference_months=0)
    for summary in pooled.values():
        summary.pop("reference_precedes")
    assert {"2024-04", "2024-05"} <= set(error_months(pooled))
    assert pooled["2024-05-01"]["max_psi_feature"] == "days_since_support_call"


def test_a_quiet_history_has_no_error_month():
    frames = history(shift=None)
    summaries = measure(frames, [date.fromisoformat(m) for m in MONTHS[3:15]])
    assert error_months(summaries) == []


def test_a_shift_in_an_unimportant_column_does_not_page():
    frames = history(shift="promo_flag")
    train = [date.fromisoformat(m) for m in MONTHS[3:15]]
    shifted = measure(frames, train)[SHIFT_MONTH]
    assert shifted["max_psi_feature"] == "promo_flag" and shifted["max_psi"] > 1
    # 0.1% of the attribution: counted at a tenth of its PSI (floor 1%), and next to nothing
    # in the weighted view; it is still named as moved.
    verdict = check_max_psi(shifted, DriftThresholds())
    assert verdict[1] != "ERROR" and "counted at 0.10%" in verdict[2]["description"]
    assert check_weighted_drift(shifted, DriftThresholds())[:2] == (True, None)
    assert "promo_flag" in shifted["moved_features"]
    assert drift_verdict(shifted, DriftThresholds())[1] != "ERROR"
    # Unweighted (no importance measured), the same shift pages.
    unweighted = measure(frames, train, importance=None)[SHIFT_MONTH]
    assert drift_verdict(unweighted, DriftThresholds())[1] == "ERROR"


def test_weighted_drift_reads_importance_times_psi():
    reference, current = history()[MONTHS[15]], history()[SHIFT_MONTH]
    result = compute_drift(reference, current, NUMERIC_FEATURES, CATEGORICAL_FEATURES, importance=IMPORTANCE)
    features = result.features.set_index("feature")
    charges = features.loc["monthly_charges"]
    # Importance x the PSI less its no-change expectation (a dozen bins at most at 800 rows).
    assert 0.2 * (charges["psi"] - psi_expected(12, 800, 800)) <= charges["weighted_psi"] <= 0.2 * charges["psi"]
    assert charges["weighted_psi"] > 0.1
    assert result.summary["weighted_psi"] == pytest.approx(features["weighted_psi"].sum())
    passed, severity, metadata = check_weighted_drift(result.summary, DriftThresholds())
    assert not passed and metadata["moved_features"].startswith("monthly_charges")


# -- one verdict for the checks, the sensor and the summary ----------------------------------


def test_a_month_with_no_past_warns_but_does_not_page():
    summary = {"share_drifted": 0.6, "paging_psi": 2.0, "paging_psi_feature": "tenure_months",
               "max_psi": 2.0, "max_psi_feature": "tenure_months", "reference_precedes": False}
    passed, severity, metadata = drift_verdict(summary, DriftThresholds())
    assert (passed, severity) == (False, "WARN") and "no training month precedes" in metadata["description"]
    assert drift_verdict({**summary, "reference_precedes": True}, DriftThresholds())[1] == "ERROR"


def test_prediction_drift_within_chance_passes():
    from churn_assets.monitoring.drift import check_prediction_drift

    summary = {"prediction_drift_score": 0.3, "prediction_psi": 0.2, "prediction_psi_critical": 0.4}
    assert check_prediction_drift(summary, DriftThresholds())[:2] == (True, None)
    assert check_prediction_drift({**summary, "prediction_psi": 0.5}, DriftThresholds())[:2] == (False, "ERROR")


def _sensor_con(rows: list[dict]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE SCHEMA ml; CREATE SCHEMA features")
    con.execute("CREATE TABLE ml.model_versions (version VARCHAR, algorithm VARCHAR, test_auc DOUBLE, "
                "is_champion BOOLEAN, created_at TIMESTAMP, split_description JSON)")
    split = {"parts": {"train": {"months": ["2024-01-01", "2024-02-01"]}, "test": {"months": ["2024-03-01"]}}}
    con.execute("INSERT INTO ml.model_versions VALUES ('champ', 'xgboost', 0.85, true, TIMESTAMP '2024-04-02', ?)",
                [json.dumps(split)])
    con.execute("CREATE TABLE features.training_set AS SELECT DATE '2024-01-01' AS snapshot_month")
    ensure_drift_tables(con)
    for row in rows:
        base = {"features_checked": 10, "drifted_features": 1, "share_drifted": 0.1, "reference_rows": 100,
                "current_rows": 100, "model_version": "champ", "computed_at": "2024-05-01"}
        values = {**base, **row}
        con.execute(f"INSERT INTO monitoring.drift_summary ({', '.join(values)}) VALUES "
                    f"({', '.join('?' for _ in values)})", list(values.values()))
    return con


def test_the_sensor_and_the_summary_page_on_what_the_checks_call_an_error():
    from churn_assets.cli.summary import summary_lines
    from churn_assets.monitoring.drift import DriftPolicy
    from churn_assets.monitoring.retraining import retraining_reasons

    con = _sensor_con([
        # A huge shift in a column the champion barely reads: warns, does not page.
        {"month": "2024-04-01", "max_psi": 0.9, "max_psi_feature": "promo_flag", "max_psi_importance": 0.001,
         "paging_psi": 0.09, "paging_psi_feature": "promo_flag", "paging_psi_raw": 0.9,
         "paging_psi_importance": 0.001, "reference_precedes": True, "moved_features": "promo_flag"},
        # A month with no past: compared with later months, warns only.
        {"month": "2023-12-01", "max_psi": 3.0, "max_psi_feature": "tenure_months", "paging_psi": 3.0,
         "paging_psi_feature": "tenure_months", "reference_precedes": False},
    ])
    def drift_reasons():
        return [r for r in retraining_reasons(con, drift=DriftThresholds(), decay_margin=0.05,
                                              new_labelled_months=99) if r.kind == "drift"]

    assert drift_reasons() == []
    assert "drift at error level: none" in "\n".join(summary_lines(con, DriftPolicy()))

    con.execute("INSERT INTO monitoring.drift_summary (month, features_checked, drifted_features, share_drifted, "
                "max_psi, max_psi_feature, paging_psi, paging_psi_feature, reference_precedes, moved_features, "
                "reference_rows, current_rows, model_version, computed_at) VALUES (DATE '2024-05-01', 10, 2, 0.2, "
                "0.8, 'monthly_charges', 0.8, 'monthly_charges', true, 'monthly_charges, contract', 100, 100, "
                "'champ', TIMESTAMP '2024-06-01')")
    [reason] = drift_reasons()
    assert reason.run_key == "drift-champ-2024-05" and "monthly_charges" in reason.detail
    lines = "\n".join(summary_lines(con, DriftPolicy()))
    assert "drift at error level: 2024-05 (" in lines and "moved: monthly_charges, contract" in lines
    assert "2024-04" not in lines.split("drift at error level:")[1]


def test_write_drift_adds_new_columns_to_an_older_warehouse():
    con = duckdb.connect()
    con.execute("CREATE SCHEMA monitoring")
    con.execute("CREATE TABLE monitoring.drift (month DATE NOT NULL, feature VARCHAR NOT NULL, kind VARCHAR NOT NULL, "
                "drift_score DOUBLE, drifted BOOLEAN NOT NULL, psi DOUBLE, stattest VARCHAR NOT NULL, threshold DOUBLE, "
                "reference_rows BIGINT NOT NULL, current_rows BIGINT NOT NULL, model_version VARCHAR NOT NULL)")
    frames = history(rows=200)
    result = compute_drift(frames[MONTHS[15]], frames[SHIFT_MONTH], NUMERIC_FEATURES, CATEGORICAL_FEATURES,
                           importance=IMPORTANCE)
    write_drift(con, SHIFT_MONTH, result, "v1")
    stored = con.execute("SELECT feature, importance, moved FROM monitoring.drift WHERE feature = 'monthly_charges'"
                         ).fetchone()
    assert stored == ("monthly_charges", 0.2, True)
    moved = con.execute("SELECT moved_features FROM monitoring.drift_summary").fetchone()[0]
    assert moved.startswith("monthly_charges")


def test_a_feature_constant_in_the_reference_pages_whatever_its_importance():
    # The champion could not learn from a column that (nearly) never varied, so its zero
    # importance says nothing: a price rise flag that starts firing is new information.
    rng = np.random.default_rng(5)
    reference = pd.DataFrame({"x": rng.normal(size=2_000), "flag": rng.random(2_000) < 0.01})
    current = pd.DataFrame({"x": rng.normal(size=2_000), "flag": rng.random(2_000) < 0.3})
    result = compute_drift(reference, current, ["x"], ["flag"], importance={"x": 1.0, "flag": 0.0})
    assert result.summary["paging_psi_feature"] == "flag"
    assert result.summary["paging_psi"] == pytest.approx(result.summary["max_psi"])
    assert drift_verdict({**result.summary, "reference_precedes": True}, DriftThresholds())[1] == "ERROR"


def test_month_shares_counted_elsewhere_replace_the_sample_in_the_psi():
    """engine: spark counts each feature's bins over the whole month (FeaturePsi); the PSI,
    its chance level and the weighted excess then use those shares and the month's rows, while
    the sample still feeds the Evidently tests."""
    from churn_assets.monitoring.drift import CATEGORICAL, psi_bins
    from churn_assets.monitoring.spark_drift import FeaturePsi

    frames = history()
    reference, month = frames[MONTHS[12]], frames[SHIFT_MONTH]
    sample = month.sample(n=120, random_state=0)
    settings = DriftSettings()
    bins = psi_bins(settings, len(reference), len(month))
    shares = {}
    for name, kind in [*((n, NUMERIC) for n in NUMERIC_FEATURES), *((n, CATEGORICAL) for n in CATEGORICAL_FEATURES)]:
        ref_share, cur_share, labels = binned_shares(reference[name], month[name], kind, bins=bins)
        shares[name] = FeaturePsi(name, kind, psi_from_shares(ref_share, cur_share, settings.psi_epsilon), labels,
                                  ref_share.tolist(), cur_share.tolist(), len(month))
    whole = compute_drift(reference, month, NUMERIC_FEATURES, CATEGORICAL_FEATURES, importance=IMPORTANCE)
    counted = compute_drift(reference, sample, NUMERIC_FEATURES, CATEGORICAL_FEATURES, importance=IMPORTANCE,
                            month_shares=shares)
    sampled = compute_drift(reference, sample, NUMERIC_FEATURES, CATEGORICAL_FEATURES, importance=IMPORTANCE)
    columns = ["feature", "psi", "psi_critical", "weighted_psi", "paging_psi", "moved"]
    pd.testing.assert_frame_equal(counted.features[columns], whole.features[columns])
    assert not np.allclose(sampled.features["psi"], whole.features["psi"])  # the sample alone differs
    # The Evidently scores are the sample's.
    assert counted.features["drift_score"].tolist() == sampled.features["drift_score"].tolist()
