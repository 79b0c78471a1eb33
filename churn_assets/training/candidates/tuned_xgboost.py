"""XGBoost tuned by an Optuna study (``training/tuning.py``): native categoricals, early
stopping, booster saved in XGBoost's own UBJ format, exact TreeSHAP from the booster."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from churn_assets.training.candidates.base import Candidate, CandidateParams, FitContext
from churn_assets.training.columns import FeatureSpec, feature_frame
from churn_assets.training.model import (
    ChurnModel,
    calibrate,
    choose_calibration,
    stratified_folds,
    train_and_valid,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from churn_assets.training.split import Split

XGBOOST = "xgboost"


def xgboost_matrix(frame: pd.DataFrame, spec: FeatureSpec, nthread: int):
    """A labelled DMatrix of ``frame`` with native categoricals."""
    import xgboost as xgb

    return xgb.DMatrix(feature_frame(frame, spec), label=frame[spec.roles.label_column].to_numpy(),
                       enable_categorical=True, nthread=nthread)


def xgboost_matrices(split: Split, spec: FeatureSpec, nthread: int, train_rows: int | None = None, seed: int = 42):
    """DMatrix for train (optionally a seeded random subsample of it) and validation."""
    train = split.train
    if train_rows and len(train) > train_rows:
        train = train.sample(n=train_rows, random_state=seed).sort_index()
    return xgboost_matrix(train, spec, nthread), xgboost_matrix(split.valid, spec, nthread)


def base_xgboost_params(labels: np.ndarray, nthread: int, seed: int) -> dict:
    import numpy as np

    positives = float(np.sum(labels))
    negatives = float(len(labels) - positives)
    return {
        "objective": "binary:logistic",
        "eval_metric": ["logloss", "auc"],
        "tree_method": "hist",
        "max_cat_to_onehot": 4,
        "scale_pos_weight": round(negatives / max(positives, 1.0), 6),
        "nthread": nthread,
        "seed": seed,
        "verbosity": 0,
    }


def train_xgboost(
    split: Split,
    spec: FeatureSpec,
    params: dict,
    *,
    max_rounds: int = 400,
    early_stopping_rounds: int = 30,
    nthread: int = 2,
    seed: int = 42,
    callbacks: list | None = None,
    train_rows: int | None = None,
    calibrate_on_valid: bool = True,
) -> ChurnModel:
    """XGBoost with native categorical support and early stopping on the validation split.

    ``params`` are the tunable hyper-parameters; objective, weighting, threads and seed are
    set here. The stored booster is cut at the best iteration.
    """
    import xgboost as xgb

    dtrain, dvalid = xgboost_matrices(split, spec, nthread, train_rows, seed)
    full_params = {**base_xgboost_params(dtrain.get_label(), nthread, seed), **params}
    booster = xgb.train(
        full_params,
        dtrain,
        num_boost_round=max_rounds,
        evals=[(dvalid, "valid")],
        early_stopping_rounds=early_stopping_rounds,
        callbacks=callbacks or [],
        verbose_eval=False,
    )
    best_iteration = int(booster.best_iteration)
    best_valid_auc = float(booster.best_score)
    booster = booster[: best_iteration + 1]
    recorded = {**full_params, "num_boost_round": best_iteration + 1, "best_valid_auc": best_valid_auc}
    model = ChurnModel(XGBOOST, spec, booster, recorded)
    return calibrate(model, split, seed) if calibrate_on_valid else model


def refit_xgboost_cross_fitted(
    split: Split,
    spec: FeatureSpec,
    params: dict,
    *,
    num_boost_round: int,
    folds: int = 5,
    nthread: int = 1,
    seed: int = 42,
) -> ChurnModel:
    """XGBoost refitted on train + valid for a round count chosen by cross-validation there.

    The validation split is then training data, so calibrating on it would be in-sample.
    Instead each of ``folds`` models, trained on the other folds with the same parameters and
    rounds, predicts its held-out fold; the calibration is chosen and fitted on those
    out-of-fold predictions (cross-fitted calibration), and the validation metrics come from
    them too. The test split is never touched.
    """
    import numpy as np
    import xgboost as xgb
    from sklearn.metrics import roc_auc_score

    pool = train_and_valid(split)
    labels = pool[spec.roles.label_column].to_numpy()
    full_params = {**base_xgboost_params(labels, nthread, seed), **params}
    dpool = xgboost_matrix(pool, spec, nthread)
    out_of_fold = np.empty(len(pool))
    fold_aucs = []
    for fit_rows, held_rows in stratified_folds(labels, folds, seed):
        booster = xgb.train(full_params, dpool.slice(fit_rows), num_boost_round=num_boost_round,
                            verbose_eval=False)
        out_of_fold[held_rows] = booster.predict(dpool.slice(held_rows))
        fold_aucs.append(float(roc_auc_score(labels[held_rows], out_of_fold[held_rows])))
    booster = xgb.train(full_params, dpool, num_boost_round=num_boost_round, verbose_eval=False)
    recorded = {
        **full_params,
        "num_boost_round": num_boost_round,
        "fitted_on": "train+valid",
        "calibration_fit": f"cross-fitted, {folds} folds over train+valid",
        "cv_auc": float(roc_auc_score(labels, out_of_fold)),
        "cv_fold_aucs": [round(v, 6) for v in fold_aucs],
    }
    model = ChurnModel(XGBOOST, spec, booster, recorded)
    model.calibration = choose_calibration(out_of_fold, labels, seed)
    model.held_out_raw = {"train": out_of_fold[: len(split.train)], "valid": out_of_fold[len(split.train):]}
    return model


class TunedXGBoostCandidate(Candidate):
    algorithm = XGBOOST
    asset = "tuned_xgboost"
    kinds = frozenset({"xgboost", "optuna"})
    description = "XGBoost tuned by an Optuna study (seeded TPE, pruning, early stopping)."
    model_file = "model.ubj"
    exact_explanations = True

    def fit(self, split: Split, spec: FeatureSpec, params: CandidateParams, context: FitContext) -> ChurnModel:
        from churn_assets.training.tuning import storage_url_for, tune_xgboost

        storage = storage_url_for(context.study_dir) if context.study_dir else None
        result = tune_xgboost(split, spec, context.tuning, training_data_version=context.training_data_version,
                              storage_url=storage)
        result.model.report = {
            "study_name": result.study_name, "storage_url": result.storage_url,
            "chosen_params": result.chosen_params, "chosen_trial": result.chosen_trial,
            "chosen_value": result.chosen_value, "best_trial": result.best_trial,
            "best_value": result.best_value, "trial_selection": result.selection, "trials": result.trials,
        }
        return result.model

    def metadata(self, model: ChurnModel) -> dict[str, Any]:
        from churn_assets.training.tuning import study_metadata

        return study_metadata(model.report) if model.report else {}

    def predict_raw(self, model: ChurnModel, frame: pd.DataFrame) -> np.ndarray:
        import xgboost as xgb

        matrix = xgb.DMatrix(model.features(frame), enable_categorical=True, nthread=model.params.get("nthread", 2))
        return model.estimator.predict(matrix)

    def save(self, model: ChurnModel, folder: Path) -> str:
        model.estimator.save_model(str(folder / self.model_file))
        return self.model_file

    def load(self, path: Path, manifest: dict, spec: FeatureSpec) -> Any:
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(str(path))
        return booster

    def contributions(self, model: ChurnModel, features: pd.DataFrame, approximate: bool = False):
        from churn_assets.training.explain import booster_margin, xgboost_contributions

        return (xgboost_contributions(model.estimator, features, approximate=approximate),
                booster_margin(model.estimator, features))

    def explanation_method(self, approximate: bool = False) -> str:
        return "saabas" if approximate else "tree_shap"


CANDIDATE = TunedXGBoostCandidate()
