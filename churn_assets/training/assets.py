"""Dagster assets of the ml group: candidates, the registry table and the champion pointer.

Graph::

    features/training_set --> ml/baseline_models --\\
                          \\-> ml/tuned_xgboost -----+--> ml/model_versions --[promotion_gate]--> ml/champion

``ml/baseline_models`` and ``ml/tuned_xgboost`` train on the training set and write model
folders under ``$CHURN_HOME/artifacts/models/`` (not the warehouse, so they run in parallel
with no writer lock). ``ml/model_versions`` registers the latest candidates in one
transaction. The blocking ``promotion_gate`` check on it compares the latest challenger with
the champion (or, with none, the best baseline) on the challenger's test rows;
``ml/champion`` runs only when it passes, checks the same decision again and moves the
pointer. Everything heavy is imported inside the functions.
"""

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from churn_assets.core.keys import (
    BASELINE_MODELS_KEY,
    CHAMPION_KEY,
    MODEL_VERSIONS_KEY,
    TRAINING_SET_KEY,
    TUNED_XGBOOST_KEY,
)
from churn_assets.training.tuning import BEST, ONE_STANDARD_ERROR, TuningSettings
from churn_assets.core.warehouse import WAREHOUSE_POOL, ArtifactStore, Warehouse

if TYPE_CHECKING:
    import pandas as pd

    from churn_assets.training.candidates import ChurnModel
    from churn_assets.training.columns import RoleSettings
    from churn_assets.training.promotion import GateDecision
    from churn_assets.training.split import Split, SplitSettings

TRAINING_SET_TABLE = "features.training_set"
PROMOTION_GATE = "promotion_gate"
GROUP = "ml"
CANDIDATES_DIR = "candidates"


# -- configuration --------------------------------------------------------------------------


class RolesConfig(dg.Config):
    """Column roles of the training table; feature columns are inferred from its schema."""

    id_columns: list[str] = Field(default=["customer_id"], description="Columns identifying an entity.")
    time_column: str | None = Field(default="snapshot_month", description="Month column; None for no time.")
    label_column: str = Field(default="churned", description="0/1 label column.")
    exclude_columns: list[str] = Field(default=[], description="Columns that are not features.")
    categorical_columns: list[str] = Field(
        default=[], description="Force these columns categorical (e.g. low-cardinality integer codes)."
    )
    numeric_columns: list[str] = Field(default=[], description="Force these columns numeric.")
    roles_file: str | None = Field(
        default=None, description="YAML file with the same keys; values set here win over it."
    )

    def settings(self) -> "RoleSettings":
        from churn_assets.training.columns import RoleSettings

        explicit = {
            name: getattr(self, name) for name in self.model_fields_set if name != "roles_file"
        }
        if self.roles_file:
            return RoleSettings.from_yaml(self.roles_file, overrides=explicit)
        values = {name: getattr(self, name) for name in RoleSettings.__dataclass_fields__}
        return RoleSettings.from_mapping(values)


class SplitConfig(dg.Config):
    seed: int = Field(default=42, description="Seed of the random split and of every model.")
    min_time_split_months: int = Field(default=3, description="Fewer labelled months -> random split.")
    train_months: int | None = Field(default=None, description="Train on only the latest N older months.")
    valid_fraction: float = Field(default=0.15, description="Random split: validation share.")
    test_fraction: float = Field(default=0.15, description="Random split: test share.")

    def settings(self) -> "SplitSettings":
        from churn_assets.training.split import SplitSettings

        return SplitSettings(
            seed=self.seed, min_time_split_months=self.min_time_split_months,
            train_months=self.train_months, valid_fraction=self.valid_fraction,
            test_fraction=self.test_fraction,
        )


class BaselineConfig(dg.Config):
    roles: RolesConfig = Field(default_factory=RolesConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    logistic_c: float = Field(default=1.0, description="Inverse L2 strength of the logistic regression.")
    logistic_max_iter: int = 500
    forest_trees: int = 60
    forest_max_depth: int | None = 10
    forest_min_samples_leaf: int = 5
    forest_max_rows_per_tree: int = Field(default=50_000, description="Bootstrap rows per tree at most.")
    n_jobs: int = 2


class TunedXGBoostConfig(dg.Config):
    roles: RolesConfig = Field(default_factory=RolesConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    # Defaults come from TuningSettings (one place); only the time budget is the asset's own,
    # shorter so the demo stays within its few minutes.
    n_trials: int = Field(default=TuningSettings.n_trials, description="Trial budget of the Optuna study.")
    timeout_s: float | None = Field(default=25.0, description="Time budget of one tuning run, seconds.")
    max_rounds: int = TuningSettings.max_rounds
    early_stopping_rounds: int = TuningSettings.early_stopping_rounds
    tuning_rows: int | None = Field(default=TuningSettings.tuning_rows,
                                    description="Training rows each trial sees at most.")
    nthread: int = TuningSettings.nthread
    cv_folds: int = Field(default=TuningSettings.cv_folds,
                          description="Folds per trial when a small random split is tuned by CV.")
    selection: str = Field(
        default=TuningSettings.selection,
        description=f"Trial to refit after a CV study: {ONE_STANDARD_ERROR!r} (the best of the shallowest "
                    f"trials within one SE of the best) or {BEST!r}.",
    )
    persist_study: bool = Field(default=True, description="Keep the study in $CHURN_HOME/artifacts/optuna.")

    def settings(self) -> TuningSettings:
        return TuningSettings(
            n_trials=self.n_trials, timeout_s=self.timeout_s, max_rounds=self.max_rounds,
            early_stopping_rounds=self.early_stopping_rounds, tuning_rows=self.tuning_rows,
            nthread=self.nthread, seed=self.split.seed, cv_folds=self.cv_folds, selection=self.selection,
        )


class PromotionPolicy(dg.ConfigurableResource):
    """When a challenger may replace the champion. One resource, read by both the blocking
    ``promotion_gate`` check and the ``ml/champion`` asset that re-decides before it moves
    the pointer, so the two can never be configured apart (run config:
    ``resources: {promotion_policy: {config: {margin: ...}}}``)."""

    margin: float = Field(default=0.0, description="AUC the challenger must gain over the reference.")
    bootstrap_samples: int = 1000
    confidence: float = 0.95
    require_significance: bool = Field(
        default=False, description="Also require the CI of the AUC difference to exclude 0."
    )
    seed: int = 42

    def settings(self):
        from churn_assets.training.promotion import GateSettings

        return GateSettings(
            margin=self.margin, bootstrap_samples=self.bootstrap_samples,
            confidence=self.confidence, require_significance=self.require_significance, seed=self.seed,
        )


# -- pure steps the assets wrap ----------------------------------------------------------------


def read_training_set(con, table: str = TRAINING_SET_TABLE) -> tuple["pd.DataFrame", dict[str, str]]:
    """The training table and its DuckDB column types."""
    schema, name = table.split(".")
    types = {
        row[0]: row[1]
        for row in con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            [schema, name],
        ).fetchall()
    }
    if not types:
        raise dg.Failure(f"{table} does not exist: materialize the features group first")
    return con.execute(f"SELECT * FROM {table}").df(), types


def prepare(frame: "pd.DataFrame", column_types: dict[str, str], roles: "RoleSettings", split: "SplitSettings"):
    from churn_assets.training.columns import build_feature_spec, infer_roles
    from churn_assets.training.registry import training_data_version
    from churn_assets.training.split import split_training_set

    resolved = infer_roles(column_types, roles)
    data_version = training_data_version(frame, resolved.key_columns)
    data_split = split_training_set(frame, resolved, split)
    spec = build_feature_spec(data_split.train, resolved)
    return spec, data_split, data_version


def save_candidate(model: "ChurnModel", data_split: "Split", artifacts_root: Path, data_version: str,
                   role: str, extra: dict | None = None) -> dict:
    from churn_assets.training.candidates import evaluate
    from churn_assets.training.registry import code_version, save_model, version_record

    metrics = evaluate(model, data_split)
    saved = save_model(model, artifacts_root, split=data_split, metrics=metrics,
                       training_data_version=data_version, code_version=code_version(), extra=extra)
    return version_record(saved, model, role, data_split, metrics)


def train_baselines(frame: "pd.DataFrame", column_types: dict[str, str], config: BaselineConfig,
                    artifacts_root: Path) -> list[dict]:
    """Train, save and describe the logistic regression and random forest baselines."""
    from churn_assets.training.candidates import train_logistic_regression, train_random_forest

    spec, data_split, data_version = prepare(frame, column_types, config.roles.settings(), config.split.settings())
    seed = config.split.seed
    models = [
        train_logistic_regression(data_split, spec, C=config.logistic_c, max_iter=config.logistic_max_iter, seed=seed),
        train_random_forest(
            data_split, spec, n_estimators=config.forest_trees, max_depth=config.forest_max_depth,
            min_samples_leaf=config.forest_min_samples_leaf,
            max_rows_per_tree=config.forest_max_rows_per_tree, n_jobs=config.n_jobs, seed=seed,
        ),
    ]
    return [save_candidate(m, data_split, artifacts_root, data_version, "baseline") for m in models]


def train_tuned_xgboost(frame: "pd.DataFrame", column_types: dict[str, str], config: TunedXGBoostConfig,
                        artifacts_root: Path) -> tuple[dict, Any]:
    """Tune, refit, save and describe the XGBoost challenger; also returns the TuningResult."""
    from churn_assets.training.tuning import storage_url_for, tune_xgboost

    spec, data_split, data_version = prepare(frame, column_types, config.roles.settings(), config.split.settings())
    storage = storage_url_for(Path(artifacts_root) / "optuna") if config.persist_study else None
    result = tune_xgboost(data_split, spec, config.settings(), training_data_version=data_version,
                          storage_url=storage)
    extra = {"study_name": result.study_name, "chosen_params": result.chosen_params,
             "chosen_trial": result.chosen_trial, "chosen_value": result.chosen_value,
             "best_trial": result.best_trial, "best_value": result.best_value,
             "trial_selection": result.selection, "trials": result.trials}
    return save_candidate(result.model, data_split, artifacts_root, data_version, "challenger", extra), result


def _write_pointer(artifacts_root: Path, asset_name: str, records: list[dict]) -> Path:
    from churn_assets.training.registry import models_root

    folder = models_root(artifacts_root) / CANDIDATES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{asset_name}.json"
    staging = target.with_suffix(f".{os.getpid()}.tmp")
    staging.write_text(json.dumps(records, indent=2, sort_keys=True, default=str))
    os.replace(staging, target)
    return target


def read_pointer(artifacts_root: Path, asset_name: str) -> list[dict]:
    from churn_assets.training.registry import models_root

    target = models_root(artifacts_root) / CANDIDATES_DIR / f"{asset_name}.json"
    if not target.exists():
        raise dg.Failure(f"No candidates from ml/{asset_name} yet ({target} missing): materialize it first")
    return json.loads(target.read_text())


def gate_decision(con, artifacts_root: Path, settings) -> tuple["GateDecision", dict]:
    """Evaluate the promotion gate for the latest challenger against the warehouse's state."""
    from churn_assets.training.columns import RolesError
    from churn_assets.training.promotion import evaluate_gate
    from churn_assets.training.registry import (
        champion_version, latest_version, load_model_folder, models_root, read_artifact,
        rebuild_split, registered_manifest_sha, training_data_version, versions_trained_with,
    )

    def load(version: str):
        return load_model_folder(models_root(artifacts_root) / version, version,
                                 registered_manifest_sha(con, version))

    challenger_version = latest_version(con, "challenger")
    if challenger_version is None:
        raise dg.Failure("No challenger in ml.model_versions: materialize ml/tuned_xgboost and ml/model_versions")
    challenger = load(challenger_version)
    frame, _ = read_training_set(con)
    test = rebuild_split(challenger, frame).test
    current_data = training_data_version(frame, challenger.feature_spec.roles.key_columns)
    context = {
        "training_data_matches_challenger": current_data == challenger.manifest["training_data_version"],
        "challenger_recorded_test_auc": read_artifact(artifacts_root, challenger_version, "metrics.json")["test_auc"],
    }
    champion_name = champion_version(con)
    champion = None
    if champion_name:
        champion = load(champion_name)
        try:
            champion.predict_proba(test.head(1))
        except RolesError as error:
            # A champion that cannot read today's columns cannot be compared; the best
            # baseline trained on the same data stands in for it.
            context["champion_unusable"] = f"{champion_name}: {error}"
            champion = None
    baselines = [load(v) for v in versions_trained_with(con, challenger.manifest["training_data_version"], "baseline")]
    return evaluate_gate(challenger, test, champion=champion, baselines=baselines, settings=settings), context


# -- metadata helpers -------------------------------------------------------------------------


def _markdown_table(rows: list[dict], columns: list[str]) -> str:
    def cell(value):
        if isinstance(value, float):
            return f"{value:.4f}"
        if isinstance(value, dict):
            return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items())
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _candidate_metadata(record: dict) -> dict[str, Any]:
    prefix = record["algorithm"]
    return {
        f"{prefix}/version": record["version"],
        f"{prefix}/test_auc": dg.MetadataValue.float(record["test_auc"]),
        f"{prefix}/test_logloss": dg.MetadataValue.float(record["test_logloss"]),
        f"{prefix}/valid_auc": dg.MetadataValue.float(record["valid_auc"]),
        f"{prefix}/calibration": record["calibration"],
    }


def _history_plot(trials: list[dict]) -> str | None:
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in trials if t["state"] == "COMPLETE" and t["value"] is not None]
    if not done:
        return None
    figure, axis = plt.subplots(figsize=(6, 3.2))
    numbers = [t["number"] for t in done]
    values = [t["value"] for t in done]
    best = [max(values[: i + 1]) for i in range(len(values))]
    axis.scatter(numbers, values, s=14, label="completed trial")
    pruned = [t["number"] for t in trials if t["state"] == "PRUNED"]
    if pruned:
        axis.scatter(pruned, [min(values)] * len(pruned), marker="x", color="grey", label="pruned")
    axis.step(numbers, best, where="post", color="C1", label="best so far")
    axis.set_xlabel("trial")
    axis.set_ylabel("validation ROC-AUC")
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return f"![optimisation history](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()})"


# -- assets ---------------------------------------------------------------------------------------


@dg.asset(
    key=BASELINE_MODELS_KEY,
    deps=[TRAINING_SET_KEY],
    group_name=GROUP,
    kinds={"scikit-learn"},
    description="Logistic regression and random forest baselines trained on features.training_set.",
)
def baseline_models(context: dg.AssetExecutionContext, config: BaselineConfig,
                    warehouse: Warehouse, artifacts: ArtifactStore) -> dg.MaterializeResult:
    with warehouse.read() as con:
        frame, types = read_training_set(con)
    records = train_baselines(frame, types, config, artifacts.root_path)
    _write_pointer(artifacts.root_path, "baseline_models", records)
    metadata: dict[str, Any] = {}
    for record in records:
        metadata.update(_candidate_metadata(record))
    metadata["split"] = dg.MetadataValue.json(json.loads(records[0]["split_description"]))
    metadata["training_data_version"] = records[0]["training_data_version"]
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    key=TUNED_XGBOOST_KEY,
    deps=[TRAINING_SET_KEY],
    group_name=GROUP,
    kinds={"xgboost", "optuna"},
    description="XGBoost tuned by an Optuna study (seeded TPE, pruning, early stopping): the challenger.",
)
def tuned_xgboost(context: dg.AssetExecutionContext, config: TunedXGBoostConfig,
                  warehouse: Warehouse, artifacts: ArtifactStore) -> dg.MaterializeResult:
    with warehouse.read() as con:
        frame, types = read_training_set(con)
    record, result = train_tuned_xgboost(frame, types, config, artifacts.root_path)
    _write_pointer(artifacts.root_path, "tuned_xgboost", [record])
    trial_columns = ["number", "state", "value", "last_round", "duration_s", "params"]
    metadata: dict[str, Any] = {
        **_candidate_metadata(record),
        "chosen_params": dg.MetadataValue.json(result.chosen_params),
        "chosen_trial": dg.MetadataValue.int(result.chosen_trial),
        "chosen_trial_auc": dg.MetadataValue.float(result.chosen_value),
        "best_trial_auc_in_study": dg.MetadataValue.float(result.best_value),
        "trial_selection": dg.MetadataValue.text(
            f"{result.selection}: trial {result.chosen_trial} refitted (study best: trial {result.best_trial})"),
        "trials": dg.MetadataValue.json(result.counts),
        "tuning_history": dg.MetadataValue.md(_markdown_table(result.trials, trial_columns)),
        "study_name": result.study_name,
        "split": dg.MetadataValue.json(json.loads(record["split_description"])),
        "training_data_version": record["training_data_version"],
    }
    if result.storage_url:
        metadata["optuna_dashboard"] = dg.MetadataValue.text(f"optuna-dashboard {result.storage_url}")
    plot = _history_plot(result.trials)
    if plot:
        metadata["optimisation_history"] = dg.MetadataValue.md(plot)
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    key=MODEL_VERSIONS_KEY,
    deps=[BASELINE_MODELS_KEY, TUNED_XGBOOST_KEY],
    group_name=GROUP,
    kinds={"duckdb"},
    pool=WAREHOUSE_POOL,
    description="ml.model_versions: one row per trained model with its metrics, split, params and hashes.",
)
def model_versions(context: dg.AssetExecutionContext, warehouse: Warehouse,
                   artifacts: ArtifactStore) -> dg.MaterializeResult:
    from churn_assets.core.metadata import table_metadata
    from churn_assets.training.registry import VERSIONS_TABLE, models_root, register_versions, verify_model_folder

    records = read_pointer(artifacts.root_path, "baseline_models") + read_pointer(artifacts.root_path, "tuned_xgboost")
    for record in records:
        verify_model_folder(models_root(artifacts.root_path) / record["version"], record["version"],
                            record["manifest_sha256"])
    with warehouse.write() as con:
        register_versions(con, records)
        total = con.execute(f"SELECT count(*) FROM {VERSIONS_TABLE}").fetchone()[0]
        rows = con.execute(
            f"SELECT version, algorithm, role, test_auc, test_logloss, is_champion, last_trained_at "
            f"FROM {VERSIONS_TABLE} ORDER BY last_trained_at DESC, version LIMIT 20"
        ).df().to_dict("records")
    columns = ["version", "algorithm", "role", "test_auc", "test_logloss", "is_champion", "last_trained_at"]
    return dg.MaterializeResult(metadata={
        **table_metadata(row_count=total, table_name=VERSIONS_TABLE),
        "registered_now": dg.MetadataValue.json([r["version"] for r in records]),
        "latest_versions": dg.MetadataValue.md(_markdown_table(rows, columns)),
    })


def _gate_metadata(decision: "GateDecision", context: dict) -> dict[str, Any]:
    values = decision.to_dict()
    metadata: dict[str, Any] = {"reason": values.pop("reason")}
    for name, value in values.items():
        if isinstance(value, float):
            metadata[name] = dg.MetadataValue.float(value)
        elif value is not None:
            metadata[name] = value
    metadata["context"] = dg.MetadataValue.json(context)
    return metadata


@dg.asset_check(asset=MODEL_VERSIONS_KEY, name=PROMOTION_GATE, blocking=True,
                description="The latest challenger beats the champion (or the best baseline) on the same "
                            "test rows by the margin; reports a bootstrap CI of the AUC difference.")
def promotion_gate(promotion_policy: PromotionPolicy, warehouse: Warehouse,
                   artifacts: ArtifactStore) -> dg.AssetCheckResult:
    with warehouse.read() as con:
        decision, context = gate_decision(con, artifacts.root_path, promotion_policy.settings())
    return dg.AssetCheckResult(passed=decision.passed, metadata=_gate_metadata(decision, context))


@dg.asset(
    key=CHAMPION_KEY,
    deps=[MODEL_VERSIONS_KEY],
    group_name=GROUP,
    kinds={"duckdb"},
    pool=WAREHOUSE_POOL,
    description="ml.champion: history of promotions; the current champion is flagged in ml.model_versions.",
)
def champion(context: dg.AssetExecutionContext, promotion_policy: PromotionPolicy, warehouse: Warehouse,
             artifacts: ArtifactStore) -> dg.MaterializeResult:
    from churn_assets.core.metadata import table_metadata
    from churn_assets.training.registry import CHAMPION_TABLE, promote

    with warehouse.write() as con:
        # Decided inside the write transaction so nothing can slip in between gate and pointer.
        decision, gate_context = gate_decision(con, artifacts.root_path, promotion_policy.settings())
        if not decision.passed:
            raise dg.Failure(
                f"Promotion refused: {decision.reason}", metadata=_gate_metadata(decision, gate_context)
            )
        changed = decision.reference_kind != "self"
        if changed:
            promote(con, decision.challenger_version, decision.to_dict())
        promotions = con.execute(f"SELECT count(*) FROM {CHAMPION_TABLE}").fetchone()[0]
    return dg.MaterializeResult(metadata={
        **table_metadata(row_count=promotions, table_name=CHAMPION_TABLE),
        "champion": decision.challenger_version,
        "changed": changed,
        **_gate_metadata(decision, gate_context),
    })


ml_assets = [baseline_models, tuned_xgboost, model_versions, champion]
ml_asset_checks = [promotion_gate]
