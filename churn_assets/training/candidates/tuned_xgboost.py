"""XGBoost tuned by an Optuna study: native categoricals, early stopping, booster saved in
XGBoost's own UBJ format, exact TreeSHAP from the booster.

The study's settings, search space, trial selection and its metadata live in
``training/tuning.py`` (see its docstring for the two ways a trial is scored); this module
fits boosters and runs the study with them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churn_assets.training.candidates.base import Candidate, CandidateParams, FitContext
from churn_assets.training.columns import FeatureSpec, feature_frame
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
from churn_assets.training.tuning import (
    BEST,
    CROSS_VALIDATION,
    TuningResult,
    TuningSettings,
    trial_rows,
    params_of,
    search_space,
    select_trial,
    storage_url_for,
    study_metadata,
    study_name_for,
    threads_for,
    tuning_strategy,
)

if TYPE_CHECKING:
    import numpy as np
    import optuna
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
    dtrain, dvalid = xgboost_matrices(split, spec, nthread, train_rows, seed)
    booster, recorded = fit_booster(dtrain, dvalid, params, max_rounds=max_rounds,
                                    early_stopping_rounds=early_stopping_rounds, nthread=nthread, seed=seed,
                                    callbacks=callbacks)
    model = ChurnModel(CANDIDATE, spec, booster, recorded)
    return calibrate(model, split, seed) if calibrate_on_valid else model


def fit_booster(dtrain, dvalid, params: dict, *, max_rounds: int, early_stopping_rounds: int, nthread: int,
                seed: int, callbacks: list | None = None, eval_metric: list[str] | None = None):
    """One early-stopped booster on ready matrices, cut at its best iteration, and the
    parameters to record. ``eval_metric`` replaces the recorded metrics for this fit only
    (a tuning trial needs just the AUC it is judged and stopped by)."""
    import xgboost as xgb

    full_params = {**base_xgboost_params(dtrain.get_label(), nthread, seed), **params}
    booster = xgb.train(
        {**full_params, **({"eval_metric": eval_metric} if eval_metric else {})},
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
    return booster, {**full_params, "num_boost_round": best_iteration + 1, "best_valid_auc": best_valid_auc}


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
    fold_pairs = stratified_folds(labels, folds, seed)
    for fit_rows, held_rows in fold_pairs:
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
    model = ChurnModel(CANDIDATE, spec, booster, recorded)
    model.calibration = choose_calibration(out_of_fold, labels, seed)
    model.held_out_raw = {"train": out_of_fold[: len(split.train)], "valid": out_of_fold[len(split.train):]}
    model.cross_validation = cross_validation_record(out_of_fold, labels, fold_pairs)
    return model



# -- the Optuna study (settings, search space and selection in training/tuning.py) --------


def tune_xgboost(
    split: Split,
    spec: FeatureSpec,
    settings: TuningSettings,
    *,
    training_data_version: str,
    storage_url: str | None = None,
) -> TuningResult:
    """Run (or resume) the study, then refit the chosen trial (see the module docstring).

    ``storage_url=None`` keeps the study in memory (tests, benchmarks).
    """
    import optuna
    from optuna.trial import TrialState
    from optuna_integration import XGBoostPruningCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    strategy = tuning_strategy(split, settings)
    nthread = threads_for(split, settings)
    study_name = study_name_for(training_data_version, settings)
    def new_study(**storage):
        return optuna.create_study(
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=settings.seed),
            # Keeps trials in the best ``pruner_percentile`` percent at a round, i.e. prunes only
            # the bottom quarter by default: near the optimum AUCs differ by less than the noise,
            # and a median cut mostly killed slow-learning-rate trials that would have finished
            # level with the rest.
            pruner=optuna.pruners.PercentilePruner(
                settings.pruner_percentile,
                n_startup_trials=settings.pruner_startup_trials,
                n_warmup_steps=settings.pruner_warmup_rounds,
            ),
            **storage,
        )

    study = new_study(study_name=study_name, storage=storage_url, load_if_exists=True)
    # A trial still RUNNING in a stored study belongs to a run that was killed (runs of one
    # study do not overlap: the training data version is in its name): it will never finish.
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(stale.number, state=TrialState.FAIL)
    copy_back = []
    if storage_url is not None:
        # Trials run in an in-memory copy of the stored study, and each finished trial is copied
        # back: with the study in SQLite, every boosting round's report and pruning decision was
        # a transaction (16 ms and more a round, about half of the demo's tuning time). The copy
        # holds the same trials in the same order, so sampling and pruning decide the same.
        stored, study = study, new_study()
        study.add_trials(stored.get_trials(deepcopy=False))
        copy_back = [lambda _, trial: stored.add_trial(trial)]
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    remaining = settings.n_trials - len(finished)

    if strategy == CROSS_VALIDATION:
        objective = _cross_validation_objective(split, spec, settings, nthread, XGBoostPruningCallback)
    else:
        objective = _holdout_objective(split, spec, settings, nthread, XGBoostPruningCallback)
    if remaining > 0:
        study.optimize(objective, n_trials=remaining, timeout=settings.timeout_s, gc_after_trial=False,
                       callbacks=copy_back)
    finished_now = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    completed = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if not completed:
        raise RuntimeError(
            f"Optuna study {study_name} finished no trial within {settings.timeout_s}s; "
            "raise timeout_s or lower max_rounds"
        )
    chosen = select_trial(completed, strategy, settings)
    if strategy == CROSS_VALIDATION or cross_validates(split):
        # One snapshot: the model every candidate is compared with brings the same 5-fold
        # out-of-fold predictions, whether its trials were cross-validated or (on a table too
        # large for that) judged on the validation rows.
        model = refit_xgboost_cross_fitted(
            split, spec, params_of(chosen.params),
            num_boost_round=int(chosen.user_attrs["num_boost_round"]),
            folds=CV_FOLDS, nthread=nthread, seed=settings.seed,
        )
    else:
        model = train_xgboost(
            split, spec, params_of(chosen.params),
            max_rounds=settings.max_rounds,
            early_stopping_rounds=settings.early_stopping_rounds,
            nthread=nthread,
            seed=settings.seed,
        )
    model.params["tuning_strategy"] = strategy
    model.params["optuna_study"] = study_name
    selection = settings.selection if strategy == CROSS_VALIDATION else BEST
    model.params["optuna_best_trial"] = study.best_trial.number
    model.params["optuna_chosen_trial"] = chosen.number
    model.params["trial_selection"] = selection
    return TuningResult(
        model=model,
        chosen_params=dict(chosen.params),
        chosen_value=float(chosen.value),
        chosen_trial=chosen.number,
        best_value=float(study.best_value),
        best_trial=study.best_trial.number,
        selection=selection,
        study_name=study_name,
        storage_url=storage_url,
        trials=trial_rows(study),
        strategy=strategy,
        stopped_by_time_cap=len(finished_now) < settings.n_trials,
    )


def _holdout_objective(split: Split, spec: FeatureSpec, settings: TuningSettings, nthread: int, pruning):
    # Built once: every trial trains on the same seeded sample and is judged on the same
    # validation rows (rebuilding them, categoricals and all, cost about a second a trial).
    # XGBoost keeps a matrix's histogram bins with it, so later trials reuse those too.
    dtrain, dvalid = xgboost_matrices(split, spec, nthread, settings.tuning_rows, settings.seed)

    def objective(trial: optuna.Trial) -> float:
        # Only the AUC: early stopping and pruning read the last metric, and the validation
        # log loss of each round was computed for nothing.
        _, recorded = fit_booster(
            dtrain, dvalid, search_space(trial),
            max_rounds=settings.max_rounds,
            early_stopping_rounds=settings.early_stopping_rounds,
            nthread=nthread,
            seed=settings.seed,
            callbacks=[pruning(trial, "valid-auc")],
            eval_metric=["auc"],
        )
        trial.set_user_attr("num_boost_round", recorded["num_boost_round"])
        return recorded["best_valid_auc"]

    return objective


def _cross_validation_objective(split: Split, spec: FeatureSpec, settings: TuningSettings, nthread: int,
                                pruning):
    import xgboost as xgb

    pool = train_and_valid(split)
    labels = pool[spec.roles.label_column].to_numpy()
    # Built once: every trial slices the same matrix with the same folds.
    dpool = xgboost_matrix(pool, spec, nthread)
    folds = stratified_folds(labels, settings.cv_folds, settings.seed)
    base = base_xgboost_params(labels, nthread, settings.seed)

    def objective(trial: optuna.Trial) -> float:
        history = xgb.cv(
            # Only the AUC the trial is judged, stopped and pruned by.
            {**base, **search_space(trial), "eval_metric": ["auc"]}, dpool,
            num_boost_round=settings.max_rounds,
            folds=folds,
            early_stopping_rounds=settings.early_stopping_rounds,
            callbacks=[pruning(trial, "test-auc")],
            seed=settings.seed,
            as_pandas=False,
            verbose_eval=False,
        )
        # Early stopping cuts the history at the best round.
        mean_auc = history["test-auc-mean"]
        trial.set_user_attr("num_boost_round", len(mean_auc))
        trial.set_user_attr("auc_std", float(history["test-auc-std"][-1]))
        return float(mean_auc[-1])

    return objective


class TunedXGBoostCandidate(Candidate):
    algorithm = XGBOOST
    asset = "tuned_xgboost"
    kinds = frozenset({"xgboost", "optuna"})
    description = "XGBoost tuned by an Optuna study (seeded TPE, pruning, early stopping)."
    model_file = "model.ubj"
    exact_explanations = True
    # XGBoost works in float32; its categorical splits read category codes.
    matrix_dtype = "float32"

    def fit(self, split: Split, spec: FeatureSpec, params: CandidateParams, context: FitContext) -> ChurnModel:
        storage = storage_url_for(context.study_dir) if context.study_dir else None
        result = tune_xgboost(split, spec, context.tuning, training_data_version=context.training_data_version,
                              storage_url=storage)
        # The report is saved with the model, so it holds nothing that differs between two runs
        # of the same study (no durations, no paths).
        result.model.report = {
            "study_name": result.study_name, "n_trials": context.tuning.n_trials,
            "stopped_by_time_cap": result.stopped_by_time_cap,
            "chosen_params": result.chosen_params, "chosen_trial": result.chosen_trial,
            "chosen_value": result.chosen_value, "best_trial": result.best_trial,
            "best_value": result.best_value, "trial_selection": result.selection, "trials": result.trials,
        }
        if result.stopped_by_time_cap:
            import warnings

            warnings.warn(f"tuned_xgboost: the Optuna study hit the time cap (timeout_s={context.tuning.timeout_s}) "
                          f"after {len(result.trials)} of {context.tuning.n_trials} trials", stacklevel=1)
        return result.model

    def metadata(self, model: ChurnModel) -> dict[str, Any]:
        return study_metadata(model.report) if model.report else {}

    def predict_raw(self, model: ChurnModel, frame: pd.DataFrame) -> np.ndarray:
        import xgboost as xgb

        matrix = xgb.DMatrix(model.features(frame), enable_categorical=True, nthread=model.params.get("nthread", 2))
        return model.estimator.predict(matrix)

    def predict_matrix(self, model: ChurnModel, matrix: np.ndarray) -> np.ndarray:
        # No DMatrix: the booster reads the float32 array in place (categoricals as codes).
        native = self._native(model)
        if native is None:
            return model.estimator.inplace_predict(matrix)
        return native.value(self._float32(matrix))

    def use_threads(self, model: ChurnModel, threads: int) -> None:
        model.estimator.set_param({"nthread": threads})

    def margin_matrix(self, model: ChurnModel, matrix: np.ndarray) -> np.ndarray:
        # Through a DMatrix, as the frame path's margin (booster_margin) and matrix_contributions
        # compute it: inplace_predict can differ from it in the last float32 bit.
        import numpy as np

        matrix, threads, native = self._float32(matrix), self._threads(model), self._native(model)
        if native is not None:
            return np.asarray(native.margin(matrix, threads), dtype=np.float64)
        return np.asarray(model.estimator.predict(self._dmatrix(model, matrix, threads), validate_features=False,
                                                  output_margin=True), dtype=np.float64)

    def save(self, model: ChurnModel, folder: Path) -> str:
        model.estimator.save_model(str(folder / self.model_file))
        return self.model_file

    def load(self, path: Path, manifest: dict, spec: FeatureSpec) -> Any:
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(str(path))
        return booster

    def margin(self, model: ChurnModel, frame: pd.DataFrame) -> np.ndarray:
        from churn_assets.training.explain import booster_margin

        return booster_margin(model.estimator, model.features(frame))

    def contributions(self, model: ChurnModel, features: pd.DataFrame, approximate: bool = False):
        from churn_assets.training.explain import booster_margin, xgboost_contributions

        return (xgboost_contributions(model.estimator, features, approximate=approximate),
                booster_margin(model.estimator, features))

    def matrix_contributions(self, model: ChurnModel, matrix: np.ndarray):
        # One DMatrix for both, the margin computed as margin_matrix does: a row's score must not
        # depend on whether its reasons were asked for.
        import numpy as np

        matrix, threads, native = self._float32(matrix), self._threads(model), self._native(model)
        if native is not None:
            raw, margin = native.contributions_and_margin(matrix, threads)
        else:
            data = self._dmatrix(model, matrix, threads)
            raw = model.estimator.predict(data, validate_features=False, pred_contribs=True)
            margin = model.estimator.predict(data, validate_features=False, output_margin=True)
        return self._contributions_of(model, raw), np.asarray(margin, dtype=np.float64)

    def explain_matrix(self, model: ChurnModel, matrix: np.ndarray):
        # Contributions and probabilities from one DMatrix (a served row's cost is mostly
        # building inputs: a DMatrix, or inplace_predict's own). The DMatrix probabilities are
        # inplace_predict's to the bit, as the frame path's are (test_scoring_matrix).
        native = self._native(model)
        if native is None:
            return super().explain_matrix(model, matrix)
        raw, value = native.contributions_and_value(self._float32(matrix), self._threads(model))
        return self._contributions_of(model, raw), value

    @staticmethod
    def _contributions_of(model: ChurnModel, raw: np.ndarray):
        import numpy as np

        from churn_assets.training.explain import NATIVE_METHOD, Contributions

        raw = np.asarray(raw, dtype=np.float64)
        return Contributions(values=raw[:, :-1], base_values=raw[:, -1],
                             feature_names=list(model.feature_spec.roles.features), method=NATIVE_METHOD)

    @staticmethod
    def _feature_types(model: ChurnModel) -> list[str]:
        # The types the booster was trained with (pandas categoricals, then numbers), in its
        # column order; no names: the booster's would be read back from C on every call.
        spec = model.feature_spec
        return ["c"] * len(spec.roles.categorical) + ["q"] * len(spec.roles.numeric)

    def _dmatrix(self, model: ChurnModel, matrix: np.ndarray, threads: int):
        import xgboost as xgb

        return xgb.DMatrix(matrix, feature_types=self._feature_types(model), enable_categorical=True, nthread=threads)

    @staticmethod
    def _threads(model: ChurnModel) -> int:
        return model.predict_threads or model.params.get("nthread", 0)

    @staticmethod
    def _float32(matrix: np.ndarray) -> np.ndarray:
        import numpy as np

        return np.ascontiguousarray(matrix, dtype=np.float32)

    def _native(self, model: ChurnModel):
        from churn_assets.training.candidates.xgboost_native import native_predictor

        # Called on every prediction: the types are built only for the first.
        return native_predictor(model.estimator, lambda: self._feature_types(model))

    def explanation_method(self, model: ChurnModel, approximate: bool = False) -> str:
        return "saabas" if approximate else "tree_shap"


CANDIDATE = TunedXGBoostCandidate()
