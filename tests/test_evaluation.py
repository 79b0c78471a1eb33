"""Evaluation core: metrics against scikit-learn, the savings arithmetic, slices, checks, plots."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from churn_assets.evaluation import metrics as ev
from churn_assets.evaluation import report as rp


@pytest.fixture(scope="module")
def predictions() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    labels = (rng.uniform(size=600) < 0.3).astype(int)
    # Informative but noisy scores, with some exact ties and the extremes 0 and 1.
    scores = np.clip(0.25 + 0.35 * labels + rng.normal(0, 0.2, size=600), 0, 1).round(2)
    return labels, scores


@pytest.fixture(scope="module")
def segment_data(predictions: tuple[np.ndarray, np.ndarray]) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = len(predictions[0])
    return pd.DataFrame(
        {
            "contract": rng.choice(["Month-to-month", "One year", "Two year"], n),
            "senior_citizen": rng.choice([True, False], n),
            "gender": rng.choice(["Female", "Male"], n),
            "tenure_months": rng.integers(0, 72, n),
            "payment_method": rng.choice(["Electronic check", "Mailed check"], n),
        }
    )


def test_metrics_match_scikit_learn(predictions):
    labels, scores = predictions
    threshold = 0.4
    result = ev.classification_metrics(labels, scores, threshold)
    predicted = (scores >= threshold).astype(int)
    assert result["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, scores))
    assert result["pr_auc"] == pytest.approx(skm.average_precision_score(labels, scores))
    assert result["log_loss"] == pytest.approx(
        skm.log_loss(labels, np.clip(scores, 1e-15, 1 - 1e-15))
    )
    assert result["brier"] == pytest.approx(skm.brier_score_loss(labels, scores))
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted))
    assert result["precision"] == pytest.approx(skm.precision_score(labels, predicted))
    assert result["recall"] == pytest.approx(skm.recall_score(labels, predicted))
    assert result["f1"] == pytest.approx(skm.f1_score(labels, predicted))
    assert ev.confusion_matrix(result) == skm.confusion_matrix(labels, predicted).tolist()
    assert result["rows"] == 600 and result["positives"] == labels.sum()


def test_expected_calibration_error_by_hand():
    # Bins [0.1, 0.2): scores 0.1, 0.1 with labels 0, 1 -> |0.5 - 0.1| = 0.4, weight 2/5.
    # Bin [0.9, 1.0]: scores 0.9, 0.95, 1.0 with labels 1, 1, 0 -> |2/3 - 0.95| = 0.2833...
    labels = [0, 1, 1, 1, 0]
    scores = [0.1, 0.1, 0.9, 0.95, 1.0]
    expected = 2 / 5 * 0.4 + 3 / 5 * abs(2 / 3 - 0.95)
    assert ev.expected_calibration_error(labels, scores) == pytest.approx(expected)
    # Perfect calibration within every bin gives 0.
    assert ev.expected_calibration_error([0, 1, 0, 1], [0.5, 0.5, 0.55, 0.52]) == pytest.approx(
        abs(0.5 - 0.5175)
    )


def test_undefined_auc_on_a_single_class_is_nan_not_an_error():
    result = ev.classification_metrics([0, 0, 0], [0.2, 0.7, 0.1], 0.5)
    assert math.isnan(result["roc_auc"]) and math.isnan(result["pr_auc"])
    assert result["precision"] == 0.0 and result["fp"] == 1


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        ([0, 1], [0.2], "2 labels but 1 scores"),
        ([0, 2], [0.2, 0.3], "rows [1]"),
        ([0, 1], [0.2, float("nan")], "rows [1]"),
        ([0, 1], [0.2, 1.3], "within [0, 1]"),
        ([], [], "empty"),
    ],
)
def test_bad_predictions_are_refused_with_the_reason(labels, scores, message):
    with pytest.raises(ev.EvaluationInputError, match=message.replace("[", r"\[").replace(
            "]", r"\]")):
        ev.classification_metrics(labels, scores)


def test_optimal_threshold_hand_computed():
    # Targeted churner: 100 * 0.5 - 10 = +40; targeted stayer: -10.
    # Cut at 0.9: 40; 0.8: 30; 0.7: 70; 0.4: 60; 0.2: 50.
    assumptions = ev.BusinessAssumptions(retained_value=100, offer_cost=10,
                                         offer_success_rate=0.5)
    labels = [1, 0, 1, 0, 0]
    scores = [0.9, 0.8, 0.7, 0.4, 0.2]
    best = ev.optimal_threshold(labels, scores, assumptions)
    assert best == ev.OptimalThreshold(threshold=0.7, savings=70.0, targeted=3,
                                       savings_per_customer=14.0)
    assert ev.expected_savings(labels, scores, 0.7, assumptions) == 70.0
    assert ev.expected_savings(labels, scores, 0.4, assumptions) == 60.0


def test_optimal_threshold_cannot_split_tied_scores_and_may_target_nobody():
    # Targeted churner: 100 * 0.5 - 30 = +20; targeted stayer: -30.
    assumptions = ev.BusinessAssumptions(retained_value=100, offer_cost=30,
                                         offer_success_rate=0.5)
    # 0.8 is shared by a churner and two stayers. Splitting the tie (churner first) would
    # be worth 40, but no threshold can do that: the real cut at 0.8 is worth 40 - 60 = -20,
    # so the best is the cut at 0.9 alone: 20.
    best = ev.optimal_threshold([1, 1, 0, 0], [0.9, 0.8, 0.8, 0.8], assumptions)
    assert (best.threshold, best.savings, best.targeted) == (0.9, 20.0, 1)
    losing = ev.BusinessAssumptions(retained_value=10, offer_cost=10, offer_success_rate=0.5)
    nobody = ev.optimal_threshold([1, 0, 1], [0.9, 0.5, 0.2], losing)
    assert (nobody.threshold, nobody.savings, nobody.targeted) == (1.0, 0.0, 0)


def test_savings_curve_agrees_with_direct_computation(predictions):
    labels, scores = predictions
    assumptions = ev.BusinessAssumptions()
    curve = ev.savings_curve(labels, scores, assumptions, points=21)
    for row in curve.itertuples():
        assert row.expected_savings == pytest.approx(
            ev.expected_savings(labels, scores, row.threshold, assumptions)
        )
        assert row.targeted == int(np.sum(scores >= row.threshold))
    best = ev.optimal_threshold(labels, scores, assumptions)
    assert best.savings >= curve["expected_savings"].max() - 1e-9


def test_business_assumptions_are_validated():
    with pytest.raises(ev.EvaluationInputError, match="offer_success_rate"):
        ev.BusinessAssumptions(offer_success_rate=1.5)
    with pytest.raises(ev.EvaluationInputError, match="offer_cost"):
        ev.BusinessAssumptions(offer_cost=-1)


def test_gains_and_lift_by_decile_by_hand():
    # 20 rows, 4 churners: the two highest scores churn, then one in the 3rd and 10th decile.
    scores = np.linspace(1, 0.05, 20)
    labels = np.zeros(20, dtype=int)
    labels[[0, 1, 4, 19]] = 1
    gains = ev.gains_table(labels, scores)
    assert gains["customers"].tolist() == [2] * 10
    assert gains["churners"].tolist() == [2, 0, 1, 0, 0, 0, 0, 0, 0, 1]
    # Top decile: churn rate 1.0 vs base rate 0.2 -> lift 5.
    assert gains["lift"].iloc[0] == pytest.approx(5.0)
    assert gains["cumulative_gain"].tolist()[:3] == pytest.approx([0.5, 0.5, 0.75])
    assert gains["cumulative_gain"].iloc[-1] == pytest.approx(1.0)
    assert gains["cumulative_lift"].iloc[-1] == pytest.approx(1.0)


def test_tenure_bands():
    bands = ev.tenure_band([0, 6, 7, 12, 13, 24, 25, 48, 49, 120, None])
    assert bands.tolist()[:10] == ["0-6", "0-6", "7-12", "7-12", "13-24", "13-24", "25-48",
                                   "25-48", "49+", "49+"]
    assert pd.isna(bands.iloc[10])


def test_slices_match_metrics_on_each_subset(predictions, segment_data):
    labels, scores = predictions
    segments, notes = ev.segment_frame(segment_data, extra_columns=["payment_method"])
    assert list(segments.columns) == ["contract", "senior_citizen", "gender", "payment_method",
                                      "tenure_band"]
    assert notes == []
    slices = ev.slice_metrics(segments, labels, scores, 0.4)
    assert set(slices["segment"]) == set(segments.columns)
    row = slices[(slices.segment == "contract") & (slices.value == "One year")].iloc[0]
    mask = segment_data["contract"].to_numpy() == "One year"
    direct = ev.classification_metrics(labels[mask], scores[mask], 0.4)
    assert row["rows"] == mask.sum()
    assert row["roc_auc"] == pytest.approx(direct["roc_auc"])
    assert row["recall"] == pytest.approx(direct["recall"])
    tenure_values = slices[slices.segment == "tenure_band"]["value"].tolist()
    assert tenure_values == ["0-6", "7-12", "13-24", "25-48", "49+"]


def test_missing_slice_columns():
    frame = pd.DataFrame({"contract": ["a", "b"]})
    segments, notes = ev.segment_frame(frame)
    assert list(segments.columns) == ["contract"]
    assert any("gender" in note for note in notes) and any("tenure" in note for note in notes)
    with pytest.raises(ev.EvaluationInputError, match=r"\['region'\] are not in"):
        ev.segment_frame(frame, extra_columns=["region"])


def test_largest_slice_gap_ignores_small_and_single_class_slices():
    slices = pd.DataFrame(
        [
            {"segment": "contract", "value": "A", "rows": 500, "roc_auc": 0.80},
            {"segment": "contract", "value": "B", "rows": 400, "roc_auc": 0.70},
            {"segment": "contract", "value": "C", "rows": 10, "roc_auc": 0.20},
            {"segment": "gender", "value": "F", "rows": 500, "roc_auc": 0.75},
            {"segment": "gender", "value": "M", "rows": 500, "roc_auc": 0.74},
            {"segment": "region", "value": "N", "rows": 300, "roc_auc": float("nan")},
            {"segment": "region", "value": "S", "rows": 300, "roc_auc": 0.9},
        ]
    ).assign(**{m: 0.0 for m in ev.SLICE_METRICS if m != "roc_auc"})
    gap = ev.largest_slice_gap(slices, "roc_auc", min_rows=50)
    assert (gap.segment, gap.best_value, gap.worst_value) == ("contract", "A", "B")
    assert gap.gap == pytest.approx(0.10)
    assert "contract=C (10 rows)" in gap.excluded and "region=N (300 rows)" in gap.excluded


def test_evaluate_uses_the_given_threshold_and_reports_everything(predictions, segment_data):
    labels, scores = predictions
    report = ev.evaluate(
        labels, scores, frame=segment_data, threshold=0.45, threshold_source="validation",
        slice_columns=["payment_method"], baseline_scores={"coin": np.full(600, 0.3)},
    )
    assert report.threshold == 0.45 and report.metrics["threshold"] == 0.45
    assert report.baseline_metrics["coin"]["roc_auc"] == pytest.approx(0.5)
    assert report.top_decile_lift == pytest.approx(report.gains["lift"].iloc[0])
    summary = report.summary()
    assert summary["threshold_source"] == "validation"
    assert summary["largest_slice_gap"]["segment"] in set(report.slices["segment"])
    # JSON-safe: no NaN survives.
    import json

    json.dumps(summary, allow_nan=False)
    default = ev.evaluate(labels, scores)
    assert default.threshold == default.optimal.threshold
    assert "savings-optimal" in default.threshold_source


@pytest.mark.parametrize(
    ("outcome", "passed"),
    [
        (lambda: ev.check_auc_floor(0.81, 0.75), True),
        (lambda: ev.check_auc_floor(0.70, 0.75), False),
        (lambda: ev.check_auc_floor(float("nan"), 0.75), False),
        (lambda: ev.check_beats_baselines(0.84, {"lr": 0.83, "rf": 0.82}), True),
        (lambda: ev.check_beats_baselines(0.84, {"lr": 0.83}, margin=0.02), False),
        (lambda: ev.check_beats_baselines(0.80, {"lr": 0.83, "rf": 0.79}), False),
        (lambda: ev.check_beats_baselines(0.80, {}), True),
        (lambda: ev.check_calibration(0.02, 0.05), True),
        (lambda: ev.check_calibration(0.08, 0.05), False),
    ],
)
def test_model_checks_pass_and_fail(outcome, passed):
    result, metadata = outcome()
    assert result is passed
    assert metadata["description"]


def test_beats_baselines_names_the_best_baseline():
    passed, metadata = ev.check_beats_baselines(0.80, {"lr": 0.83, "rf": 0.79})
    assert not passed and metadata["best_baseline"] == "lr"
    assert metadata["difference"] == pytest.approx(-0.03)


def test_leakage_smell_names_the_feature():
    importance = pd.DataFrame({"feature": ["tenure", "days_to_cancel", "charges"],
                               "share": [0.15, 0.75, 0.10]})
    passed, metadata = ev.check_leakage_smell(importance, 0.85, max_feature_share=0.5)
    assert not passed and metadata["top_feature"] == "days_to_cancel"
    assert "days_to_cancel" in metadata["description"]
    balanced = importance.assign(share=[0.4, 0.35, 0.25])
    assert ev.check_leakage_smell(balanced, 0.85, max_feature_share=0.5)[0]
    passed, metadata = ev.check_leakage_smell(balanced, 0.995, auc_ceiling=0.97)
    assert not passed and "ceiling" in metadata["description"]


def test_slice_gap_check():
    gap = ev.SliceGap("roc_auc", "contract", "A", 0.8, "B", 0.7, 0.1)
    assert ev.check_slice_gap(gap, 0.15)[0]
    passed, metadata = ev.check_slice_gap(gap, 0.05)
    assert not passed and "contract" in metadata["description"]
    empty = ev.SliceGap("roc_auc", None, None, None, None, None, 0.0)
    assert ev.check_slice_gap(empty, 0.05)[0]


def test_plots_and_model_card_are_written(tmp_path, predictions, segment_data):
    labels, scores = predictions
    report = ev.evaluate(labels, scores, frame=segment_data, threshold=0.45,
                         threshold_source="validation",
                         baseline_scores={"logistic_regression": np.clip(scores + 0.1, 0, 1)})
    plots = rp.evaluation_plots(report, "xgboost")
    assert set(plots) == {"roc_curve.png", "pr_curve.png", "calibration.png",
                          "confusion_matrix.png", "gains_lift.png", "savings_curve.png",
                          "slices_auc.png"}
    card = rp.render_model_card(
        report,
        rp.ModelCardInfo(version="v123", algorithm="xgboost", data_window="2024-01 to 2025-12",
                         sizes={"train": 1000, "test": 600}, calibration="isotonic",
                         lineage=["features.training_set"]),
        check_results={"auc_floor": (True, "ok")},
    )
    written = rp.write_files(tmp_path / "reports" / "v123", {**plots, "model_card.md": card})
    for path in written:
        assert path.exists() and path.stat().st_size > 0
    for name, png in plots.items():
        assert png.startswith(b"\x89PNG"), name
        assert 5_000 < len(png) <= rp.MAX_PNG_BYTES, name
    assert not list((tmp_path / "reports" / "v123").glob(".*.tmp"))
    assert f"{report.metrics['roc_auc']:.4f}" in card
    assert "## Limitations" in card and "`v123`" in card and "0.450" in card
    image = rp.markdown_image(plots["roc_curve.png"], "ROC")
    assert image.startswith("![ROC](data:image/png;base64,")
