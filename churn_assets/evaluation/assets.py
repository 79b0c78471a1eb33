"""Dagster assets and checks for model evaluation and the SHAP summary.

Graph::

    ml/champion --> ml/evaluation_report   [auc_floor*, beats_baselines, calibration, slice_gap]
               \\-> ml/shap_summary        [shap_additivity*, leakage_smell]

(* = blocking, error severity.) The report and the SHAP summary evaluate the champion by
default, or any registered version named in config; their numbers, plots and model card
go on the materialization and under ``artifacts/reports/<version>/``. The checks read
the JSON files written there (the version named in ``reports/latest.json``), so
``churn check`` evaluates them without re-materializing. Thresholds and business
assumptions come from the ``evaluation_policy`` resource, the margin of
``beats_baselines`` from ``promotion_policy``.
"""

# No `from __future__ import annotations`: Dagster resolves config classes from the
# real annotations of the decorated functions.
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from churn_assets.core.keys import CHAMPION_KEY, EVALUATION_REPORT_KEY, SHAP_SUMMARY_KEY
from churn_assets.core.reports import REPORTS_DIR, report_url
from churn_assets.core.warehouse import ArtifactStore, Warehouse
from churn_assets.evaluation.metrics import EvaluationPolicy
from churn_assets.training.promotion import PromotionPolicy

if TYPE_CHECKING:
    import pandas as pd

    from churn_assets.training.model import ChurnModel

GROUP = "ml"
LATEST_POINTER = "latest.json"
EVALUATION_FILE = "evaluation.json"
SHAP_FILE = "shap_summary.json"


class ModelChoice(dg.Config):
    model_version: str | None = Field(
        default=None, description="Registered version to evaluate; default: the champion."
    )


class ShapConfig(ModelChoice):
    sample_rows: int = Field(default=2000, description="Test rows explained for the plots.")
    dependence_plots: int = Field(default=3, description="Dependence plots for the top features.")
    permutation_rows: int = Field(
        default=200, description="Rows explained by the permutation fallback (non-tree models)."
    )
    background_rows: int = Field(default=20, description="Background rows for the fallback.")
    seed: int = 0


# -- loading ----------------------------------------------------------------------------


def load_evaluated_model(con: Any, artifacts_root: Path, version: str | None) -> "ChurnModel":
    from churn_assets.training.registry import load_champion, load_model

    if version:
        return load_model(version, artifacts_root, con)
    return load_champion(artifacts_root, con)


def _labels(frame: "pd.DataFrame", model: "ChurnModel") -> Any:
    return frame[model.feature_spec.roles.label_column].astype(float).to_numpy()


def _report_dir(artifacts: ArtifactStore, version: str) -> Path:
    return artifacts.root_path / REPORTS_DIR / version


def _update_latest(artifacts: ArtifactStore, **entries: str) -> None:
    from churn_assets.evaluation.report import write_files

    pointer = artifacts.root_path / REPORTS_DIR / LATEST_POINTER
    current = json.loads(pointer.read_text()) if pointer.exists() else {}
    write_files(pointer.parent, {LATEST_POINTER: json.dumps({**current, **entries}, indent=2)})


def _read_latest(artifacts: ArtifactStore, kind: str) -> dict | None:
    pointer = artifacts.root_path / REPORTS_DIR / LATEST_POINTER
    if not pointer.exists():
        return None
    version = json.loads(pointer.read_text()).get(kind)
    file = EVALUATION_FILE if kind == "evaluation" else SHAP_FILE
    path = artifacts.root_path / REPORTS_DIR / str(version) / file
    return json.loads(path.read_text()) if version and path.exists() else None


def _plots_metadata(plots: dict[str, bytes]) -> dict[str, dg.MetadataValue]:
    from churn_assets.evaluation.report import markdown_image

    return {
        f"plot_{name.removesuffix('.png')}": dg.MetadataValue.md(
            markdown_image(png, name.removesuffix(".png").replace("_", " "))
        )
        for name, png in plots.items()
    }


# -- ml/evaluation_report ---------------------------------------------------------------


def evaluate_model(con: Any, artifacts_root: Path, policy: EvaluationPolicy, version: str | None = None):
    """Score the model's recorded test split; threshold from the validation split."""
    from churn_assets.training.train import read_training_set
    from churn_assets.evaluation.metrics import evaluate, optimal_threshold
    from churn_assets.training.registry import load_model, rebuild_split, versions_trained_with

    model = load_evaluated_model(con, artifacts_root, version)
    frame, _ = read_training_set(con)
    split = rebuild_split(model, frame)
    assumptions = policy.assumptions()
    threshold, source = None, None
    if len(split.valid) and 0 < _labels(split.valid, model).sum() < len(split.valid):
        threshold = optimal_threshold(
            _labels(split.valid, model), model.predict_proba(split.valid), assumptions
        ).threshold
        source = "savings-optimal on the validation split"
    baselines = {}
    data_version = model.manifest.get("training_data_version", "")
    # The baselines of the champion's own training run: same data, same training code.
    for version in versions_trained_with(con, data_version, "baseline", model.manifest.get("code_version")):
        if version != model.version:
            baseline = load_model(version, artifacts_root, con)
            baselines[baseline.algorithm] = baseline.predict_proba(split.test)
    report = evaluate(
        _labels(split.test, model), model.predict_proba(split.test), frame=split.test,
        threshold=threshold, threshold_source=source, assumptions=assumptions,
        slice_columns=policy.slice_columns, min_slice_rows=policy.min_slice_rows,
        baseline_scores=baselines,
    )
    return model, split, report


def describe_window(description: Any) -> str:
    """'train 2024-04..2025-09 (18 months); valid 2025-10; test 2025-11' from a split description."""
    parts = description.get("parts") if isinstance(description, dict) else None
    if not parts:
        return "n/a"
    texts = []
    for name, part in parts.items():
        months = [str(m)[:7] for m in part.get("months", []) if m != "..."]
        if not months:
            texts.append(name)
        elif len(months) == 1:
            texts.append(f"{name} {months[0]}")
        else:
            count = f" ({len(part['months'])} months)" if "..." not in part["months"] else ""
            texts.append(f"{name} {months[0]}..{months[-1]}{count}")
    return "; ".join(texts)


def model_card_info(model: "ChurnModel", split: Any, created_at: Any = None) -> Any:
    from churn_assets.evaluation.report import ModelCardInfo

    manifest = model.manifest
    calibration = model.calibration.get("method", "none")
    return ModelCardInfo(
        version=str(model.version),
        algorithm=model.algorithm,
        created_at=str(created_at or manifest.get("created_at", "")),
        training_data_version=str(manifest.get("training_data_version", "")),
        code_version=str(manifest.get("code_version", "")),
        data_window=describe_window(split.description),
        split=split.strategy,
        sizes={name: len(part) for name, part in split.parts().items()},
        params={k: v for k, v in model.params.items() if not isinstance(v, dict | list)},
        calibration=None if calibration == "none" else calibration,
        lineage=["features.training_set", "ml.model_versions", f"artifacts/models/{model.version}"],
    )


@dg.asset(
    key=EVALUATION_REPORT_KEY,
    deps=[CHAMPION_KEY],
    group_name=GROUP,
    kinds={"scikit-learn", "matplotlib"},
    code_version="evaluation-report-v1",
    # `<version>` in backquotes: the UI renders descriptions as Markdown, which drops bare tags.
    description="Test-split metrics, business view, slices, plots and model card of the champion "
                "(or a configured version), under `artifacts/reports/<version>/`.",
)
def evaluation_report(context: dg.AssetExecutionContext, config: ModelChoice,
                      evaluation_policy: EvaluationPolicy, warehouse: Warehouse, artifacts: ArtifactStore) -> dg.MaterializeResult:
    from churn_assets.evaluation.report import evaluation_plots, render_model_card, write_files

    with warehouse.read() as con:
        model, split, report = evaluate_model(con, artifacts.root_path, evaluation_policy, config.model_version)
        created = con.execute("SELECT created_at FROM ml.model_versions WHERE version = ?",
                              [str(model.version)]).fetchall()
    plots = evaluation_plots(report, model.algorithm)
    summary = {"model_version": model.version, "algorithm": model.algorithm, **report.summary()}
    card = render_model_card(report, model_card_info(model, split, created[0][0] if created else None))
    folder = _report_dir(artifacts, str(model.version))
    write_files(folder, {**plots, EVALUATION_FILE: json.dumps(summary, indent=2),
                         "model_card.md": card})
    _update_latest(artifacts, evaluation=str(model.version))
    metrics = report.metrics
    context.log.info(f"{model.version}: test ROC-AUC {metrics['roc_auc']:.4f}")
    return dg.MaterializeResult(metadata={
        "model_version": model.version,
        "algorithm": model.algorithm,
        **{f"test_{k}": float(metrics[k]) for k in (
            "roc_auc", "pr_auc", "log_loss", "brier", "ece", "accuracy", "precision",
            "recall", "f1")},
        "threshold": report.threshold,
        "threshold_source": report.threshold_source,
        # Numbers as numbers, so the UI plots them across materializations.
        **{f"confusion/{name}": dg.MetadataValue.int(int(value)) for name, value in (
            ("true_negatives", report.confusion[0][0]), ("false_positives", report.confusion[0][1]),
            ("false_negatives", report.confusion[1][0]), ("true_positives", report.confusion[1][1]))},
        "expected_savings": report.savings_at_threshold,
        "top_decile_lift": report.top_decile_lift,
        **_slice_gap_metadata(summary["largest_slice_gap"]),
        **{f"baseline/{name}/test_roc_auc": dg.MetadataValue.float(float(values["roc_auc"]))
           for name, values in summary["baselines"].items() if values.get("roc_auc") is not None},
        "model_card": dg.MetadataValue.md(card),
        "report_dir": dg.MetadataValue.path(str(folder)),
        **_report_links(artifacts, folder),
        **_plots_metadata(plots),
    })


def _report_links(artifacts: ArtifactStore, folder) -> dict[str, dg.MetadataValue]:
    links = {"model_card_url": report_url(artifacts.root_path, folder / "model_card.md"),
             "evaluation_url": report_url(artifacts.root_path, folder / EVALUATION_FILE)}
    return {name: dg.MetadataValue.url(url) for name, url in links.items() if url}


def _slice_gap_metadata(gap: dict[str, Any]) -> dict[str, Any]:
    if not gap.get("segment"):
        return {"slice_gap/segment": "no segment with two comparable slices"}
    return {
        "slice_gap/segment": gap["segment"],
        f"slice_gap/{gap['metric']}": dg.MetadataValue.float(float(gap["gap"])),
        "slice_gap/best": f"{gap['best_value']} ({gap['best']:.4f})",
        "slice_gap/worst": f"{gap['worst_value']} ({gap['worst']:.4f})",
    }


def _check_result(outcome: tuple[bool, dict], severity: dg.AssetCheckSeverity
                  ) -> dg.AssetCheckResult:
    passed, metadata = outcome
    return dg.AssetCheckResult(
        passed=passed, severity=severity,
        metadata={k: v for k, v in metadata.items() if v is not None},
        description=metadata.get("description"),
    )


def _no_report(kind: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True, description=f"no {kind} written yet; nothing to check")


@dg.asset_check(asset=EVALUATION_REPORT_KEY, name="auc_floor", blocking=True,
                description="Test ROC-AUC at or above the floor.")
def auc_floor(artifacts: ArtifactStore, evaluation_policy: EvaluationPolicy) -> dg.AssetCheckResult:
    from churn_assets.evaluation.metrics import check_auc_floor

    summary = _read_latest(artifacts, "evaluation")
    if summary is None:
        return _no_report("evaluation report")
    auc = summary["metrics"]["roc_auc"]
    return _check_result(check_auc_floor(float("nan") if auc is None else auc, evaluation_policy.auc_floor),
                         dg.AssetCheckSeverity.ERROR)


@dg.asset_check(asset=EVALUATION_REPORT_KEY, name="beats_baselines",
                description="Test ROC-AUC at least the best baseline's plus the promotion margin (warning: the "
                            "champion is chosen by the selection rule, not on test, so a near-tie here is noise, not a defect).")
def beats_baselines(artifacts: ArtifactStore, promotion_policy: PromotionPolicy) -> dg.AssetCheckResult:
    from churn_assets.evaluation.metrics import check_beats_baselines

    summary = _read_latest(artifacts, "evaluation")
    if summary is None:
        return _no_report("evaluation report")
    baselines = {name: m["roc_auc"] for name, m in summary["baselines"].items()}
    return _check_result(
        check_beats_baselines(summary["metrics"]["roc_auc"] or float("nan"), baselines,
                              promotion_policy.margin),
        dg.AssetCheckSeverity.WARN,
    )


@dg.asset_check(asset=EVALUATION_REPORT_KEY, name="calibration",
                description="Expected calibration error within the bound (warning).")
def calibration(artifacts: ArtifactStore, evaluation_policy: EvaluationPolicy) -> dg.AssetCheckResult:
    from churn_assets.evaluation.metrics import check_calibration

    summary = _read_latest(artifacts, "evaluation")
    if summary is None:
        return _no_report("evaluation report")
    return _check_result(check_calibration(summary["metrics"]["ece"], evaluation_policy.max_ece),
                         dg.AssetCheckSeverity.WARN)


@dg.asset_check(asset=EVALUATION_REPORT_KEY, name="slice_gap",
                description="Largest ROC-AUC gap between slices of a segment (warning).")
def slice_gap(artifacts: ArtifactStore, evaluation_policy: EvaluationPolicy) -> dg.AssetCheckResult:
    from churn_assets.evaluation.metrics import SliceGap, check_slice_gap

    summary = _read_latest(artifacts, "evaluation")
    if summary is None:
        return _no_report("evaluation report")
    gap = summary["largest_slice_gap"]
    return _check_result(check_slice_gap(SliceGap(**gap), evaluation_policy.max_slice_gap),
                         dg.AssetCheckSeverity.WARN)


# -- ml/shap_summary --------------------------------------------------------------------


@dg.asset(
    key=SHAP_SUMMARY_KEY,
    deps=[CHAMPION_KEY],
    group_name=GROUP,
    kinds={"shap", "xgboost"},
    code_version="shap-summary-v1",
    description="Global SHAP importance, beeswarm and dependence plots of the champion on a "
                "sample of its test split.",
)
def shap_summary(context: dg.AssetExecutionContext, config: ShapConfig, warehouse: Warehouse,
                 artifacts: ArtifactStore) -> dg.MaterializeResult:
    from churn_assets.training.train import read_training_set
    from churn_assets.training.explain import check_additivity, explain, global_importance
    from churn_assets.training.registry import rebuild_split
    from churn_assets.evaluation.report import shap_plots, write_files

    with warehouse.read() as con:
        model = load_evaluated_model(con, artifacts.root_path, config.model_version)
        frame, _ = read_training_set(con)
    split = rebuild_split(model, frame)
    exact = model.candidate.explains_exactly(model)
    rows = config.sample_rows if exact else config.permutation_rows
    sample = split.test.sample(n=min(rows, len(split.test)), random_state=config.seed)
    background = None if exact else split.train.sample(
        n=min(config.background_rows, len(split.train)), random_state=config.seed)
    contributions, margin = explain(model, sample, background=background, seed=config.seed)
    passed, additivity = check_additivity(contributions, margin)
    importance = global_importance(contributions)
    features = sample[contributions.feature_names]
    plots = shap_plots(contributions, features, importance, config.dependence_plots)
    summary = {
        "model_version": model.version,
        "method": contributions.method,
        "explained_output": "model margin (log-odds) before calibration" if exact
        else "logit of predict_proba",
        "rows": len(sample),
        "base_value": contributions.base_value,
        "additivity": additivity,
        "importance": importance.to_dict(orient="records"),
    }
    folder = _report_dir(artifacts, str(model.version))
    write_files(folder, {**plots, SHAP_FILE: json.dumps(summary, indent=2, default=float),
                         "shap_importance.csv": importance.to_csv(index=False)})
    _update_latest(artifacts, shap=str(model.version))
    top = importance.head(10)
    return dg.MaterializeResult(metadata={
        "model_version": model.version,
        "method": contributions.method,
        "rows_explained": len(sample),
        "base_value": contributions.base_value,
        "additivity_max_error": additivity["max_abs_error"],
        "top_features": dg.MetadataValue.md("\n".join(
            ["| rank | feature | mean abs SHAP | share |", "|---:|---|---:|---:|"]
            + [f"| {r.rank} | {r.feature} | {r.mean_abs_shap:.4f} | {r.share:.1%} |"
               for r in top.itertuples()])),
        "report_dir": dg.MetadataValue.path(str(folder)),
        **_plots_metadata(plots),
    })


@dg.asset_check(asset=SHAP_SUMMARY_KEY, name="shap_additivity", blocking=True,
                description="Base value + SHAP contributions equal the model margin on every "
                            "explained row (1e-4).")
def shap_additivity(artifacts: ArtifactStore) -> dg.AssetCheckResult:
    summary = _read_latest(artifacts, "shap")
    if summary is None:
        return _no_report("SHAP summary")
    additivity = summary["additivity"]
    passed = additivity["rows_failing"] == 0
    return _check_result((passed, additivity), dg.AssetCheckSeverity.ERROR)


@dg.asset_check(asset=SHAP_SUMMARY_KEY, name="leakage_smell",
                description="No single feature dominates |SHAP| and test AUC is plausible "
                            "(warning naming the feature).")
def leakage_smell(artifacts: ArtifactStore, evaluation_policy: EvaluationPolicy) -> dg.AssetCheckResult:
    import pandas as pd

    from churn_assets.evaluation.metrics import check_leakage_smell

    shap_summary_data = _read_latest(artifacts, "shap")
    if shap_summary_data is None:
        return _no_report("SHAP summary")
    evaluation = _read_latest(artifacts, "evaluation")
    auc = float("nan")
    if evaluation and evaluation.get("model_version") == shap_summary_data["model_version"]:
        auc = evaluation["metrics"]["roc_auc"] or float("nan")
    importance = pd.DataFrame(shap_summary_data["importance"])
    return _check_result(
        check_leakage_smell(importance, auc, max_feature_share=evaluation_policy.max_feature_share,
                            auc_ceiling=evaluation_policy.auc_ceiling),
        dg.AssetCheckSeverity.WARN,
    )


evaluation_assets = [evaluation_report, shap_summary]
evaluation_asset_checks = [auc_floor, beats_baselines, calibration, slice_gap, shap_additivity,
                           leakage_smell]
