"""LightGBM: leaf-wise gradient boosting with native categorical splits, saved in LightGBM's
own text format, exact TreeSHAP from the booster (``pred_contrib``).

Like the tuned XGBoost it has two ways to use the rows it may see:

- out-of-time splits and large tables: train on the training split with early stopping on
  the validation split, calibrate on the validation split;
- small random splits: the number of rounds comes from a stratified K-fold ``lgb.cv`` over
  train + valid, the final booster is refitted on all of them, and the calibration is
  fitted on cross-fitted out-of-fold predictions (each row predicted by a booster that did
  not see it), which also give the validation metrics. The test split is never touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from churn_assets.training.candidates.base import Candidate, CandidateParams, FitContext
from churn_assets.training.columns import feature_frame
from churn_assets.training.model import (
    CV_FOLDS,
    ChurnModel,
    calibrate,
    choose_calibration,
    cross_validates,
    cross_validation_record,
    stratified_folds,
    train_and_valid,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from churn_assets.training.columns import FeatureSpec
    from churn_assets.training.split import Split

LIGHTGBM = "lightgbm"
MODEL_FILE = "model.txt"


class LightGBMParams(CandidateParams):
    learning_rate: float = Field(default=0.05, description="Shrinkage per round.")
    num_leaves: int = Field(default=15, description="Leaves per tree at most.")
    max_depth: int = Field(default=-1, description="Depth limit; -1 for none (num_leaves bounds trees).")
    min_child_samples: int = Field(default=40, description="Rows per leaf at least.")
    feature_fraction: float = Field(default=0.7, description="Share of features per tree.")
    bagging_fraction: float = Field(default=0.8, description="Share of rows per tree.")
    lambda_l2: float = Field(default=5.0, description="L2 regularisation of leaf values.")
    cat_smooth: float = Field(default=10.0, description="Smoothing of categorical split statistics.")
    max_rounds: int = Field(default=1000, description="Boosting rounds at most.")
    early_stopping_rounds: int = Field(default=50, description="Rounds without AUC gain before stopping.")
    num_threads: int = Field(default=2, description="LightGBM threads (1 below 20k rows).")


def _dataset(frame: pd.DataFrame, spec: FeatureSpec, reference=None):
    import lightgbm as lgb

    return lgb.Dataset(
        feature_frame(frame, spec), label=frame[spec.roles.label_column].to_numpy(),
        categorical_feature=list(spec.roles.categorical) or "auto", reference=reference,
        free_raw_data=False,
    )


def booster_params(settings: LightGBMParams, labels: np.ndarray, seed: int, threads: int) -> dict[str, Any]:
    import numpy as np

    positives = float(np.sum(labels))
    return {
        "objective": "binary",
        "metric": "auc",
        "learning_rate": settings.learning_rate,
        "num_leaves": settings.num_leaves,
        "max_depth": settings.max_depth,
        "min_child_samples": settings.min_child_samples,
        "feature_fraction": settings.feature_fraction,
        "bagging_fraction": settings.bagging_fraction,
        "bagging_freq": 1,
        "lambda_l2": settings.lambda_l2,
        "cat_smooth": settings.cat_smooth,
        "scale_pos_weight": round((len(labels) - positives) / max(positives, 1.0), 6),
        "seed": seed,
        # Same data, seed and settings give the same trees, hence the same model version.
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": threads,
        "verbosity": -1,
    }


def train_lightgbm(split: Split, spec: FeatureSpec, *, seed: int = 42, **settings) -> ChurnModel:
    """A LightGBM churn model (settings: ``LightGBMParams``); see the module docstring."""
    import lightgbm as lgb
    import numpy as np
    from sklearn.metrics import roc_auc_score

    settings = LightGBMParams(**settings)
    pool_rows = len(split.train) + len(split.valid)
    threads = 1 if pool_rows < 20_000 else settings.num_threads
    stop = lgb.early_stopping(settings.early_stopping_rounds, verbose=False)
    if not cross_validates(split):
        train = _dataset(split.train, spec)
        params = booster_params(settings, split.train[spec.roles.label_column].to_numpy(), seed, threads)
        booster = lgb.train(params, train, num_boost_round=settings.max_rounds,
                            valid_sets=[_dataset(split.valid, spec, reference=train)], callbacks=[stop])
        rounds = int(booster.best_iteration or settings.max_rounds)
        recorded = {**params, "num_boost_round": rounds, "fitted_on": "train"}
        model = ChurnModel(CANDIDATE, spec, booster, recorded)
        return calibrate(model, split, seed)

    pool = train_and_valid(split)
    labels = pool[spec.roles.label_column].to_numpy()
    params = booster_params(settings, labels, seed, threads)
    folds = stratified_folds(labels, CV_FOLDS, seed)
    data = _dataset(pool, spec)
    history = lgb.cv(params, data, num_boost_round=settings.max_rounds, folds=folds, callbacks=[stop])
    rounds = len(history["valid auc-mean"])
    out_of_fold = np.empty(len(pool))
    for fit_rows, held_rows in folds:
        fold_booster = lgb.train(params, data.subset(sorted(fit_rows)), num_boost_round=rounds)
        out_of_fold[held_rows] = fold_booster.predict(feature_frame(pool.iloc[held_rows], spec))
    booster = lgb.train(params, data, num_boost_round=rounds)
    recorded = {
        **params, "num_boost_round": rounds, "fitted_on": "train+valid",
        "calibration_fit": f"cross-fitted, {CV_FOLDS} folds over train+valid",
        "cv_auc": float(roc_auc_score(labels, out_of_fold)),
        "cv_auc_std": float(history["valid auc-stdv"][-1]),
    }
    model = ChurnModel(CANDIDATE, spec, booster, recorded)
    model.calibration = choose_calibration(out_of_fold, labels, seed)
    model.held_out_raw = {"train": out_of_fold[: len(split.train)], "valid": out_of_fold[len(split.train):]}
    model.cross_validation = cross_validation_record(out_of_fold, labels, folds)
    return model


def _threads(model: ChurnModel) -> dict[str, int]:
    """Prediction threads when the model was told (``ChurnModel.use_threads``); else the
    booster's own (its training setting). A loaded booster's parameters cannot be reset."""
    return {"num_threads": model.predict_threads} if model.predict_threads else {}


class LightGBMCandidate(Candidate):
    algorithm = LIGHTGBM
    asset = "lightgbm"
    kinds = frozenset({"lightgbm"})
    description = "LightGBM with native categorical splits, early stopping and (on small data) CV-chosen rounds."
    Params = LightGBMParams
    exact_explanations = True
    # LightGBM compares in double precision; its categorical splits read category codes.
    matrix_dtype = "float64"

    def fit(self, split: Split, spec: FeatureSpec, params: LightGBMParams, context: FitContext) -> ChurnModel:
        return train_lightgbm(split, spec, seed=context.seed, **params.model_dump())

    def predict_raw(self, model: ChurnModel, frame: pd.DataFrame) -> np.ndarray:
        return model.estimator.predict(model.features(frame), **_threads(model))

    def predict_matrix(self, model: ChurnModel, matrix: np.ndarray) -> np.ndarray:
        return model.estimator.predict(matrix, **_threads(model))

    def margin_matrix(self, model: ChurnModel, matrix: np.ndarray) -> np.ndarray:
        import numpy as np

        return np.asarray(model.estimator.predict(matrix, raw_score=True, **_threads(model)), dtype=np.float64)

    def save(self, model: ChurnModel, folder: Path) -> str:
        model.estimator.save_model(str(folder / MODEL_FILE))
        return MODEL_FILE

    def load(self, path: Path, manifest: dict, spec: FeatureSpec) -> Any:
        import lightgbm as lgb

        return lgb.Booster(model_file=str(path))

    def margin(self, model: ChurnModel, frame: pd.DataFrame) -> np.ndarray:
        import numpy as np

        return np.asarray(model.estimator.predict(model.features(frame), raw_score=True, **_threads(model)), dtype=np.float64)

    def contributions(self, model: ChurnModel, features: pd.DataFrame, approximate: bool = False):
        return self._contributions(model, features, list(features.columns), approximate)

    @staticmethod
    def _contributions(model: ChurnModel, rows: Any, names: list[str], approximate: bool = False):
        """TreeSHAP (``approximate``: Saabas path attributions) and margin of ``rows``: model
        input as a frame or a matrix of codes."""
        import numpy as np

        from churn_assets.training.explain import Contributions

        margin = np.asarray(model.estimator.predict(rows, raw_score=True, **_threads(model)), dtype=np.float64)
        if approximate:
            values, base = saabas_contributions(model.estimator, rows)
            return Contributions(values=values, base_values=np.full(len(rows), base), feature_names=names,
                                 method="lightgbm-saabas"), margin
        raw = np.asarray(model.estimator.predict(rows, pred_contrib=True, **_threads(model)), dtype=np.float64)
        return Contributions(values=raw[:, :-1], base_values=raw[:, -1], feature_names=names,
                             method="lightgbm-treeshap"), margin

    def matrix_contributions(self, model: ChurnModel, matrix: np.ndarray):
        return self._contributions(model, matrix, list(model.feature_spec.roles.features))

    def explanation_method(self, model: ChurnModel, approximate: bool = False) -> str:
        return "saabas" if approximate else "tree_shap"


def leaf_paths(booster) -> tuple[list[np.ndarray], float]:
    """Per tree, a (leaves, features) table: what each split on the way from the root to the
    leaf adds to the node's expected output (its row-weighted mean leaf value), by the split's
    feature; and the sum of the roots' expected outputs (the base value). A leaf's row sums to
    its value minus its root's expected output, so the attributions add up to the margin."""
    import numpy as np

    dump = booster.dump_model()
    features = len(dump["feature_names"])
    tables, base = [], 0.0

    def expected(node) -> float:
        if "leaf_value" in node:
            return float(node["leaf_value"])
        left, right = expected(node["left_child"]), expected(node["right_child"])
        count_left = node["left_child"].get("internal_count", node["left_child"].get("leaf_count", 0))
        count_right = node["right_child"].get("internal_count", node["right_child"].get("leaf_count", 0))
        total = count_left + count_right
        node["_expected"] = (left * count_left + right * count_right) / total if total else (left + right) / 2
        return node["_expected"]

    for tree in dump["tree_info"]:
        root = tree["tree_structure"]
        table = np.zeros((max(int(tree["num_leaves"]), 1), features))
        base += expected(root)

        def walk(node, path: np.ndarray, value: float) -> None:
            if "leaf_value" in node:
                table[node.get("leaf_index", 0)] = path
                return
            for child in (node["left_child"], node["right_child"]):
                child_value = child.get("_expected", child.get("leaf_value"))
                step = path.copy()
                step[node["split_feature"]] += child_value - value
                walk(child, step, child_value)

        walk(root, np.zeros(features), root.get("_expected", root.get("leaf_value", 0.0)))
        tables.append(table)
    return tables, base


def saabas_contributions(booster, features: pd.DataFrame | np.ndarray) -> tuple[np.ndarray, float]:
    """Saabas path attributions of a LightGBM booster (the analogue of XGBoost's
    ``approx_contribs``): each split on a row's path gets the change in expected output it
    causes. Additive like TreeSHAP, not Shapley values; one leaf lookup per tree instead of
    TreeSHAP's work quadratic in depth, so a 10k-row month costs milliseconds, not seconds."""
    import numpy as np

    tables, base = leaf_paths(booster)
    leaves = np.asarray(booster.predict(features, pred_leaf=True), dtype=np.int64).reshape(len(features), -1)
    values = np.zeros((len(features), features.shape[1]))
    for tree, table in enumerate(tables):
        values += table[leaves[:, tree]]
    return values, base


CANDIDATE = LightGBMCandidate()
