"""Optuna tuning vs an 81-combination GridSearchCV, in one run on the same data and split.

The plain approach: an sklearn Pipeline (one-hot categoricals, median-imputed numerics,
XGBClassifier) searched by GridSearchCV over 3 x 3 x 3 x 3 = 81 combinations with 5-fold
CV on the training rows, refitted on them. This project's approach: the Optuna study of
``ml/tuned_xgboost`` with its default trial budget (seeded TPE, pruning, early stopping;
on a small random split each trial is a 3-fold CV over train + valid, and the simplest trial
within one standard error of the best is refitted there with cross-fitted calibration). Both
see only train + valid, use the same XGBoost thread count, and are scored once on the same
test rows. One split's test AUC is noisy (on Telco's 1,056 test rows its standard error is
~0.016), so ``--split-seeds`` repeats the whole comparison on several seeded splits. Wall time and CPU time
(``resource.getrusage``, less sensitive to other load on a shared machine) are reported for
both. The script also reports the baselines and 5-fold cross-validated ROC-AUC of logistic
regression and of the tuned XGBoost parameters over all labelled rows.

    uv run python benchmarks/bench_tuning.py                       # Telco CSV, built here
    uv run python benchmarks/bench_tuning.py --churn-home /tmp/t   # an ingested warehouse
    uv run python benchmarks/bench_tuning.py --quick               # small grid smoke run
    uv run python benchmarks/bench_tuning.py --churn-home /tmp/t --split-seeds 42,0,1,2,3
        # the whole comparison on several seeded splits, with means and paired differences

Writes the figures as JSON to ``--output`` (default benchmarks/results/bench_tuning.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CSV = Path("/work/shared/datasets/telco_customer_churn.csv")
GRID = {
    "model__max_depth": [3, 5, 7],
    "model__learning_rate": [0.03, 0.1, 0.3],
    "model__n_estimators": [100, 300, 500],
    "model__subsample": [0.7, 0.85, 1.0],
}
QUICK_GRID = {"model__max_depth": [3, 5], "model__learning_rate": [0.1], "model__n_estimators": [100]}


def load_frame(args):
    if args.churn_home:
        os.environ["CHURN_HOME"] = str(args.churn_home)
        from churn_assets.training.train import read_training_set
        from churn_assets.core.warehouse import Warehouse

        with Warehouse().read() as con:
            frame, types = read_training_set(con)
        return frame, types, f"features.training_set in {args.churn_home}"
    from churn_assets.training.columns import duckdb_types_of_frame
    from churn_assets.training.sample_data import telco_training_frame

    frame = telco_training_frame(args.csv)
    return frame, duckdb_types_of_frame(frame), str(args.csv)


def cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def grid_search(split, spec, grid, n_jobs, nthread, seed):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder
    from xgboost import XGBClassifier

    from churn_assets.training.candidates.sklearn_common import sklearn_input
    from churn_assets.training.model import train_and_valid
    from churn_assets.training.columns import feature_frame

    label = spec.roles.label_column
    pipeline = Pipeline([
        ("prepare", ColumnTransformer([
            ("categorical", OneHotEncoder(handle_unknown="ignore"), list(spec.roles.categorical)),
            ("numeric", SimpleImputer(strategy="median"), list(spec.roles.numeric)),
        ])),
        ("model", XGBClassifier(tree_method="hist", n_jobs=nthread, random_state=seed, eval_metric="logloss")),
    ])
    search = GridSearchCV(pipeline, grid, scoring="roc_auc", n_jobs=n_jobs,
                          cv=StratifiedKFold(5, shuffle=True, random_state=seed), refit=True)
    # The grid may use train + valid too: it has no separate validation step.
    rows = train_and_valid(split)
    started, cpu_started = time.perf_counter(), cpu_seconds()
    search.fit(sklearn_input(feature_frame(rows, spec), spec), rows[label].to_numpy())
    wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    test_scores = search.predict_proba(sklearn_input(feature_frame(split.test, spec), spec))[:, 1]
    return {
        "combinations": len(search.cv_results_["params"]),
        "fits": len(search.cv_results_["params"]) * 5 + 1,
        "wall_s": round(wall, 2),
        # With n_jobs > 1 the loky workers stay alive, so their CPU time is not counted here.
        "cpu_s": round(cpu, 2) if n_jobs == 1 else None,
        "cv_auc": round(float(search.best_score_), 4),
        "test_auc": round(float(roc_auc_score(split.test[label], test_scores)), 4),
        "best_params": {k.removeprefix("model__"): v for k, v in search.best_params_.items()},
    }


def cross_validated_auc(frame, spec, tuned_params, seed):
    # Outer folds over all labelled rows; inside each, early stopping and calibration use a
    # 15% validation part of the fold's training rows, as a holdout-tuned model would.
    """5-fold stratified CV ROC-AUC over all labelled rows: LR and the tuned XGBoost settings."""
    import numpy as np

    from churn_assets.training.candidates.logistic_regression import train_logistic_regression
    from churn_assets.training.candidates.tuned_xgboost import train_xgboost
    from churn_assets.training.model import evaluate
    from churn_assets.training.split import Split, SplitSettings, labelled_rows
    from sklearn.model_selection import StratifiedKFold

    labelled = labelled_rows(frame, spec.roles)
    label = spec.roles.label_column
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    scores = {"logistic_regression": [], "tuned_xgboost": []}
    rng = np.random.default_rng(seed)
    for rest, held_out in folds.split(labelled, labelled[label]):
        # Within each training fold, 15% is the validation part (early stopping, calibration).
        rest = rng.permutation(rest)
        cut = int(len(rest) * 0.15)
        fold = Split(train=labelled.iloc[rest[cut:]], valid=labelled.iloc[rest[:cut]],
                     test=labelled.iloc[held_out], strategy="cv", settings=SplitSettings(seed=seed),
                     description={})
        scores["logistic_regression"].append(evaluate(train_logistic_regression(fold, spec, seed=seed), fold)["test_auc"])
        xgb_model = train_xgboost(fold, spec, tuned_params, max_rounds=3000, early_stopping_rounds=50,
                                  nthread=1, seed=seed)
        scores["tuned_xgboost"].append(evaluate(xgb_model, fold)["test_auc"])
    return {name: {"mean": round(float(np.mean(v)), 4), "std": round(float(np.std(v)), 4),
                   "folds": [round(x, 4) for x in v]} for name, v in scores.items()}


def compare_on_split(frame, types, split_seed: int, args) -> dict:
    """Baselines, the Optuna study and the grid on one seeded split; scored on its test rows."""
    from churn_assets.training.candidates.logistic_regression import train_logistic_regression
    from churn_assets.training.candidates.random_forest import train_random_forest
    from churn_assets.training.model import evaluate
    from churn_assets.training.train import prepare
    from churn_assets.training.columns import RoleSettings
    from churn_assets.training.split import SplitSettings
    from churn_assets.training.candidates.tuned_xgboost import tune_xgboost
    from churn_assets.training.tuning import TuningSettings

    spec, split, data_version = prepare(frame, types, RoleSettings(), SplitSettings(seed=split_seed))
    print(f"split seed {split_seed}: {split.strategy} {len(split.train)}/{len(split.valid)}/{len(split.test)}",
          flush=True)
    baselines = {}
    for name, train in (("logistic_regression", train_logistic_regression), ("random_forest", train_random_forest)):
        started = time.perf_counter()
        model = train(split, spec, seed=args.seed)
        baselines[name] = {"test_auc": round(evaluate(model, split)["test_auc"], 4),
                           "wall_s": round(time.perf_counter() - started, 2)}
        print(f"{name}: {baselines[name]}", flush=True)

    defaults = TuningSettings(seed=args.seed)
    settings = TuningSettings(**{**defaults.to_dict(), "timeout_s": args.timeout_s,
                                 "n_trials": args.n_trials or defaults.n_trials,
                                 "nthread": args.nthread, "single_thread_below_rows": 0})
    started, cpu_started = time.perf_counter(), cpu_seconds()
    tuned = tune_xgboost(split, spec, settings, training_data_version=data_version, storage_url=None)
    tuned_wall, tuned_cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    tuned_metrics = evaluate(tuned.model, split)
    optuna_result = {
        "wall_s": round(tuned_wall, 2),
        "cpu_s": round(tuned_cpu, 2),
        "strategy": tuned.strategy,
        "trials": tuned.counts,
        "objective_auc": round(tuned.chosen_value, 4),
        "study_best_auc": round(tuned.best_value, 4),
        "selection": f"{tuned.selection}: trial {tuned.chosen_trial} (best {tuned.best_trial})",
        "cv_auc_train_valid": round(tuned.model.params["cv_auc"], 4) if "cv_auc" in tuned.model.params else None,
        "test_auc": round(tuned_metrics["test_auc"], 4),
        "test_logloss": round(tuned_metrics["test_logloss"], 4),
        "calibration": tuned.model.calibration["method"],
        "chosen_params": tuned.chosen_params,
        "settings": settings.to_dict(),
    }
    print(f"optuna: {optuna_result}", flush=True)

    grid = grid_search(split, spec, QUICK_GRID if args.quick else GRID, args.n_jobs, args.nthread, args.seed)
    print(f"grid: {grid}", flush=True)
    return {
        "split_seed": split_seed,
        "training_data_version": data_version,
        "split": split.description,
        "baselines": baselines,
        "optuna": optuna_result,
        "grid_search": grid,
        "time_ratio_optuna_over_grid": round(tuned_wall / grid["wall_s"], 3),
        "cpu_ratio_optuna_over_grid": round(tuned_cpu / grid["cpu_s"], 3) if grid["cpu_s"] else None,
        "optuna_reaches_grid_auc": optuna_result["test_auc"] >= grid["test_auc"],
        "spec": spec,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--churn-home", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=42, help="split seed (unless --split-seeds) and model seed")
    parser.add_argument("--split-seeds", default=None,
                        help="comma-separated split seeds, e.g. 42,0,1,2: the whole comparison on each seeded "
                             "split, then a summary (one split's test AUC has a standard error of ~0.016 on Telco)")
    parser.add_argument("--n-jobs", type=int, default=1,
                        help="GridSearchCV workers; 1 keeps the comparison like for like (and its CPU time countable)")
    parser.add_argument("--nthread", type=int, default=1, help="XGBoost threads, the same for both approaches")
    parser.add_argument("--quick", action="store_true", help="tiny grid, to check the script runs")
    parser.add_argument("--skip-cv", action="store_true")
    parser.add_argument("--n-trials", type=int, default=None, help="Optuna trial budget (default: the asset's)")
    parser.add_argument("--timeout-s", type=float, default=None,
                        help="Optuna time budget; default none, so a busy machine cannot cut trials short")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "bench_tuning.json")
    args = parser.parse_args()

    from churn_assets.training.tuning import params_of

    # Idle OpenMP threads spin by default, which on a shared 2-core machine steals CPU from
    # the other approach's (or another user's) work.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    frame, types, source = load_frame(args)
    print(f"data: {source}: {len(frame)} rows", flush=True)
    seeds = [int(s) for s in args.split_seeds.split(",") if s.strip()] if args.split_seeds else [args.seed]
    if len(set(seeds)) != len(seeds):
        parser.error(f"--split-seeds repeats a seed: {args.split_seeds}")
    splits = [compare_on_split(frame, types, seed, args) for seed in seeds]
    first = splits[0]
    spec = first.pop("spec")
    for other in splits[1:]:
        other.pop("spec")
    results = {
        "data": source,
        **first,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_end": os.getloadavg()},
        "nthread": args.nthread,
        "grid_n_jobs": args.n_jobs,
    }
    if len(splits) > 1:
        results["splits"] = splits
        results["summary_over_splits"] = summarise(splits)
    if not args.skip_cv:
        results["cv_5fold_auc"] = cross_validated_auc(frame, spec, params_of(first["optuna"]["chosen_params"]),
                                                      args.seed)
        print(f"5-fold CV: {results['cv_5fold_auc']}", flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print()
    print(markdown_table(results))
    if len(splits) > 1:
        print()
        print(splits_table(results))
    print(f"\nwrote {args.output}")


def summarise(splits: list[dict]) -> dict:
    """Means over the seeded splits and the paired Optuna - grid / Optuna - LR differences."""
    import numpy as np

    def column(get):
        return np.array([get(s) for s in splits], dtype=float)

    optuna = column(lambda s: s["optuna"]["test_auc"])
    grid = column(lambda s: s["grid_search"]["test_auc"])
    logistic = column(lambda s: s["baselines"]["logistic_regression"]["test_auc"])
    forest = column(lambda s: s["baselines"]["random_forest"]["test_auc"])

    def paired(difference):
        return {"mean": round(float(difference.mean()), 4),
                "standard_error": round(float(difference.std(ddof=1) / np.sqrt(len(difference))), 4),
                "wins": int((difference > 0).sum()), "ties": int((difference == 0).sum()),
                "losses": int((difference < 0).sum())}

    return {
        "splits": len(splits),
        "mean_test_auc": {"optuna": round(float(optuna.mean()), 4), "grid": round(float(grid.mean()), 4),
                          "logistic_regression": round(float(logistic.mean()), 4),
                          "random_forest": round(float(forest.mean()), 4)},
        "optuna_at_least_0_84": int((optuna >= 0.84).sum()),
        "logistic_regression_at_least_0_83": int((logistic >= 0.83).sum()),
        "optuna_minus_grid": paired(optuna - grid),
        "optuna_minus_logistic_regression": paired(optuna - logistic),
        "mean_time_ratio": round(float(column(lambda s: s["time_ratio_optuna_over_grid"]).mean()), 3),
        "max_time_ratio": round(float(column(lambda s: s["time_ratio_optuna_over_grid"]).max()), 3),
    }


def splits_table(results: dict) -> str:
    rows = [
        "| split seed | LR | RF | Optuna | grid | Optuna - grid | Optuna wall s | grid wall s | wall ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in results["splits"]:
        optuna, grid = s["optuna"], s["grid_search"]
        rows.append(
            f"| {s['split_seed']} | {s['baselines']['logistic_regression']['test_auc']} | "
            f"{s['baselines']['random_forest']['test_auc']} | {optuna['test_auc']} | {grid['test_auc']} | "
            f"{optuna['test_auc'] - grid['test_auc']:+.4f} | {optuna['wall_s']} | {grid['wall_s']} | "
            f"{s['time_ratio_optuna_over_grid']} |"
        )
    summary = results["summary_over_splits"]
    means = summary["mean_test_auc"]
    rows.append(f"| mean | {means['logistic_regression']} | {means['random_forest']} | {means['optuna']} | "
                f"{means['grid']} | {summary['optuna_minus_grid']['mean']:+.4f} | | | {summary['mean_time_ratio']} |")
    rows.append("")
    for name in ("optuna_minus_grid", "optuna_minus_logistic_regression"):
        d = summary[name]
        rows.append(f"{name}: mean {d['mean']:+.4f} (standard error {d['standard_error']}), "
                    f"{d['wins']} wins / {d['ties']} ties / {d['losses']} losses")
    rows.append(f"Optuna test AUC >= 0.84 on {summary['optuna_at_least_0_84']} of {summary['splits']} splits; "
                f"LR >= 0.83 on {summary['logistic_regression_at_least_0_83']}")
    return "\n".join(rows)


def markdown_table(results: dict) -> str:
    grid, tuned = results["grid_search"], results["optuna"]
    fits = f"{grid['combinations']} combinations x 5 folds + refit = {grid['fits']} fits"
    trials = ", ".join(f"{n} {state.lower()}" for state, n in sorted(tuned["trials"].items()))
    rows = [
        "| approach | search | wall s | CPU s | test ROC-AUC |",
        "|---|---|---:|---:|---:|",
        f"| GridSearchCV (one-hot + XGBClassifier) | {fits} | {grid['wall_s']} | {grid['cpu_s']} | {grid['test_auc']} |",
        f"| Optuna ({tuned['strategy']}) | {trials} | {tuned['wall_s']} | {tuned['cpu_s']} | {tuned['test_auc']} |",
    ]
    for name, figures in results["baselines"].items():
        rows.append(f"| {name} (baseline) | - | {figures['wall_s']} | - | {figures['test_auc']} |")
    rows.append("")
    rows.append(f"Optuna / grid: wall {results['time_ratio_optuna_over_grid']}, "
                f"CPU {results['cpu_ratio_optuna_over_grid']}; reaches the grid's test AUC: "
                f"{results['optuna_reaches_grid_auc']} (XGBoost nthread={results['nthread']}, "
                f"grid n_jobs={results['grid_n_jobs']})")
    if "cv_5fold_auc" in results:
        rows += ["", "| 5-fold CV over all labelled rows | mean | std | folds |", "|---|---:|---:|---|"]
        for name, cv in results["cv_5fold_auc"].items():
            rows.append(f"| {name} | {cv['mean']} | {cv['std']} | {cv['folds']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
