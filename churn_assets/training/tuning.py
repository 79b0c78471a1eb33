"""Optuna tuning of the XGBoost candidate.

A seeded TPE sampler proposes parameters and a percentile pruner stops trials whose AUC falls
behind most earlier trials at the same boosting round (optuna-integration's XGBoost callback
reports it every round). The study lives in a SQLite file under ``$CHURN_HOME`` so an
interrupted study resumes where it stopped and ``optuna-dashboard sqlite:///...`` can open it.

Two ways to score a trial, both on train + valid only (the test split is never looked at):

- ``cross_validation`` for small random splits (e.g. the one-month Telco file): each trial is
  a stratified K-fold ``xgb.cv`` over train + valid with early stopping on the mean held-out
  AUC. One 15% validation split of a few thousand rows is too noisy to pick among 25 trials
  (the winner is partly the luckiest); the K-fold mean is not. Of the trials whose mean is
  within one standard error of the best (``selection="one_standard_error"``), the best of the
  shallowest is refitted on all of train + valid for its cross-validated number of rounds,
  and calibrated on cross-fitted out-of-fold predictions (``refit_xgboost_cross_fitted``).
  Differences smaller than the fold-to-fold spread are noise, and among models that tie,
  the simpler one generalises more reliably.
- ``holdout`` for out-of-time splits and large tables: each trial trains on (a sample of) the
  older months with early stopping on the validation month, the best parameters are refitted
  on the whole training split and calibrated on the validation month. Folds would mix months
  there and cost K times more on the demo's ~400k rows.

The study name is derived from the training data version and the settings, so the same
data and configuration find their finished study again and rebuild the same model, while
new data or new settings start a fresh study.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field



if TYPE_CHECKING:
    import optuna

    from churn_assets.training.model import ChurnModel

    from churn_assets.training.split import Split

STUDY_PREFIX = "tuned_xgboost"
CROSS_VALIDATION = "cross_validation"
HOLDOUT = "holdout"
ONE_STANDARD_ERROR = "one_standard_error"
BEST = "best"
# Categoricals with fewer levels than this get one-vs-rest splits ("one_hot"); the
# alternative is XGBoost's native partition splits, which overfit easily on small data.
ONE_HOT_MAX_LEVELS = 64


@dataclass(frozen=True)
class TuningSettings:
    n_trials: int = 25
    # A safety cap on one tuning run, not the budget: n_trials decides which model is trained,
    # so the same data and settings give the same model on any machine. A run that hits the cap
    # says so (and the next run resumes the study until n_trials have finished).
    timeout_s: float | None = 600.0
    max_rounds: int = 1500
    early_stopping_rounds: int = 50
    # Trials train on at most this many (seeded, randomly chosen) training rows; the final
    # model is refitted on all of them.
    tuning_rows: int | None = 50_000
    nthread: int = 2
    seed: int = 42
    pruner_startup_trials: int = 5
    pruner_percentile: float = 75.0
    # Small learning rates start slower; judging trials this early would prune them unfairly.
    pruner_warmup_rounds: int = 30
    # Three folds, not five: a trial costs 60% as much, and under the one-standard-error rule
    # the choice among near-tied trials rests on simplicity more than on the exact means.
    cv_folds: int = 3
    # Random splits with at most this many train + valid rows are tuned by K-fold CV.
    cv_max_rows: int = 20_000
    # Below this many rows a second thread costs more in synchronisation than it saves,
    # and on a shared machine it makes timings erratic.
    single_thread_below_rows: int = 20_000
    # Which finished trial to refit: the best of the shallowest within one standard error of
    # the best cross-validated AUC, or simply the best. Holdout studies have no fold spread: best.
    selection: str = ONE_STANDARD_ERROR

    def __post_init__(self):
        if self.selection not in (ONE_STANDARD_ERROR, BEST):
            raise ValueError(f"Unknown trial selection {self.selection!r}: use {ONE_STANDARD_ERROR!r} or {BEST!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def fingerprint(self) -> str:
        # The budgets say how far to take the study, not what a trial means: raising them
        # resumes the same study instead of starting over.
        # Likewise the selection rule only reads finished trials.
        stable = {k: v for k, v in self.to_dict().items() if k not in ("timeout_s", "n_trials", "selection")}
        return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:10]


class TuningPolicy(dg.ConfigurableResource):
    """The tuning budget and trial selection of the tuned boosters (defaults: ``TuningSettings``)."""

    n_trials: int = Field(default=TuningSettings.n_trials, description="Trial budget of the Optuna study.")
    timeout_s: float | None = Field(default=TuningSettings.timeout_s,
                                    description="Time budget of one tuning run, seconds (a safety cap).")
    max_rounds: int = Field(default=TuningSettings.max_rounds, description="Boosting rounds per trial at most.")
    early_stopping_rounds: int = Field(default=TuningSettings.early_stopping_rounds,
                                       description="Rounds without validation AUC gain before a trial stops.")
    tuning_rows: int | None = Field(default=TuningSettings.tuning_rows,
                                    description="Training rows each trial sees at most.")
    nthread: int = Field(default=TuningSettings.nthread, description="XGBoost threads (1 below 20k rows).")
    cv_folds: int = Field(default=TuningSettings.cv_folds,
                          description="Folds per trial when a small random split is tuned by CV.")
    selection: str = Field(
        default=TuningSettings.selection,
        description=f"Trial to refit after a CV study: {ONE_STANDARD_ERROR!r} (the best of the shallowest "
                    f"trials within one SE of the best) or {BEST!r}.",
    )
    persist_study: bool = Field(default=True, description="Keep the study in $CHURN_HOME/artifacts/optuna.")

    def settings(self, seed: int) -> TuningSettings:
        values = self.model_dump(exclude={"persist_study"})
        return TuningSettings(**values, seed=seed)


@dataclass
class TuningResult:
    model: ChurnModel
    # The refitted trial's parameters and objective value; with the one-standard-error rule
    # it may be a simpler trial than the study's best.
    chosen_params: dict
    chosen_value: float
    chosen_trial: int
    best_value: float
    best_trial: int
    selection: str
    study_name: str
    storage_url: str | None
    trials: list[dict] = field(default_factory=list)
    stopped_by_time_cap: bool = False
    strategy: str = HOLDOUT

    @property
    def counts(self) -> dict[str, int]:
        return trial_counts(self.trials)


def trial_counts(trials: list[dict]) -> dict[str, int]:
    """How many trials ended in each state (COMPLETE, PRUNED, ...)."""
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial["state"]] = counts.get(trial["state"], 0) + 1
    return counts


def search_space(trial: optuna.Trial) -> dict[str, Any]:
    """XGBoost parameters for a trial; ``optuna.trial.FixedTrial(best.params)`` replays one."""
    categorical_splits = trial.suggest_categorical("categorical_splits", ["one_hot", "partition"])
    return {
        "eta": trial.suggest_float("eta", 0.01, 0.2, log=True),
        "max_depth": trial.suggest_int("max_depth", 1, 4),
        "min_child_weight": trial.suggest_float("min_child_weight", 1.0, 50.0, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.3, 1.0),
        "lambda": trial.suggest_float("lambda", 1e-2, 50.0, log=True),
        "alpha": trial.suggest_float("alpha", 1e-3, 10.0, log=True),
        "gamma": trial.suggest_float("gamma", 0.0, 5.0),
        "max_cat_to_onehot": ONE_HOT_MAX_LEVELS if categorical_splits == "one_hot" else 4,
    }


def params_of(trial_params: dict[str, Any]) -> dict[str, Any]:
    """The XGBoost parameters a finished trial's recorded choices stand for."""
    import optuna

    return search_space(optuna.trial.FixedTrial(dict(trial_params)))


def tuning_strategy(split: Split, settings: TuningSettings) -> str:
    rows = len(split.train) + len(split.valid)
    if split.strategy != "out_of_time" and settings.cv_folds >= 2 and rows <= settings.cv_max_rows:
        return CROSS_VALIDATION
    return HOLDOUT


def threads_for(split: Split, settings: TuningSettings) -> int:
    rows = len(split.train) + len(split.valid)
    return 1 if rows < settings.single_thread_below_rows else settings.nthread


def storage_url_for(directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(directory / 'optuna.db').resolve()}"


def study_name_for(training_data_version: str, settings: TuningSettings) -> str:
    return f"{STUDY_PREFIX}-{training_data_version[:12]}-{settings.fingerprint()}"


def trial_rows(study: optuna.Study) -> list[dict]:
    rows = []
    for trial in study.trials:
        # No durations: the rows are part of the model's files, and so of its version.
        rows.append({
            "number": trial.number,
            "state": trial.state.name,
            "value": trial.value,
            "last_round": max(trial.intermediate_values) if trial.intermediate_values else None,
            "params": trial.params,
        })
    return rows


def select_trial(completed: list[optuna.trial.FrozenTrial], strategy: str,
                 settings: TuningSettings) -> optuna.trial.FrozenTrial:
    """The trial to refit: the best, or under the one-standard-error rule the best of the
    shallowest trials whose mean CV AUC is within one standard error (fold std / sqrt(folds))
    of the best. Depth is the complexity that matters: it bounds the order of feature
    interactions; fewer rounds at a higher learning rate are not simpler."""
    import math

    best = max(completed, key=lambda t: (t.value, -t.number))
    if strategy != CROSS_VALIDATION or settings.selection == BEST:
        return best
    standard_error = best.user_attrs.get("auc_std", 0.0) / math.sqrt(settings.cv_folds)
    tied = [t for t in completed if t.value >= best.value - standard_error]
    return min(tied, key=lambda t: (params_of(t.params)["max_depth"], -t.value, t.number))


# -- what the tuned asset shows -----------------------------------------------------------


def study_metadata(report: dict) -> dict[str, Any]:
    """Dagster metadata of a tuning study recorded in a model's report."""
    from churn_assets.core.metadata import markdown_table

    trial_columns = ["number", "state", "value", "last_round", "params"]
    trials = report.get("trials", [])
    metadata: dict[str, Any] = {
        "chosen_params": dg.MetadataValue.json(report["chosen_params"]),
        "chosen_trial": dg.MetadataValue.int(report["chosen_trial"]),
        "chosen_trial_auc": dg.MetadataValue.float(report["chosen_value"]),
        "best_trial_auc_in_study": dg.MetadataValue.float(report["best_value"]),
        "trial_selection": dg.MetadataValue.text(
            f"{report['trial_selection']}: trial {report['chosen_trial']} refitted "
            f"(study best: trial {report['best_trial']})"),
        "trials": dg.MetadataValue.json(trial_counts(trials)),
        "tuning_history": dg.MetadataValue.md(markdown_table(trial_columns, trials)),
        "study_name": report["study_name"],
        "time_cap": dg.MetadataValue.text(
            f"hit: the study stopped at timeout_s with {len(trials)} of {report['n_trials']} trials; the model "
            "depends on machine speed until a later run finishes the study" if report.get("stopped_by_time_cap")
            else f"not reached: all {report.get('n_trials', len(trials))} trials ran"),
    }
    plot = history_plot(trials)
    if plot:
        metadata["optimisation_history"] = dg.MetadataValue.md(plot)
    return metadata


def history_plot(trials: list[dict]) -> str | None:
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
