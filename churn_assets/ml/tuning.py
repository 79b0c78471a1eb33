"""Optuna tuning of the XGBoost candidate.

A seeded TPE sampler proposes parameters, each trial trains with early stopping on the
validation split, and a median pruner stops trials whose validation AUC falls behind
earlier trials at the same boosting round (optuna-integration's XGBoost callback reports
it every round). The study lives in a SQLite file under ``$CHURN_HOME`` so an interrupted
study resumes where it stopped and ``optuna-dashboard sqlite:///...`` can open it.

The study name is derived from the training data version and the settings, so the same
data and configuration find their finished study again and rebuild the same model, while
new data or new settings start a fresh study.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churn_assets.ml.candidates import ChurnModel, train_xgboost

if TYPE_CHECKING:
    import optuna

    from churn_assets.ml.columns import FeatureSpec
    from churn_assets.ml.split import Split

STUDY_PREFIX = "tuned_xgboost"


@dataclass(frozen=True)
class TuningSettings:
    n_trials: int = 25
    # Wall-clock budget for one tuning run; trials stop starting once it is spent.
    timeout_s: float | None = 45.0
    max_rounds: int = 1500
    early_stopping_rounds: int = 50
    # Trials train on at most this many (seeded, randomly chosen) training rows; the final
    # model is refitted on all of them.
    tuning_rows: int | None = 100_000
    nthread: int = 2
    seed: int = 42
    pruner_startup_trials: int = 5
    pruner_warmup_rounds: int = 10

    def to_dict(self) -> dict:
        return asdict(self)

    def fingerprint(self) -> str:
        # The budgets say how far to take the study, not what a trial means: raising them
        # resumes the same study instead of starting over.
        stable = {k: v for k, v in self.to_dict().items() if k not in ("timeout_s", "n_trials")}
        return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:10]


@dataclass
class TuningResult:
    model: ChurnModel
    best_params: dict
    best_value: float
    study_name: str
    storage_url: str | None
    trials: list[dict] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for trial in self.trials:
            counts[trial["state"]] = counts.get(trial["state"], 0) + 1
        return counts


def search_space(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "eta": trial.suggest_float("eta", 0.01, 0.2, log=True),
        "max_depth": trial.suggest_int("max_depth", 1, 4),
        "min_child_weight": trial.suggest_float("min_child_weight", 1.0, 50.0, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
        "lambda": trial.suggest_float("lambda", 1e-3, 20.0, log=True),
        "alpha": trial.suggest_float("alpha", 1e-3, 10.0, log=True),
        "gamma": trial.suggest_float("gamma", 0.0, 5.0),
    }


def storage_url_for(directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(directory / 'optuna.db').resolve()}"


def study_name_for(training_data_version: str, settings: TuningSettings) -> str:
    return f"{STUDY_PREFIX}-{training_data_version[:12]}-{settings.fingerprint()}"


def _trial_rows(study: optuna.Study) -> list[dict]:
    rows = []
    for trial in study.trials:
        duration = trial.duration.total_seconds() if trial.duration else None
        rows.append({
            "number": trial.number,
            "state": trial.state.name,
            "value": trial.value,
            "last_round": max(trial.intermediate_values) if trial.intermediate_values else None,
            "duration_s": round(duration, 3) if duration is not None else None,
            "params": trial.params,
        })
    return rows


def tune_xgboost(
    split: Split,
    spec: FeatureSpec,
    settings: TuningSettings,
    *,
    training_data_version: str,
    storage_url: str | None = None,
) -> TuningResult:
    """Run (or resume) the study, then refit the best parameters on the whole training split.

    ``storage_url=None`` keeps the study in memory (tests, benchmarks).
    """
    import optuna
    from optuna_integration import XGBoostPruningCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    study_name = study_name_for(training_data_version, settings)
    study = optuna.create_study(
        study_name=study_name,
        storage=storage_url,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=settings.seed),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=settings.pruner_startup_trials,
            n_warmup_steps=settings.pruner_warmup_rounds,
        ),
        load_if_exists=True,
    )
    from optuna.trial import TrialState

    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    remaining = settings.n_trials - len(finished)

    def objective(trial: optuna.Trial) -> float:
        params = search_space(trial)
        model = train_xgboost(
            split, spec, params,
            max_rounds=settings.max_rounds,
            early_stopping_rounds=settings.early_stopping_rounds,
            nthread=settings.nthread,
            seed=settings.seed,
            train_rows=settings.tuning_rows,
            callbacks=[XGBoostPruningCallback(trial, "valid-auc")],
            calibrate_on_valid=False,
        )
        trial.set_user_attr("num_boost_round", model.params["num_boost_round"])
        return model.params["best_valid_auc"]

    if remaining > 0:
        study.optimize(objective, n_trials=remaining, timeout=settings.timeout_s, gc_after_trial=False)
    completed = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if not completed:
        raise RuntimeError(
            f"Optuna study {study_name} finished no trial within {settings.timeout_s}s; "
            "raise timeout_s or lower max_rounds"
        )
    best = study.best_trial
    model = train_xgboost(
        split, spec, dict(best.params),
        max_rounds=settings.max_rounds,
        early_stopping_rounds=settings.early_stopping_rounds,
        nthread=settings.nthread,
        seed=settings.seed,
    )
    model.params["optuna_study"] = study_name
    model.params["optuna_best_trial"] = best.number
    return TuningResult(
        model=model,
        best_params=dict(best.params),
        best_value=float(best.value),
        study_name=study_name,
        storage_url=storage_url,
        trials=_trial_rows(study),
    )
