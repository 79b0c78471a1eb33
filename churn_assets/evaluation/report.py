"""Plots and the model card, rendered from an EvaluationReport and SHAP contributions.

Every plot is returned as PNG bytes (so the assets can both write it under
``artifacts/reports/<version>/`` and embed it in the materialization as base64 markdown)
and kept under ``MAX_PNG_BYTES`` by lowering the resolution if needed.
"""

from __future__ import annotations

import base64
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churn_assets.core.metadata import markdown_table

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from churn_assets.evaluation.metrics import EvaluationReport
    from churn_assets.training.explain import Contributions

MAX_PNG_BYTES = 150_000
DPI_STEPS = (110, 90, 72, 56)
MODEL_COLOR = "#1f5fa8"
BASELINE_COLORS = ("#d9822b", "#3a9d5d", "#8e5ea2", "#7f7f7f")
RANDOM_COLOR = "#999999"


def _pyplot() -> Any:
    import matplotlib

    # No display in a run worker: render off-screen.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig: Figure, max_bytes: int = MAX_PNG_BYTES) -> bytes:
    """The figure as PNG at the highest resolution in DPI_STEPS that fits ``max_bytes``."""
    import io

    plt = _pyplot()
    try:
        for dpi in DPI_STEPS:
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
            data = buffer.getvalue()
            if len(data) <= max_bytes:
                return data
        return data
    finally:
        plt.close(fig)


def markdown_image(png: bytes, alt: str) -> str:
    """A markdown image with the PNG inlined, the form the Dagster UI renders in metadata."""
    encoded = base64.b64encode(png).decode("ascii")
    return f"![{alt}](data:image/png;base64,{encoded})"


def write_files(directory: Path, files: Mapping[str, bytes | str]) -> list[Path]:
    """Write each file atomically (temp file + rename), so a reader never sees half a file."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in files.items():
        target = directory / name
        data = content.encode("utf-8") if isinstance(content, str) else content
        handle, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            os.replace(temp_name, target)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        written.append(target)
    return written


# --- evaluation plots -------------------------------------------------------------------


def _style(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=12)
    ax.set_xlabel(xlabel, fontsize=10)
    ax.set_ylabel(ylabel, fontsize=10)
    ax.grid(alpha=0.3)


def roc_plot(report: EvaluationReport, model_name: str) -> bytes:
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    fpr, tpr, _ = roc_curve(report.y_true, report.y_score)
    ax.plot(fpr, tpr, color=MODEL_COLOR, lw=2.2,
            label=f"{model_name} (AUC {report.metrics['roc_auc']:.3f})")
    for color, (name, scores) in zip(BASELINE_COLORS, report.baseline_scores.items(),
                                     strict=False):
        fpr_b, tpr_b, _ = roc_curve(report.y_true, scores)
        auc = roc_auc_score(report.y_true, scores)
        ax.plot(fpr_b, tpr_b, color=color, lw=1.4, ls="--", label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color=RANDOM_COLOR, lw=1, ls=":", label="random (AUC 0.500)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    _style(ax, "ROC curve on the test split", "False positive rate (stayers flagged)",
           "True positive rate (churners caught)")
    ax.legend(loc="lower right", fontsize=9)
    return figure_png(fig)


def pr_plot(report: EvaluationReport, model_name: str) -> bytes:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    precision, recall, _ = precision_recall_curve(report.y_true, report.y_score)
    ax.plot(recall, precision, color=MODEL_COLOR, lw=2.2,
            label=f"{model_name} (AP {report.metrics['pr_auc']:.3f})")
    for color, (name, scores) in zip(BASELINE_COLORS, report.baseline_scores.items(),
                                     strict=False):
        p_b, r_b, _ = precision_recall_curve(report.y_true, scores)
        ap = average_precision_score(report.y_true, scores)
        ax.plot(r_b, p_b, color=color, lw=1.4, ls="--", label=f"{name} (AP {ap:.3f})")
    base_rate = report.metrics["base_rate"]
    ax.axhline(base_rate, color=RANDOM_COLOR, lw=1, ls=":",
               label=f"random (churn rate {base_rate:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    _style(ax, "Precision-recall curve on the test split", "Recall (share of churners caught)",
           "Precision (share of flagged who churn)")
    ax.legend(loc="upper right", fontsize=9)
    return figure_png(fig)


def calibration_plot(report: EvaluationReport, n_bins: int = 10) -> bytes:
    import numpy as np

    plt = _pyplot()
    fig, (ax, ax_hist) = plt.subplots(
        2, 1, figsize=(6.4, 6.4), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    bins = np.minimum((report.y_score * n_bins).astype(int), n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    filled = counts > 0
    mean_score = np.bincount(bins, weights=report.y_score, minlength=n_bins)[filled] / counts[
        filled]
    churn_rate = np.bincount(bins, weights=report.y_true, minlength=n_bins)[filled] / counts[
        filled]
    ax.plot([0, 1], [0, 1], color=RANDOM_COLOR, ls=":", lw=1, label="perfectly calibrated")
    ax.plot(mean_score, churn_rate, "o-", color=MODEL_COLOR, lw=2, label="model")
    ax.set_ylim(0, 1)
    _style(ax, f"Calibration on the test split (ECE {report.metrics['ece']:.3f})", "",
           "Observed churn rate")
    ax.legend(loc="upper left", fontsize=9)
    ax_hist.hist(report.y_score, bins=n_bins, range=(0, 1), color=MODEL_COLOR, alpha=0.7)
    ax_hist.set_xlim(0, 1)
    _style(ax_hist, "", "Predicted churn probability (10 equal-width bins)", "Customers")
    ax_hist.set_title("")
    fig.tight_layout()
    return figure_png(fig)


def confusion_plot(report: EvaluationReport) -> bytes:
    import numpy as np

    plt = _pyplot()
    matrix = np.asarray(report.confusion)
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    ax.imshow(matrix, cmap="Blues")
    row_totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, row_totals, out=np.zeros(matrix.shape), where=row_totals > 0)
    for i in range(2):
        for j in range(2):
            dark = matrix[i, j] > matrix.max() / 2
            ax.text(j, i, f"{matrix[i, j]:,}\n({shares[i, j]:.0%} of row)", ha="center",
                    va="center", fontsize=11, color="white" if dark else "black")
    ax.set_xticks([0, 1], ["predicted stay", "predicted churn"])
    ax.set_yticks([0, 1], ["actually stayed", "actually churned"])
    ax.set_title(f"Confusion matrix at threshold {report.threshold:.3f}", fontsize=12)
    ax.set_xlabel("Model decision", fontsize=10)
    ax.set_ylabel("Outcome in the next month", fontsize=10)
    fig.tight_layout()
    return figure_png(fig)


def gains_lift_plot(report: EvaluationReport) -> bytes:
    import numpy as np

    plt = _pyplot()
    gains = report.gains
    fig, (ax_gain, ax_lift) = plt.subplots(1, 2, figsize=(11, 4.6))
    share = np.concatenate([[0.0], gains["cumulative_share_customers"].to_numpy()])
    gain = np.concatenate([[0.0], gains["cumulative_gain"].to_numpy()])
    ax_gain.plot(share * 100, gain * 100, "o-", color=MODEL_COLOR, lw=2, label="model")
    ax_gain.plot([0, 100], [0, 100], color=RANDOM_COLOR, ls=":", label="random targeting")
    _style(ax_gain, "Cumulative gains", "Customers targeted, highest scores first (%)",
           "Churners reached (%)")
    ax_gain.legend(loc="lower right", fontsize=9)
    ax_lift.bar(gains["decile"], gains["lift"], color=MODEL_COLOR, alpha=0.85)
    ax_lift.axhline(1.0, color=RANDOM_COLOR, ls=":", label="random (lift 1)")
    for decile, lift in zip(gains["decile"], gains["lift"], strict=True):
        ax_lift.text(decile, lift, f"{lift:.1f}", ha="center", va="bottom", fontsize=8)
    ax_lift.set_xticks(gains["decile"])
    _style(ax_lift, f"Lift by score decile (top decile {report.top_decile_lift:.2f}x)",
           "Score decile (1 = highest risk)", "Churn rate / overall churn rate")
    ax_lift.legend(loc="upper right", fontsize=9)
    fig.tight_layout()
    return figure_png(fig)


def savings_plot(report: EvaluationReport) -> bytes:
    plt = _pyplot()
    curve = report.savings
    assumptions = report.assumptions
    fig, ax = plt.subplots(figsize=(7.6, 4.8))
    ax.plot(curve["threshold"], curve["expected_savings"], color=MODEL_COLOR, lw=2)
    ax.axhline(0, color=RANDOM_COLOR, lw=1)
    optimal = report.optimal
    ax.axvline(optimal.threshold, color="#3a9d5d", ls="--",
               label=f"best on test: {optimal.threshold:.3f} ({optimal.savings:,.0f})")
    ax.axvline(report.threshold, color="#d9822b", ls=":",
               label=f"operating threshold: {report.threshold:.3f} "
                     f"({report.savings_at_threshold:,.0f})")
    _style(
        ax,
        "Expected net savings of a retention campaign",
        "Target customers with churn probability >= threshold",
        "Expected net savings (currency units)",
    )
    ax.legend(loc="upper right", fontsize=9, title=(
        f"value {assumptions.retained_value:,.0f}, offer {assumptions.offer_cost:,.0f}, "
        f"success {assumptions.offer_success_rate:.0%}"), title_fontsize=8)
    fig.tight_layout()
    return figure_png(fig)


def slices_plot(report: EvaluationReport, metric: str = "roc_auc") -> bytes | None:
    slices = report.slices.dropna(subset=[metric])
    if slices.empty:
        return None
    plt = _pyplot()
    labels = [f"{row.segment}={row.value} (n={row.rows:,})" for row in slices.itertuples()]
    fig, ax = plt.subplots(figsize=(7.6, 0.32 * len(labels) + 1.6))
    positions = range(len(labels))[::-1]
    ax.barh(list(positions), slices[metric], color=MODEL_COLOR, alpha=0.85)
    ax.axvline(report.metrics[metric], color="#d9822b", ls="--",
               label=f"all test rows ({report.metrics[metric]:.3f})")
    ax.set_yticks(list(positions), labels, fontsize=8)
    low = max(0.0, float(slices[metric].min()) - 0.05)
    ax.set_xlim(low, min(1.0, float(slices[metric].max()) + 0.03))
    _style(ax, f"{metric} by segment", metric, "")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return figure_png(fig)


def evaluation_plots(report: EvaluationReport, model_name: str = "model") -> dict[str, bytes]:
    """Every evaluation plot as ``{file name: PNG bytes}``."""
    plots = {
        "roc_curve.png": roc_plot(report, model_name),
        "pr_curve.png": pr_plot(report, model_name),
        "calibration.png": calibration_plot(report),
        "confusion_matrix.png": confusion_plot(report),
        "gains_lift.png": gains_lift_plot(report),
        "savings_curve.png": savings_plot(report),
    }
    slices = slices_plot(report)
    if slices is not None:
        plots["slices_auc.png"] = slices
    return plots


# --- SHAP plots -------------------------------------------------------------------------


def _numeric_view(features: pd.DataFrame) -> tuple[Any, dict[str, list[str]]]:
    """Features as floats for shap's colouring; categoricals as codes with their labels."""
    import numpy as np
    import pandas as pd

    columns = {}
    labels = {}
    for name in features.columns:
        series = features[name]
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            columns[name] = series.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            categorical = pd.Categorical(series.astype("object"))
            codes = categorical.codes.astype(np.float64)
            codes[codes < 0] = np.nan
            columns[name] = codes
            labels[name] = [str(c) for c in categorical.categories]
    return pd.DataFrame(columns, index=features.index), labels


def importance_plot(importance: pd.DataFrame, top: int = 15, method: str = "") -> bytes:
    plt = _pyplot()
    shown = importance.head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(7.6, 0.34 * len(shown) + 1.6))
    ax.barh(shown["feature"], shown["mean_abs_shap"], color=MODEL_COLOR, alpha=0.85)
    for y, (value, share) in enumerate(zip(shown["mean_abs_shap"], shown["share"],
                                           strict=True)):
        ax.text(value, y, f" {share:.0%}", va="center", fontsize=8)
    _style(ax, f"Global feature importance (top {len(shown)})",
           "Mean |SHAP value| (log-odds of churn)", "")
    if method:
        ax.annotate(f"method: {method}", xy=(1, 0), xycoords="axes fraction", ha="right",
                    va="bottom", fontsize=7, color="#555555")
    fig.tight_layout()
    return figure_png(fig)


def beeswarm_plot(contributions: Contributions, features: pd.DataFrame, top: int = 15) -> bytes:
    import shap

    plt = _pyplot()
    numeric, _ = _numeric_view(features[contributions.feature_names])
    explanation = shap.Explanation(
        values=contributions.values,
        base_values=contributions.base_values,
        data=numeric.to_numpy(),
        feature_names=contributions.feature_names,
    )
    shap.plots.beeswarm(explanation, max_display=top, show=False, plot_size=(8.4, 6.4))
    fig = plt.gcf()
    ax = fig.axes[0]
    ax.set_title(f"SHAP summary: {len(features):,} sampled customers", fontsize=12)
    ax.set_xlabel("SHAP value (impact on log-odds of churn; > 0 raises risk)", fontsize=10)
    fig.text(0.01, 0.005, "Categorical features are coloured by category code.", fontsize=7,
             color="#555555")
    return figure_png(fig)


def dependence_plot(contributions: Contributions, features: pd.DataFrame, feature: str) -> bytes:
    import shap

    plt = _pyplot()
    numeric, labels = _numeric_view(features[contributions.feature_names])
    explanation = shap.Explanation(
        values=contributions.values,
        base_values=contributions.base_values,
        data=numeric.to_numpy(),
        feature_names=contributions.feature_names,
    )
    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    shap.plots.scatter(explanation[:, feature], ax=ax, show=False, color=MODEL_COLOR,
                       alpha=0.5, dot_size=10, hist=False)
    if feature in labels:
        ax.set_xticks(range(len(labels[feature])), labels[feature], rotation=20, ha="right",
                      fontsize=9)
    ax.axhline(0, color=RANDOM_COLOR, lw=1)
    ax.set_title(f"SHAP dependence: {feature}", fontsize=12)
    ax.set_xlabel(f"{feature} (feature value)", fontsize=10)
    ax.set_ylabel(f"SHAP value for {feature} (log-odds)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_png(fig)


def shap_plots(
    contributions: Contributions,
    features: pd.DataFrame,
    importance: pd.DataFrame,
    dependence_top: int = 3,
) -> dict[str, bytes]:
    """Bar, beeswarm and dependence plots for a sample of explained rows."""
    plots = {
        "shap_importance.png": importance_plot(importance, method=contributions.method),
        "shap_beeswarm.png": beeswarm_plot(contributions, features),
    }
    for feature in importance["feature"].head(dependence_top):
        plots[f"shap_dependence_{_safe_name(feature)}.png"] = dependence_plot(
            contributions, features, feature
        )
    return plots


def _safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)


# --- model card -------------------------------------------------------------------------


@dataclass
class ModelCardInfo:
    """What the card says about the model besides the evaluation numbers."""

    version: str
    algorithm: str
    created_at: str = ""
    training_data_version: str = ""
    code_version: str = ""
    data_window: str = ""
    split: str = ""
    sizes: dict[str, int] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    calibration: str | None = None
    lineage: Sequence[str] = ()
    intended_use: str = (
        "Rank active subscribers by their probability of cancelling in the next calendar "
        "month, so a retention team can decide whom to contact and with what budget. The "
        "score is an input to a human or campaign decision, not a decision on its own."
    )
    out_of_scope: str = (
        "Decisions about individuals with legal or similarly significant effect (pricing, "
        "credit, service refusal); customers or markets unlike the training data; horizons "
        "other than the next month."
    )


def _fmt(value: Any, digits: int = 4) -> str:
    import math

    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render_model_card(
    report: EvaluationReport,
    info: ModelCardInfo,
    importance: pd.DataFrame | None = None,
    shap_method: str | None = None,
    check_results: Mapping[str, tuple[bool, str]] | None = None,
) -> str:
    """The model card in Markdown, from the same numbers as the evaluation asset."""
    metrics = report.metrics
    summary = report.summary()
    lines = [
        f"# Model card: churn model `{info.version}`",
        "",
        "## Model",
        "",
        markdown_table(
            ["Field", "Value"],
            [
                ["Version", f"`{info.version}`"],
                ["Algorithm", info.algorithm],
                ["Created", info.created_at or "n/a"],
                ["Probability calibration", info.calibration or "none"],
                ["Training data version", f"`{info.training_data_version or 'n/a'}`"],
                ["Code version", f"`{info.code_version or 'n/a'}`"],
            ], cell=_fmt),
        "",
        "## Intended use",
        "",
        info.intended_use,
        "",
        f"**Out of scope:** {info.out_of_scope}",
        "",
        "## Data",
        "",
        f"- Window: {info.data_window or 'n/a'}",
        f"- Split: {info.split or 'n/a'}",
    ]
    for name, size in info.sizes.items():
        lines.append(f"- {name}: {size:,} customer-months")
    lines += [
        f"- Test churn rate: {metrics['base_rate']:.1%} ({metrics['positives']:,} of "
        f"{metrics['rows']:,})",
        "- Label: churned = the customer cancels during the month after the snapshot month; "
        "features use only data dated up to the end of the snapshot month.",
        "",
        "## Metrics on the test split",
        "",
    ]
    baseline_names = list(report.baseline_metrics)
    metric_rows = []
    for key, label in (("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC (average precision)"),
                       ("log_loss", "Log loss"), ("brier", "Brier score"),
                       ("ece", "Expected calibration error"), ("accuracy", "Accuracy"),
                       ("precision", "Precision"), ("recall", "Recall"), ("f1", "F1")):
        metric_rows.append([label, metrics[key],
                            *(report.baseline_metrics[n][key] for n in baseline_names)])
    lines.append(markdown_table(["Metric", info.algorithm, *baseline_names], metric_rows, cell=_fmt))
    tn, fp = report.confusion[0]
    fn, tp = report.confusion[1]
    lines += [
        "",
        f"Thresholded metrics use the operating threshold **{report.threshold:.3f}**, "
        f"chosen as: {report.threshold_source}. At it the model flags "
        f"{metrics['flagged_rate']:.1%} of customers: {tp:,} churners caught, {fn:,} missed, "
        f"{fp:,} stayers flagged, {tn:,} stayers left alone.",
        "",
        "## Business view",
        "",
        f"Assumptions: a retained customer is worth {report.assumptions.retained_value:,.0f}, "
        f"an offer costs {report.assumptions.offer_cost:,.0f} and succeeds "
        f"{report.assumptions.offer_success_rate:.0%} of the time.",
        "",
        f"- Expected net savings at the operating threshold: "
        f"{report.savings_at_threshold:,.0f}",
        f"- Best threshold on the test rows: {report.optimal.threshold:.3f}, targeting "
        f"{report.optimal.targeted:,} customers for {report.optimal.savings:,.0f} "
        f"({report.optimal.savings_per_customer:,.2f} per scored customer)",
        f"- Top-decile lift: {report.top_decile_lift:.2f}x (the 10% highest scores churn at "
        f"{report.top_decile_lift:.2f} times the average rate)",
        "",
        "## Performance by segment",
        "",
    ]
    if report.slices.empty:
        lines.append("No segment columns were available.")
    else:
        lines.append(markdown_table(
            ["Segment", "Value", "Rows", "Churn rate", "ROC-AUC", "Recall", "Precision", "ECE"],
            [[r.segment, r.value, int(r.rows), r.base_rate, r.roc_auc, r.recall, r.precision,
              r.ece] for r in report.slices.itertuples()], cell=_fmt))
    gap = summary["largest_slice_gap"]
    if gap["segment"]:
        lines += ["", f"Largest {gap['metric']} gap: **{gap['gap']:.3f}** within "
                      f"`{gap['segment']}` ({gap['best_value']} {gap['best']:.3f} vs "
                      f"{gap['worst_value']} {gap['worst']:.3f})."]
    if importance is not None and not importance.empty:
        lines += ["", "## What drives the score", "",
                  f"Method: {shap_method or 'SHAP'}; values are log-odds contributions."]
        if info.calibration:
            lines.append(
                "The model's probabilities are calibrated on top of the booster; SHAP explains "
                "the booster's margin before calibration (the calibration map is monotone, so "
                "the order of reasons is the same)."
            )
        lines += ["", markdown_table(
            ["Rank", "Feature", "Mean abs SHAP", "Share"],
            [[int(r.rank), r.feature, r.mean_abs_shap, f"{r.share:.1%}"]
             for r in importance.head(10).itertuples()], cell=_fmt)]
    if check_results:
        lines += ["", "## Quality checks", "", markdown_table(
            ["Check", "Result", "Detail"],
            [[name, "pass" if passed else "FAIL", detail]
             for name, (passed, detail) in check_results.items()], cell=_fmt)]
    lines += [
        "",
        "## Limitations",
        "",
        "- Evaluated on one held-out period; performance drifts as prices, products and the "
        "customer mix change (see monitoring.drift and realised performance).",
        "- Thresholded numbers and savings depend on the business assumptions above; they are "
        "expectations, not a forecast of a real campaign (offer effects are assumed uniform).",
        "- SHAP values describe the model, not causes: a feature that raises the score is not "
        "necessarily a lever that lowers churn when changed.",
        "- Small segments have wide uncertainty; slices under the minimum size are excluded "
        "from the gap comparison.",
    ]
    lines += [f"- {note}" for note in report.notes]
    lines += ["", "## Lineage", ""]
    lines += [f"- {item}" for item in info.lineage] or ["- n/a"]
    if info.params:
        lines += ["", "## Parameters", "", markdown_table(
            ["Parameter", "Value"], [[k, v] for k, v in sorted(info.params.items())], cell=_fmt)]
    return "\n".join(lines) + "\n"
